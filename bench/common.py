"""What the benchmark scripts share: how their JSON ends and where it goes, how calls are timed, and a
run's training time."""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


ROOT = Path(__file__).resolve().parents[1]
# Longest first: the interpreter lives under the home folder, the repository may too.
_MACHINE_PATHS = [(sys.executable, "python"), (f"{ROOT}/", ""), (str(ROOT), "."),
                  (f"{tempfile.gettempdir()}/", ""), (f"{Path.home()}/", "~/")]


def public(value: Any) -> Any:
    """``value`` (JSON-like) with this machine's paths taken out of its strings, for published results:
    the interpreter becomes ``python``, paths under the repository or the temporary folder relative
    paths, the home folder ``~``."""
    if isinstance(value, dict):
        return {key: public(item) for key, item in value.items()}
    if isinstance(value, list):
        return [public(item) for item in value]
    if isinstance(value, str):
        for path, name in _MACHINE_PATHS:
            value = value.replace(path, name)
    return value


def write_json(out: dict[str, Any], json_out: Path | None) -> None:
    """Print ``out`` as JSON, this machine's paths taken out, and with ``json_out`` write it there too."""
    text = json.dumps(public(out), indent=2)
    print(text)
    if json_out:
        json_out.write_text(text + "\n")


def cpu_model() -> str:
    """This machine's CPU as /proc/cpuinfo names it (with ``+AMX`` where it has AMX tiles), or what the
    platform module says elsewhere: latency and speed figures depend on it, and machines change."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), platform.machine())
    return model + (" +AMX" if " amx_tile" in info else "")


def emit(out: dict[str, Any], started: float, json_out: Path | None) -> None:
    """Add the wall time since ``started`` (perf_counter), the 1-minute load and the CPU to ``out``, then print and
    write it as :func:`write_json` does."""
    out["total_s"] = round(time.perf_counter() - started, 1)
    out["load_average_1min"] = round(os.getloadavg()[0], 2)
    out.setdefault("cpu", cpu_model())
    write_json(out, json_out)


def worst_latency(parts: list[dict[str, Any]], what: str) -> dict[str, Any]:
    """One latency entry for a row run in several parts (each a ``timing_summary``-like dict with ``median``
    and ``p99``): the largest median and p99 of the parts that have them, and the sum of their calls."""
    timed = [p for p in parts if p and p.get("median") is not None]
    if not timed:
        return {}
    return {"median": max(p["median"] for p in timed), "p99": max(p["p99"] for p in timed),
            **({"calls": sum(p["calls"] for p in timed)} if all("calls" in p for p in timed) else {}),
            "note": f"{what}, the larger of the parts' medians / p99s"}


def scored(task: str) -> bool:
    """Whether ``task``'s episodes have a score worth choosing and reporting beside success (Push-T's
    coverage; elsewhere the score is the success itself)."""
    return task == "pusht"


def best_row(rows: list[dict[str, Any]], task: str) -> dict[str, Any]:
    """The evaluation row (``success_rate``, ``mean_score``) a choice on ``task`` ranks first: the highest
    mean score, then success, where the task is :func:`scored`; else the highest success, then score.
    A missing figure counts as 0; ties go to the earliest row."""
    def figure(row: dict[str, Any], name: str) -> float:
        return row.get(name) or 0.0

    order = ("mean_score", "success_rate") if scored(task) else ("success_rate", "mean_score")
    return max(rows, key=lambda r: tuple(figure(r, name) for name in order))


def timed(fns: dict[str, Callable[[], Any]], calls: int, warmup: int = 5) -> dict[str, dict[str, float]]:
    """Median and p99 ms of each of ``fns`` over ``calls`` calls, interleaved (call i runs every function
    once, in an order rotated by i), so that load on the machine falls on all modes alike."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(calls):
        for name in names[i % len(names):] + names[: i % len(names)]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    out = {}
    for name, values in times.items():
        ms = np.array(values) * 1e3
        out[name] = {"median_ms": round(float(np.median(ms)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3), "calls": calls}
    return out


def train_times(run: Path, clock: str = "elapsed_s") -> dict[int, float]:
    """Training wall time (s; ``clock="cpu_s"``: the trainer's CPU time, where logged) at each logged
    step, summed over the segments of a resumed run."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("event") == "train" and clock in r]
    total, offset, last, out = 0.0, 0.0, 0.0, {}
    for r in rows:
        if r[clock] < last:  # a resumed segment starts its clock again
            offset = total
        last = r[clock]
        total = offset + last
        out[int(r["step"])] = total
    return out

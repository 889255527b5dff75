"""What the benchmark scripts share: how their JSON ends and where it goes, how calls are timed, and a
run's training time."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def emit(out: dict[str, Any], started: float, json_out: Path | None) -> None:
    """Add the wall time since ``started`` (perf_counter) and the 1-minute load to ``out``, print it
    as JSON on stdout and, with ``json_out``, write it there too."""
    out["total_s"] = round(time.perf_counter() - started, 1)
    out["load_average_1min"] = round(os.getloadavg()[0], 2)
    text = json.dumps(out, indent=2)
    print(text)
    if json_out:
        json_out.write_text(text + "\n")


def scored(task: str) -> bool:
    """Whether ``task``'s episodes have a score worth choosing and reporting beside success (Push-T's
    coverage; elsewhere the score is the success itself)."""
    return task == "pusht"


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

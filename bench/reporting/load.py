"""Loading the benchmark JSONs, success files and training curves into :class:`Results`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.reporting.spec import BENCHES, EXPECTED, METHODS, TASKS
from bench.reporting.text import finite, get
from dp.stats import wilson_interval


@dataclass
class SuccessRow:
    task: str
    method: str
    path: Path
    data: dict[str, Any]
    command: str | None

    @property
    def episodes(self) -> int:
        return int(self.data.get("episodes") or 0)

    @property
    def successes(self) -> int | None:
        k = self.data.get("successes")
        if k is None and finite(self.data.get("success_rate")):
            k = round(self.data["success_rate"] * self.episodes)
        return None if k is None else int(k)

    @property
    def rate(self) -> float | None:
        r = self.data.get("success_rate")
        if r is None and self.successes is not None and self.episodes:
            r = self.successes / self.episodes
        return r

    @property
    def ci95(self) -> list[float] | None:
        bounds = self.data.get("success_ci95")
        if bounds is None and self.successes is not None and self.episodes:
            bounds = list(wilson_interval(self.successes, self.episodes))
        return bounds

    @property
    def seeds(self) -> str:
        """Which seeds the row ran on: a split of `dp eval` (test: never used for a choice), or the
        seeds from before the split, which also chose settings such as the RTI defaults."""
        split = self.data.get("split")
        if split:
            return f"{split} ({self.episodes})"
        return f"before the split ({self.episodes})" if self.episodes else "—"

    def latency(self) -> str:
        # dp eval times every select_action call: the median is a queued action, the p99 a new chunk
        if finite(get(self.data, "latency_ms", "median")) and finite(get(self.data, "latency_ms", "p99")):
            return f"{self.data['latency_ms']['median']:.2f} / {self.data['latency_ms']['p99']:.1f} ms per step"
        if finite(get(self.data, "obs_to_command_ms", "median")):  # dp node: measured by the controller
            return f"{self.data['obs_to_command_ms']['median']:.2f} / {self.data['obs_to_command_ms']['p99']:.1f} ms obs→command"
        return "—"


@dataclass
class Results:
    root: Path
    benches: dict[str, dict] = field(default_factory=dict)
    success: list[SuccessRow] = field(default_factory=list)
    curves: dict[str, list[dict]] = field(default_factory=dict)
    quickstart: dict | None = None
    errors: dict[str, str] = field(default_factory=dict)  # file -> why it was not read

    def bench(self, name: str) -> dict | None:
        return self.benches.get(name)


def _read_json(path: Path, results: Results) -> Any:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        results.errors[str(path)] = f"{type(exc).__name__}: {exc}"
        return None
    if not isinstance(data, dict):
        results.errors[str(path)] = "not a JSON object"
        return None
    return data


def split_name(stem: str, data: dict) -> tuple[str, str]:
    if "__" in stem:
        task, method = stem.split("__", 1)
        return task, method
    return str(data.get("task") or stem), stem


def order(task: str, method: str) -> tuple:
    tasks = [t for t, _ in EXPECTED] + list(TASKS)
    t = tasks.index(task) if task in tasks else len(tasks)
    m = list(METHODS).index(method) if method in METHODS else len(METHODS)
    return (t, task, m, method)


def load(root: Path) -> Results:
    results = Results(root)
    for name in BENCHES:
        path = root / f"{name}.json"
        if path.is_file() and (data := _read_json(path, results)) is not None:
            results.benches[name] = data
    for path in sorted((root / "success").glob("*.json")):
        data = _read_json(path, results)
        if data is None:
            continue
        if "episodes" not in data and isinstance(data.get("success"), dict):  # bench/deploy.py's JSON
            data = {**data["success"], "obs_to_command_ms": data.get("obs_to_command_ms"), "policy": data.get("policy")}
        task, method = split_name(path.stem, data)
        cmd = path.with_suffix(".cmd")
        command = cmd.read_text().strip() if cmd.is_file() else None
        results.success.append(SuccessRow(task, method, path, data, command))
    results.success.sort(key=lambda r: order(r.task, r.method))
    for path in sorted((root / "curves").glob("*.jsonl")):
        rows = []
        for line in path.read_text().splitlines():  # a line cut short by a kill is skipped, as read_metrics does
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        if rows:
            results.curves[path.stem] = rows
        else:
            results.errors[str(path)] = "no metrics records"
    qs = root / "quickstart.json"
    if qs.is_file():
        results.quickstart = _read_json(qs, results)
    return results

"""Build the results page `docs/results.md` (and its PNG plots in `docs/img/`) from the benchmark
JSONs kept under `bench/results/` (bench/results/README.md says which command writes which file).

    python bench/report.py                                   # docs/results.md + docs/img/results_*.png
    python bench/report.py --results bench/results --out docs/results.md
    python bench/report.py --headline                        # print only the headline success table

Inputs:
- `<bench>.json` for bench in data_throughput, import_throughput, train, latency, deploy, sim_collect:
  what `python bench/<bench>.py` prints;
- `success/<task>__<method>.json`: `dp eval ... --json-out FILE` or `dp node ... --json-out FILE`,
  with an optional sibling `<task>__<method>.cmd` holding the commands that produced it;
- `curves/<name>.jsonl`: a training run's metrics.jsonl;
- `quickstart.json`: the report.json of `dp quickstart`.

Every target is checked against the measured figure (met / not met); an input that is missing is
listed as "not measured yet", an unreadable one is named with its error. Needs only matplotlib.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dp.stats import wilson_interval

BENCHES = ("data_throughput", "import_throughput", "train", "latency", "deploy", "sim_collect", "pusht", "pusht_image", "image_train", "peers")
MISSING = "not measured yet"
MET, NOT_MET = "met", "**not met**"

# the sim tasks (dp.sim.tasks.TASKS; listed here so the report needs no simulator) and expert targets
TASKS = ("lift", "stack", "can", "door", "square")
EXPERT_TARGET = {"square": 0.70}
EXPERT_TARGET_DEFAULT = 0.90

METHODS = {
    "torch": "torch",
    "torch_rti": "torch + RTI",
    "onnx": "ONNX Runtime",
    "onnx_rti": "ONNX Runtime + RTI",
    "deploy": "deploy (`dp node`)",
    "mode": "MoDE",
    "dense": "dense twin",
    "expert": "scripted expert",
    "original": "trained on the original store",
    "imported": "trained on the exported + re-imported store",
}
# the headline rows the page expects; absent ones are listed as not measured yet
EXPECTED = (
    ("lift", "torch"), ("lift", "torch_rti"), ("lift", "onnx"), ("lift", "onnx_rti"), ("lift", "deploy"),
    ("lift_image", "torch"),
)
# issue 9: one language-conditioned policy on these tasks, files success/multitask_<task>__{mode,dense}.json
MULTITASK = ("lift", "can", "stack", "door")
MULTITASK_TARGET = 0.85
# issue 6: RTI and ONNX Runtime success within this many points of full torch sampling on these tasks
RUNTIME_TASKS, RUNTIME_POINTS = ("lift", "can"), 3.0
LATENCY_MODES = (
    ("eager_uncached", "torch eager, uncached"),
    ("cached", "torch, experts cached"),
    ("cached_rti", "torch cached + RTI"),
    ("onnx_full", "ONNX Runtime, full sampling"),
    ("onnx_rti", "ONNX Runtime + RTI"),
    ("onnx_first", "ONNX Runtime, first chunk (short sampler)"),
)
LATENCY_CASES = (("small_state", "state"), ("small_two_cameras_84", "two 84x84 cameras"))
HOW = {
    "data_throughput": "python bench/data_throughput.py > bench/results/data_throughput.json",
    "import_throughput": "python bench/import_throughput.py > bench/results/import_throughput.json",
    "train": "python bench/train.py --json-out bench/results/train.json",
    "latency": "python bench/latency.py > bench/results/latency.json",
    "deploy": "python bench/deploy.py --out bench/results/deploy.json",
    "sim_collect": "python bench/sim_collect.py > bench/results/sim_collect.json",
    "pusht": "python bench/pusht.py --src PUSHT_ZARR --work WORK --json-out bench/results/pusht.json",
    "pusht_image": "python bench/pusht.py --src PUSHT_ZARR --work WORK --preset pusht-image --skip-rti --json-out bench/results/pusht_image.json",
    "image_train": "python bench/image_train.py --json-out bench/results/image_train.json",
    "peers": "nice -n 10 python bench/peers/compare_lerobot.py --parts speed (then --parts train,eval)",
}


# ---------------------------------------------------------------------------------------- formatting


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


PROJECT = Path(__file__).resolve().parents[1]
_ABS_PATH = re.compile(r"(?<![\w.~-])/[\w.+-]+(?:/[\w.+-]+)*")


def shown(text: Any, base: str | None = None, base_name: str = "") -> str:
    """``text`` with this machine's paths made portable: a path inside the project relative to it, one
    inside ``base`` relative to ``base_name``, any other the last part of it (the run's name)."""
    def portable(match: re.Match) -> str:
        path = Path(match.group(0))
        for root, name in ((Path(base), base_name) if base else (None, ""), (PROJECT, "")):
            if root is not None and path.is_relative_to(root):
                return (Path(name) / path.relative_to(root)).as_posix() if name or path != root else "."
        return path.name or str(path)
    return _ABS_PATH.sub(portable, str(text))


def num(v: Any, digits: int = 2) -> str:
    """A number for a table: thousands separators for large values, '—' when absent."""
    if not _finite(v):
        return "—"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}f}"


def pct(v: Any) -> str:
    return f"{100 * v:.1f}%" if _finite(v) else "—"


def ci(bounds: Any) -> str:
    if not bounds or len(bounds) != 2 or not all(_finite(b) for b in bounds):
        return "—"
    return f"{100 * bounds[0]:.1f}–{100 * bounds[1]:.1f}%"


def big(v: Any) -> str:
    """Parameter / FLOP counts: 1.2M, 3.4G."""
    if not _finite(v):
        return "—"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.2f}{unit}"
    return str(v)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def get(d: Any, *keys: str) -> Any:
    """d[k1][k2]...; None where any level is absent."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


# ---------------------------------------------------------------------------------------- targets
@dataclass
class Targets:
    """Every target checked on the page: (section, metric, measured, target, verdict)."""

    rows: list[list[str]] = field(default_factory=list)

    def check(self, section: str, metric: str, value: Any, op: str, threshold: float, unit: str = "",
              fmt=num, available: bool = True) -> list[str]:
        """One target row (metric, measured, target, verdict), recorded for the overview."""
        if value is None or not available:
            measured, verdict = MISSING, MISSING
        elif not _finite(value):
            measured, verdict = "—", NOT_MET
        else:
            ok = value >= threshold if op == ">=" else value <= threshold
            measured, verdict = f"{fmt(value)}{unit}", MET if ok else NOT_MET
        row = [metric, measured, f"{op} {fmt(threshold)}{unit}".replace(">=", "≥").replace("<=", "≤"), verdict]
        self.rows.append([section, *row])
        return row


# ---------------------------------------------------------------------------------------- inputs
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
        if k is None and _finite(self.data.get("success_rate")):
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

    def latency(self) -> str:
        # dp eval times every select_action call: the median is a queued action, the p99 a new chunk
        if _finite(get(self.data, "latency_ms", "median")) and _finite(get(self.data, "latency_ms", "p99")):
            return f"{self.data['latency_ms']['median']:.2f} / {self.data['latency_ms']['p99']:.1f} ms per step"
        if _finite(get(self.data, "obs_to_command_ms", "median")):  # dp node: measured by the controller
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


def _split_name(stem: str, data: dict) -> tuple[str, str]:
    if "__" in stem:
        task, method = stem.split("__", 1)
        return task, method
    return str(data.get("task") or stem), stem


def _order(task: str, method: str) -> tuple:
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
        task, method = _split_name(path.stem, data)
        cmd = path.with_suffix(".cmd")
        command = cmd.read_text().strip() if cmd.is_file() else None
        results.success.append(SuccessRow(task, method, path, data, command))
    results.success.sort(key=lambda r: _order(r.task, r.method))
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


# ---------------------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    _plt().close(fig)
    return path


def plot_success(rows: list[SuccessRow], path: Path) -> Path | None:
    rows = [r for r in rows if _finite(r.rate)]
    if not rows:
        return None
    plt = _plt()
    tasks = list(dict.fromkeys(r.task for r in rows))
    methods = list(dict.fromkeys(r.method for r in sorted(rows, key=lambda r: _order("", r.method))))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(tasks) + 2), 3.8), dpi=100)
    for j, method in enumerate(methods):
        xs, ys, lo, hi, ns = [], [], [], [], []
        for i, task in enumerate(tasks):
            row = next((r for r in rows if r.task == task and r.method == method), None)
            if row is None:
                continue
            bounds = row.ci95 or [row.rate, row.rate]
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(100 * row.rate)
            lo.append(max(0.0, 100 * (row.rate - bounds[0])))
            hi.append(max(0.0, 100 * (bounds[1] - row.rate)))
            ns.append(row.episodes)
        bars = ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=METHODS.get(method, method).replace("`", ""))
        for bar, n in zip(bars, ns):
            ax.text(bar.get_x() + bar.get_width() / 2, 1.5, f"n={n}", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylim(0, 105)
    ax.set_ylabel("success rate (%), 95% CI")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(4, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return _save(fig, path)


def plot_latency(latency: dict, path: Path) -> Path | None:
    cases = [(key, label) for key, label in LATENCY_CASES if isinstance(latency.get(key), dict)]
    if not cases:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=100)
    width = 0.8 / len(cases)
    for j, (key, label) in enumerate(cases):
        xs, med, up = [], [], []
        for i, (mode, _) in enumerate(LATENCY_MODES):
            m, p = get(latency, key, mode, "median_ms"), get(latency, key, mode, "p99_ms")
            if _finite(m) and m > 0:
                xs.append(i - 0.4 + width * (j + 0.5))
                med.append(m)
                up.append(max(0.0, p - m) if _finite(p) else 0.0)
        ax.bar(xs, med, width, yerr=[[0] * len(up), up], capsize=3, label=f"{label} (median, bar to p99)")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.axhline(2.0, color="k", ls="--", lw=1, label="target: ONNX Runtime + RTI, state, median <= 2 ms")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(range(len(LATENCY_MODES)), [label.replace(", ", ",\n").replace(" + ", " +\n") for _, label in LATENCY_MODES], fontsize=8)
    ax.set_ylabel("ms per chunk (batch 1, log)")
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_curves(curves: dict[str, list[dict]], path: Path) -> Path | None:
    if not curves:
        return None
    plt = _plt()
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100, gridspec_kw={"width_ratios": [2, 1]})
    plotted = False
    for i, (name, rows) in enumerate(curves.items()):
        color = f"C{i % 10}"
        train = [(r["step"], r["loss"]) for r in rows if r.get("event") == "train" and _finite(r.get("loss"))]
        val = [(r["step"], r["val_loss"]) for r in rows if r.get("event") == "val" and _finite(r.get("val_loss"))]
        lr = [(r["step"], r["lr"]) for r in rows if r.get("event") == "train" and _finite(r.get("lr"))]
        if train:
            ax_loss.plot(*zip(*train), color=color, lw=1, label=f"{name} train")
        if val:
            ax_loss.plot(*zip(*val), "o--", color=color, ms=3, lw=1, label=f"{name} val")
        if lr:
            ax_lr.plot(*zip(*lr), color=color, lw=1, label=name)
        plotted = plotted or bool(train or val)
    if plotted:
        ax_loss.set_yscale("log")
        ax_loss.legend(fontsize=7)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss (log)")
    ax_loss.grid(alpha=0.3, which="both")
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("learning rate")
    ax_lr.grid(alpha=0.3)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------- sections
def _missing(name: str) -> str:
    return f"*{MISSING}* — `{HOW[name]}`"


def headline_table(results: Results) -> str:
    rows = []
    have = {(r.task, r.method) for r in results.success}
    for r in results.success:
        successes = f"{r.successes}/{r.episodes}" if r.successes is not None else "—"
        rows.append((_order(r.task, r.method), [r.task, METHODS.get(r.method, r.method), pct(r.rate), ci(r.ci95), successes, r.latency()]))
    broken = {_split_name(Path(p).stem, {}) for p in results.errors if Path(p).parent.name == "success"}
    for task, method in [*EXPECTED, *sorted(broken)]:
        if (task, method) not in have:
            status = "unreadable (see Inputs)" if (task, method) in broken else MISSING
            rows.append((_order(task, method), [task, METHODS.get(method, method), status, "", "", ""]))
            have.add((task, method))
    rows.sort(key=lambda x: x[0])
    return table(["Task", "Method", "Success", "95% CI", "Successes / episodes", "Latency (median / p99)"], [r for _, r in rows])


def section_success(results: Results, img: Path, rel: str) -> list[str]:
    out = ["## Success in simulation", "",
           "Seeded episodes of `dp eval` (torch, ONNX) and of `dp node` driving the simulated controller (deploy); "
           "95% Wilson intervals. Latency: the policy's time per control step (`dp eval`), or the age of the "
           "observation when its command reaches the controller (deploy).", "",
           headline_table(results), ""]
    if (plot := plot_success(results.success, img / "results_success.png")) is not None:
        out += [f"![success per task and method]({rel}/{plot.name})", ""]
    if results.success:
        out += ["### How each row was produced", ""]
        for r in results.success:
            line = f"- **{r.task} · {METHODS.get(r.method, r.method)}** — `{r.path.name}`"
            if r.data.get("policy"):
                line += f", policy `{shown(r.data['policy'])}`"
            if r.data.get("mean_length") is not None or r.data.get("mean_episode_length") is not None:
                line += f", mean episode length {num(r.data.get('mean_length', r.data.get('mean_episode_length')), 1)}"
            out.append(line)
            if r.command:
                out += ["", "  ```bash", *("  " + shown(c) for c in r.command.splitlines()), "  ```"]
        out.append("")
    return out


def runtime_targets(results: Results, targets: Targets) -> None:
    """Success with RTI and with ONNX Runtime against full torch sampling, same task and seeds."""
    rate = {(r.task, r.method): r.rate for r in results.success}
    for task in RUNTIME_TASKS:
        base = rate.get((task, "torch"))
        for method in ("torch_rti", "onnx", "onnx_rti"):
            value = rate.get((task, method))
            gap = None if base is None or value is None else 100 * (base - value)
            targets.check("Success", f"{task}: {METHODS[method]} below torch (points)", gap, "<=", RUNTIME_POINTS, fmt=lambda v: f"{v:.0f}")


def multitask_table(results: Results) -> tuple[str, dict[str, float | None]]:
    """The per-task MoDE / dense-twin table of the multitask policy, and each method's average."""
    rows = {(r.task.removeprefix("multitask_"), r.method): r for r in results.success if r.task.startswith("multitask_")}
    body, means = [], {}
    for method in ("mode", "dense"):
        found = [rows[(t, method)].rate for t in MULTITASK if (t, method) in rows and rows[(t, method)].rate is not None]
        means[method] = sum(found) / len(found) if len(found) == len(MULTITASK) else None
    for task in MULTITASK:
        cells = [rows.get((task, m)) for m in ("mode", "dense")]
        body.append([task, *(f"{pct(r.rate)} ({r.successes}/{r.episodes})" if r else MISSING for r in cells)])
    body.append(["**average**", *(f"**{pct(means[m])}**" if means[m] is not None else MISSING for m in ("mode", "dense"))])
    return table(["Task", "MoDE", "dense twin"], body), means


def section_multitask(results: Results, targets: Targets) -> list[str]:
    text, means = multitask_table(results)
    out = ["## Multitask, language-conditioned", "",
           f"One `small` policy trained on {', '.join(MULTITASK)} together, conditioned on each task's instruction "
           "(all-MiniLM-L6-v2 embeddings), evaluated per task with `dp eval` on 50 seeded episodes; the dense twin "
           "(`--experts 1`) has the same active FLOPs and was trained and evaluated the same way.", "", text, ""]
    targets.check("Multitask", "MoDE average success over the four tasks", means["mode"], ">=", MULTITASK_TARGET, fmt=pct)
    return out


def section_latency(results: Results, targets: Targets, img: Path, rel: str) -> list[str]:
    out = ["## Inference latency", "",
           "Per action chunk at batch 1, `small` preset (random weights time as trained ones do), from "
           "`bench/latency.py`. Speed-up is against torch eager uncached sampling of the same case.", ""]
    lat = results.bench("latency")
    section = "Inference latency"
    state = get(lat, "small_state") if lat else None
    eager, rti = get(state, "eager_uncached", "median_ms"), get(state, "onnx_rti", "median_ms")
    speedup = get(state, "speedup_onnx_rti_vs_eager")
    if speedup is None and _finite(eager) and _finite(rti) and rti > 0:
        speedup = eager / rti
    checks = [
        targets.check(section, "ONNX Runtime + RTI median, state (ms)", rti, "<=", 2.0, " ms", available=lat is not None),
        targets.check(section, "ONNX Runtime + RTI vs eager uncached, state", speedup, ">=", 10.0, "x", fmt=lambda v: f"{v:.1f}",
                      available=lat is not None),
    ]
    if lat is None:
        return out + [_missing("latency"), "", table(["Metric", "Measured", "Target", "Verdict"], checks), ""]
    machine = lat.get("machine") or {}
    if machine:
        out += [f"Machine: {machine.get('cpus', '?')} CPUs ({machine.get('cpu', '?')}), {machine.get('threads', '?')} thread(s), "
                f"torch {machine.get('torch', '?')}, onnxruntime {machine.get('onnxruntime', '?')}; "
                f"RTI {get(lat, 'rti', 'steps')} step(s) from sigma {get(lat, 'rti', 'sigma_start')}.", ""]
    cases = [(k, label) for k, label in LATENCY_CASES if isinstance(lat.get(k), dict)]
    headers = ["Mode"]
    for _, label in cases:
        headers += [f"{label}: median ms", "p99 ms", "speed-up"]
    rows = []
    for mode, label in LATENCY_MODES:
        row = [label]
        for key, _ in cases:
            m, base = get(lat, key, mode, "median_ms"), get(lat, key, "eager_uncached", "median_ms")
            row += [num(m, 3), num(get(lat, key, mode, "p99_ms"), 3),
                    f"{base / m:.1f}x" if _finite(m) and _finite(base) and m > 0 else "—"]
        rows.append(row)
    if cases:
        out += [table(headers, rows), ""]
    if (plot := plot_latency(lat, img / "results_latency.png")) is not None:
        out += [f"![latency per inference mode]({rel}/{plot.name})", ""]
    out += [table(["Metric", "Measured", "Target", "Verdict"], checks), ""]
    flop_rows = []
    for key, label in cases:
        f, p = get(lat, key, "flops_per_chunk") or {}, get(lat, key, "params") or {}
        flop_rows.append([label, big(f.get("uncached")), big(f.get("cached")), big(f.get("cached_rti")),
                          big(f.get("dense_twin_uncached")), big(p.get("mode_total")), big(p.get("dense_twin_total"))])
    if flop_rows:
        out += ["FLOPs per chunk and parameters (MoDE against its dense twin, one expert as wide as all four):", "",
                table(["Case", "uncached", "cached", "cached + RTI", "dense twin", "MoDE params", "dense twin params"], flop_rows), ""]
    check = lat.get("rti_check")
    if isinstance(check, dict) and check.get("settings"):
        out += [f"RTI check ({shown(check.get('policy', '?'))}; {check.get('held_out_episodes', '?')} held-out episodes, "
                f"{check.get('chunks', '?')} chunks; full sampling's error against the demonstrations "
                f"{num(check.get('full_error'), 4)}):", ""]
        out += [table(["RTI steps", "start sigma", "warm error", "warm vs full", "guess error", "gripper agreement", "error contraction per step"],
                      [[s.get("steps"), s.get("sigma_start"), num(s.get("warm_error"), 4), num(s.get("warm_vs_full"), 4),
                        num(s.get("guess_error"), 4), pct(s.get("gripper_agreement")),
                        ", ".join(num(c, 3) for c in s.get("contraction") or [])] for s in check["settings"]]), ""]
    return out


def section_deploy(results: Results, targets: Targets) -> list[str]:
    out = ["## Deploy path", "",
           "`bench/deploy.py`: a `dp robot` sim controller and a `dp node`, real processes on loopback. "
           "Observation-to-command is measured by the controller; watchdog figures are how long after a command "
           "expires (or the heartbeat timeout runs out) the controller reports hold.", ""]
    dep = results.bench("deploy")
    section = "Deploy"
    have = dep is not None
    o2c, wd, jit = get(dep, "obs_to_command_ms") or {}, get(dep, "watchdog") or {}, get(dep, "jitter") or {}
    checks = [
        targets.check(section, "obs→command p99 (ms)", o2c.get("p99"), "<=", 10.0, " ms", available=have),
        targets.check(section, "watchdog: hold after command expiry, max (ms)", get(wd, "hold_after_expiry_ms", "max"), "<=", 100.0, " ms",
                      available=have),
        targets.check(section, "watchdog: hold after heartbeat timeout, max (ms)", get(wd, "hold_after_heartbeat_timeout_ms", "max"), "<=", 100.0,
                      " ms", available=have),
        targets.check(section, "State stream rate (Hz)", jit.get("state_rate_hz"), ">=", 100.0, " Hz", fmt=lambda v: f"{v:.1f}", available=have),
    ]
    if not have:
        return out + [_missing("deploy"), "", table(["Metric", "Measured", "Target", "Verdict"], checks), ""]
    out += [f"Policy `{shown(dep.get('policy', '?'))}` on `{dep.get('task', '?')}`, control {num(dep.get('control_hz'), 0)} Hz, "
            f"State {num(dep.get('state_hz'), 0)} Hz.", ""]

    def stat_row(label: str, s: Any, jitter: bool = False) -> list[str]:
        s = s if isinstance(s, dict) else {}
        return [label, num(s.get("median")), num(s.get("p99")), num(s.get("max")), num(s.get("p99_abs_dev")) if jitter else "",
                num(s.get("n"), 0)]

    rows = [
        stat_row("observation → command at the controller", o2c),
        stat_row("node cycle (State in → command out)", dep.get("node_cycle_ms")),
        stat_row("policy inside the node", dep.get("policy_ms")),
        stat_row("each episode's first chunk, sampled while the robot holds", dep.get("first_chunk_ms")),
        stat_row("node loop period", jit.get("node_period_ms"), True),
        stat_row("controller tick period", jit.get("controller_tick_period_ms"), True),
        stat_row("State inter-arrival at a subscriber", jit.get("state_interarrival_ms"), True),
        stat_row("watchdog: hold after command expiry", wd.get("hold_after_expiry_ms")),
        stat_row("watchdog: held tick after command expiry", wd.get("held_tick_after_expiry_ms")),
        stat_row("watchdog: hold after heartbeat timeout", wd.get("hold_after_heartbeat_timeout_ms")),
    ]
    out += [table(["ms", "median", "p99", "max", "p99 jitter (deviation from target period)", "n"], rows), ""]
    out += [f"State stream {num(jit.get('state_rate_hz'), 1)} Hz; heartbeat timeout {num(wd.get('heartbeat_timeout_s'))} s; "
            f"{num(wd.get('trials'), 0)} watchdog trials of each kind.", ""]
    succ = dep.get("success") or {}
    if succ:
        line = f"Success through the deploy path: {pct(succ.get('success_rate'))} over {num(succ.get('episodes'), 0)} episodes"
        if succ.get("dp_eval_success_rate") is not None:
            line += (f"; `dp eval` on the same seeds {pct(succ['dp_eval_success_rate'])} "
                     f"(difference {num(succ.get('difference_points'), 1)} points)")
        out += [line + ".", ""]
    out += [table(["Metric", "Measured", "Target", "Verdict"], checks), ""]
    return out


def section_data(results: Results, targets: Targets) -> list[str]:
    out = ["## Data throughput", ""]
    data, imp, sim = results.bench("data_throughput"), results.bench("import_throughput"), results.bench("sim_collect")
    section = "Data"
    rows = [
        targets.check(section, f"store: low-dim windows/s (DataLoader, {get(data, 'workers') or 2} workers)",
                      get(data, "lowdim_windows_per_s_loader"), ">=", 50000, available=data is not None),
        targets.check(section, "store: image windows/s (2×84×84×3, obs 2, action 16)", get(data, "image_windows_per_s"), ">=", 3000,
                      available=data is not None),
        targets.check(section, "import: CALVIN frames/s (end to end)", get(imp, "calvin", "frames_per_s"), ">=", 1000,
                      fmt=lambda v: num(float(v), 0), available=imp is not None),
    ]
    info = []
    if data is not None:
        info += [["store: low-dim windows/s in process", num(get(data, "lowdim_windows_per_s_in_process")), "", ""],
                 ["store: append MB/s", num(get(data, "append_mb_per_s"), 1), "", ""]]
        sizes = [s for s in data.get("by_size") or [] if isinstance(s, dict)]
        if len(sizes) > 1:
            info.append([f"store: peak RSS growth, {num(sizes[0].get('frames'))} → {num(sizes[-1].get('frames'))} frames (MB)",
                         num(get(data, "peak_rss_mb_growth"), 1), "", ""])
    else:
        info.append(["store", _missing("data_throughput"), "", ""])
    if imp is not None:
        cal, lib = imp.get("calvin") or {}, imp.get("libero") or {}
        info += [["import: CALVIN decode only / store write only (frames/s)",
                  f"{num(cal.get('decode_only_frames_per_s'), 0)} / {num(cal.get('store_write_only_frames_per_s'), 0)}", "", ""],
                 ["import: CALVIN frames/s implied by CPU time on 2 idle cores", num(cal.get("frames_per_s_implied_by_cpu_on_2_idle_cores"), 0), "", ""],
                 ["import: LIBERO frames/s (end to end)", num(lib.get("frames_per_s"), 0), "", ""],
                 ["import: machine", f"{num(imp.get('cpu_count'), 0)} CPUs, {num(imp.get('workers'), 0)} workers, "
                                     f"load average {num(imp.get('load_average_1min'))}", "", ""]]
    else:
        info.append(["import", _missing("import_throughput"), "", ""])
    if sim is not None:
        for tp in sim.get("throughput") or []:
            cams = "two 84×84 cameras" if tp.get("cameras") else "state only"
            info.append([f"collection: lift frames/s, {cams}, {tp.get('workers')} worker(s)", num(tp.get("frames_per_second"), 0), "", ""])
        steps = sim.get("env_step_ms") or {}
        if steps:
            info.append(["collection: env.step ms (state only / two cameras)",
                         f"{num(steps.get('state_only'))} / {num(steps.get('two_cameras_84'))}", "", ""])
    else:
        info.append(["collection", _missing("sim_collect"), "", ""])
    out += [table(["Metric", "Measured", "Target", "Verdict"], rows + info), ""]
    sizes = [s for s in get(data, "by_size") or [] if isinstance(s, dict)]
    if sizes:
        out += ["Image windows/s and peak RSS as the store grows:", "",
                table(["frames", "image windows/s", "peak RSS (MB)"],
                      [[num(s.get("frames")), num(s.get("image_windows_per_s")), num(s.get("peak_rss_mb"), 1)] for s in sizes]), ""]

    out += ["### Scripted experts", "", "Success of each task's scripted expert over the collector's seeded episodes (`bench/sim_collect.py`).", ""]
    experts = get(sim, "experts") or {}
    tasks = list(TASKS) + [t for t in experts if t not in TASKS]
    rows = []
    for task in tasks:
        e = experts.get(task)
        threshold = EXPERT_TARGET.get(task, EXPERT_TARGET_DEFAULT)
        verdict = targets.check("Scripted experts", f"{task} expert success", get(e, "success_rate"), ">=", threshold, fmt=pct,
                                available=isinstance(e, dict))
        if isinstance(e, dict):
            strategies = ", ".join(f"{k} {v}" for k, v in (e.get("strategies") or {}).items())
            rows.append([task, pct(e.get("success_rate")), ci(e.get("success_ci95")), f"{e.get('successes', '—')}/{e.get('episodes', '—')}",
                         num(e.get("mean_length"), 1), strategies or "—", verdict[2], verdict[3]])
        else:
            rows.append([task, MISSING, "", "", "", "", verdict[2], verdict[3]])
    out += [table(["Task", "Success", "95% CI", "Successes / episodes", "Mean length", "Strategies", "Target", "Verdict"], rows), ""]
    if sim is None:
        out += [_missing("sim_collect"), ""]
    return out


def section_formats(results: Results, targets: Targets) -> list[str]:
    """Training on foreign-format data: Push-T (Diffusion Policy zarr) and CALVIN-shaped image inputs."""
    out = ["## Training on imported data", ""]
    image = results.bench("image_train")
    out += section_pusht(results, targets)
    loader = get(image, "loader_over_step_ratio")
    targets.check("Formats", "CALVIN-shaped images: loader rate / training consumption", loader, ">=", 3.0, "x",
                  fmt=lambda v: f"{v:.1f}", available=image is not None)
    if image is None:
        out += [_missing("image_train"), ""]
    else:
        out += [f"CALVIN-shaped image training (`bench/image_train.py`, {image.get('mode', '?')} mode, preset {image.get('preset')}, "
                f"2 loader workers): {num(get(image, 'end_to_end', 'samples_per_s'), 1)} samples/s end to end, "
                f"{pct(get(image, 'end_to_end', 'data_wait_share'))} of the time waiting for data; the loader alone delivers "
                f"{num(get(image, 'loader_alone', 'windows_per_s'))} windows/s, {num(loader, 1)}x what training consumes.", ""]
    return out


PUSHT_ROWS = (("torch", "torch, full sampling"), ("onnx", "ONNX Runtime, full sampling"),
              ("onnx_every4", "ONNX Runtime, full sampling, a new chunk every 4"),
              ("onnx_every8", "ONNX Runtime, full sampling, a new chunk every 8"),
              ("onnx_rti", "ONNX Runtime + RTI (settings chosen on validation seeds)"),
              ("onnx_rti_defaults", "ONNX Runtime + RTI, the defaults chosen on `can` (1 step from sigma 1.0, every 4)"),
              ("deploy", "deploy (`dp node` + `dp robot`, ONNX + the chosen RTI)"))
PUSHT_RTI_WHY = (
    "Why RTI's defaults lose on Push-T: they were chosen on `can`, whose actions are small deltas. Push-T's actions are "
    "absolute target positions normalised over the arena, so a start sigma of 1.0 is noise of about a quarter of the "
    "arena, and a single step from there returns the denoiser's average at that noise level (between the ways round "
    "the T) rather than one of them; re-planning every 4 steps also switches plans more often than the 8 actions per "
    "chunk the policy was trained to execute. Three warm steps restore a sample, and the trained 8 executed steps keep "
    "the plan. RTI's settings are therefore a per-policy choice, made on validation seeds and fixed at export "
    "(`dp export --rti-steps K --rti-sigma S --rti-every N`, here with the first chunk fully sampled: "
    "`--first-steps 10 --first-sigma 80`), as `bench/pusht.py` does.")


PUSHT_HEADER = ["Policy", "Mean score", "95% CI (x100)", "Success", "95% CI", "Successes / episodes", "Latency median / p99"]


def _pusht_rows(tests: Any) -> list[list[Any]]:
    """One table row per Push-T test result present in ``tests`` (PUSHT_ROWS order)."""
    rows = []
    for key, what in PUSHT_ROWS:
        r = get(tests, key)
        if isinstance(r, dict):
            lat = r.get("latency_ms") or {}
            rows.append([what, num(r.get("mean_score"), 3), ci(r.get("score_ci95")).replace("%", ""), pct(r.get("success_rate")),
                         ci(r.get("success_ci95")), f"{r.get('successes')}/{r.get('episodes')}",
                         f"{num(lat.get('median'))} / {num(lat.get('p99'), 1)} ms"])
    return rows


def section_pusht(results: Results, targets: Targets) -> list[str]:
    """Push-T from Diffusion Policy's human demonstrations in gym-pusht (bench/pusht.py): test rows with
    score and success, the validation curve against training time, and the RTI settings tried."""
    out = ["### Push-T: human demonstrations, the real environment", "",
           "`bench/pusht.py`: Diffusion Policy's 206 demonstrations, `gym_pusht/PushT-v0`, Diffusion Policy's protocol "
           "(at most 300 steps; score = max over steps of min(coverage / 0.95, 1); success = coverage reached 0.95). "
           "Choices (checkpoint, RTI settings) on validation seeds (`dp eval --split val`), figures on test seeds "
           "(`--split test`, base seed 0); mean score with a 95% t-interval, success with a 95% Wilson interval.", ""]
    for name, label, score_target, minutes in (("pusht", "state (agent position + 9 keypoints)", 0.90, 90),
                                               ("pusht_image", "image (96x96 view + agent position)", 0.85, 150)):
        b = results.bench(name)
        torch_row = get(b, "test", "torch")
        targets.check("Push-T", f"{name}: test mean score (torch)", get(torch_row, "mean_score"), ">=", score_target,
                      available=b is not None)
        if name == "pusht":
            targets.check("Push-T", "pusht: test success (torch)", get(torch_row, "success_rate"), ">=", 0.60, fmt=pct,
                          available=b is not None)
        if b is None:
            out += [_missing(name), ""]
            continue
        trained = get(b, "chosen", "train_s")
        out += [f"**{label}**, preset `{b.get('preset')}`: checkpoint of step {get(b, 'chosen', 'step')}, the "
                f"{get(b, 'chosen', 'why')} ({num(trained / 60 if _finite(trained) else None, 1)} min of training, the target allows {minutes}; "
                f"the run trained {num((b.get('train_wall_s') or 0) / 60, 1)} min in all, on a shared machine).", ""]
        rows = _pusht_rows(b.get("test"))
        out += [table(PUSHT_HEADER, rows) if rows else "No test rows: the validation curve only (`--test-episodes 0`).", ""]
        cont = b.get("continued")
        if isinstance(cont, dict) and (rows := _pusht_rows(cont.get("test"))):
            c = cont.get("chosen") or {}
            t = c.get("train_s")
            out += [f"The same run continued: checkpoint of step {c.get('step')}, the {c.get('why')} "
                    f"({num(t / 60 if _finite(t) else None, 1)} min of training on the shared machine):", "",
                    table(PUSHT_HEADER, rows), ""]
        base = get(torch_row, "mean_score")
        for key, limit in (("onnx", 0.02), ("onnx_rti", 0.02), ("deploy", 0.03)):
            other = get(b, "test", key, "mean_score")
            gap = abs(other - base) if _finite(other) and _finite(base) else None
            targets.check("Push-T", f"{name}: {key} vs torch, mean score gap", gap, "<=", limit, fmt=lambda v: f"{v:.3f}",
                          available=gap is not None)
        curve = [p for p in b.get("curve") or [] if isinstance(p, dict)]
        if curve:
            out += ["Validation curve (each checkpoint on validation seeds):", "",
                    table(["Step", "Training time (min)", "Episodes", "Mean score", "Success"],
                          [[p.get("step"), num((p.get("train_s") or 0) / 60, 1), p.get("episodes"), num(p.get("mean_score"), 3),
                            pct(p.get("success_rate"))] for p in curve]), ""]
        rti = [r for r in b.get("rti_val") or [] if isinstance(r, dict)]
        if rti:
            out += ["RTI settings on validation seeds (warm steps, start sigma, a new chunk every N):", "",
                    table(["Steps", "Start sigma", "Every", "Episodes", "Mean score", "Success"],
                          [[r.get("steps"), r.get("sigma"), r.get("every"), r.get("episodes"), num(r.get("mean_score"), 3),
                            pct(r.get("success_rate"))] for r in rti]), "", PUSHT_RTI_WHY, ""]
    return out


def section_training(results: Results, img: Path, rel: str) -> list[str]:
    out = ["## Training", ""]
    tr = results.bench("train")
    if tr is None:
        out += ["Throughput: " + _missing("train"), ""]
    else:
        out += [f"Samples/s of the `{tr.get('preset', '?')}` preset on {tr.get('device', '?')} through the real data path "
                "(`bench/train.py`), and the size of MoDE against its dense twin (equal active FLOPs).", ""]
        rows = []
        for key, label in (("state", "state only"), ("two_cameras_84", "two 84×84 cameras")):
            c = tr.get(key)
            if not isinstance(c, dict):
                continue
            m, d = c.get("mode") or {}, c.get("dense_twin") or {}
            rows.append([label, num(c.get("samples_per_s"), 1), num(c.get("batch_size"), 0), num(c.get("s_per_step"), 4),
                         f"{big(m.get('total_params'))} / {big(m.get('active_params'))}", big(m.get("flops_per_step")),
                         f"{big(d.get('total_params'))} / {big(d.get('active_params'))}", big(d.get("flops_per_step"))])
        out += [table(["Case", "samples/s", "batch", "s/step", "MoDE params total / active", "MoDE FLOPs/step",
                       "dense twin params total / active", "dense twin FLOPs/step"], rows), ""]
    out += ["### Training curves", ""]
    if not results.curves:
        return out + [f"*{MISSING}* — copy a run's `metrics.jsonl` to `bench/results/curves/<name>.jsonl`.", ""]
    if (plot := plot_curves(results.curves, img / "results_training.png")) is not None:
        out += [f"![training curves]({rel}/{plot.name})", ""]
    rows = []
    for name, recs in results.curves.items():
        start = next((r for r in recs if r.get("event") == "start"), {})
        train = [r for r in recs if r.get("event") == "train"]
        val = [r for r in recs if r.get("event") == "val" and _finite(r.get("val_loss"))]
        end = next((r for r in reversed(recs) if r.get("event") == "end"), {})
        best = min(val, key=lambda r: r["val_loss"]) if val else None
        steps = max((r.get("step", 0) for r in recs if _finite(r.get("step"))), default=0)
        rows.append([name, num(steps, 0), num(get(train[-1], "loss") if train else None, 4), num(val[-1]["val_loss"] if val else None, 4),
                     f"{num(best['val_loss'], 4)} @ {best['step']}" if best else "—",
                     num(val[-1].get("val_action_mse") if val else None, 4),
                     num(end.get("wall_s"), 0) + (" s" if _finite(end.get("wall_s")) else ""),
                     num(get(train[-1], "samples_per_s") if train else None, 0),
                     f"{big(start.get('total_params'))} / {big(start.get('active_params'))}"])
    out += [table(["Run", "steps", "train loss", "val loss", "best val loss", "val action MSE", "wall time", "samples/s",
                   "params total / active"], rows), ""]
    return out


# issue 17: dp against LeRobot's DiffusionPolicy on Push-T (bench/peers/compare_lerobot.py -> peers.json)
PEER_CONFIGS = (("dp_pusht", "dp, `pusht` preset"), ("lerobot_matched", "LeRobot, matched size"), ("lerobot_default", "LeRobot, default"))
PEER_RUNTIMES = (("lerobot_default", "LeRobot `select_action`, default"), ("lerobot_matched", "LeRobot `select_action`, matched size"),
                 ("dp_torch", "dp torch"), ("dp_onnx", "dp ONNX Runtime"), ("dp_onnx_rti", "dp ONNX Runtime + RTI (export defaults)"),
                 ("dp_onnx_rti3", "dp ONNX Runtime + RTI (Push-T's validated setting)"))


def peers_score_gap(peers: dict | None) -> float | None:
    """dp's mean Push-T score minus LeRobot's, on the test seeds both evaluated."""
    dp, lr = (get(peers, "eval", side, "on_common_seeds", "mean_score") for side in ("dp", "lerobot"))
    return dp - lr if _finite(dp) and _finite(lr) else None


def peers_success_rows(peers: dict | None) -> list[list[str]]:
    """Rows of the equal-training-time comparison: each tool on all its episodes, then on the seeds both finished."""
    rows = []
    for common in (False, True):
        for side, label in (("dp", "dp, `pusht` preset"), ("lerobot", "LeRobot, matched size")):
            tr, ev = get(peers, "train", side) or {}, get(peers, "eval", side) or {}
            ev = ev.get("on_common_seeds") if common else ev
            if not ev:
                continue
            bounds = ev.get("score_ci95") or [None, None]
            score = f"{num(ev.get('mean_score'), 3)} ({num(bounds[0], 3)}–{num(bounds[1], 3)})"
            rows.append([label + (" (seeds both finished)" if common else ""), f"{num(tr.get('steps'), 0)} × {num(tr.get('batch_size'), 0)}",
                         pct(ev.get("success_rate")), ci(ev.get("success_ci95")), f"{num(ev.get('successes'), 0)}/{num(ev.get('episodes'), 0)}", score])
    return rows


def section_peers(results: Results, targets: Targets) -> list[str]:
    """dp against LeRobot's DiffusionPolicy: same Push-T data, same machine, one run (issue 17)."""
    out = ["## Compared with LeRobot", ""]
    peers = results.bench("peers")
    ratios = get(peers, "speed", "ratios") or {}
    tp_ratio = ratios.get("train_samples_per_s_dp_vs_lerobot_matched")
    targets.check("LeRobot", "training samples/s, dp / LeRobot at matched size", tp_ratio, ">=", 3.0, "x",
                  fmt=lambda v: f"{v:.2f}", available=peers is not None)
    targets.check("LeRobot", "chunk latency, LeRobot default `select_action` / dp ONNX + RTI",
                  ratios.get("chunk_median_lerobot_default_vs_dp_onnx_rti"), ">=", 50.0, "x", fmt=lambda v: f"{v:,.0f}",
                  available=peers is not None)
    targets.check("LeRobot", "Push-T score at equal training time, dp − LeRobot (same seeds)", peers_score_gap(peers), ">=", 0.0,
                  fmt=lambda v: f"{v:+.3f}", available=peers is not None)
    if peers is None:
        return out + [_missing("peers"), ""]
    speed, machine = peers.get("speed") or {}, peers.get("machine") or {}
    out += [f"`bench/peers/compare_lerobot.py` runs LeRobot {machine.get('lerobot', '?')} in its own virtualenv "
            "(`bench/peers/setup_lerobot.sh`) and dp side by side on Diffusion Policy's 206 Push-T demonstrations, converted "
            "for LeRobot with its own dataset API (`bench/peers/convert_pusht.py`): both observe the agent position and the "
            "block's 9 keypoints, 2 observations, 16 actions predicted, 8 executed. One thread each, on this machine "
            f"({machine.get('cpu_count', '?')} cores), in one run (started {speed.get('started_utc', '?')}). Wall-clock "
            "figures were taken while other jobs shared the cores; the CPU seconds (each process's own CPU time) are "
            f"what that sharing inflates least. torch {machine.get('dp_torch', '?')} for dp, "
            f"{get(speed, 'throughput', 'lerobot_matched', 'torch') or '?'} (LeRobot's pin) for LeRobot.", "",
            *(f"- {label}: {get(peers, 'configs', key)}" for key, label in PEER_CONFIGS if get(peers, "configs", key)), ""]
    sizes, tp = speed.get("sizes") or {}, speed.get("throughput") or {}
    rows = []
    for key, label in PEER_CONFIGS:
        t, z = tp.get(key) or {}, sizes.get(key) or {}
        rows.append([label, big(z.get("total_params", z.get("params"))), big(z.get("flops_per_sample_step")), num(t.get("batch_size"), 0),
                     f"{num(t.get('steps'), 0)} (+{num(t.get('warmup'), 0)})", num(t.get("samples_per_s"), 1), num(t.get("s_per_step"), 3),
                     num(t.get("samples_per_cpu_s"), 1), num(t.get("data_s_per_step"), 3), num(t.get("peak_rss_mb"), 0)])
    out += ["Training throughput (the full data path: loader, step, optimiser; dp also updates its EMA):", "",
            table(["Config", "params", "FLOPs / sample / denoising step", "batch", "timed steps (+warm-up)", "samples/s",
                   "s/step", "samples per CPU s", "data s/step", "peak RSS MB"], rows), ""]
    lat = speed.get("latency") or {}
    rows = [[label, num(get(lat, key, "sampler_steps"), 0), num(get(lat, key, "median_ms"), 2), num(get(lat, key, "p99_ms"), 2),
             num(get(lat, key, "cpu_ms_mean"), 2), num(get(lat, key, "calls"), 0), num(get(lat, key, "peak_rss_mb"), 0)]
            for key, label in PEER_RUNTIMES if key in lat]
    out += ["Latency per action chunk, batch 1 (LeRobot: `reset` + `select_action`, which samples a whole chunk, with its "
            "pre- and post-processors; dp: `predict_chunk`; the ONNX rows run in a process without torch):", "",
            table(["Runtime", "sampler steps", "median ms", "p99 ms", "CPU ms / chunk", "calls", "peak RSS MB"], rows), ""]
    cpu = {key: get(lat, key, "cpu_ms_mean") for key, _ in PEER_RUNTIMES}
    if all(_finite(cpu[k]) and cpu[k] > 0 for k in ("lerobot_default", "lerobot_matched", "dp_onnx_rti", "dp_torch")):
        out += [f"In CPU time per chunk, LeRobot's default `select_action` costs {cpu['lerobot_default'] / cpu['dp_onnx_rti']:,.0f}x "
                f"dp ONNX Runtime + RTI and {cpu['lerobot_default'] / cpu['dp_torch']:,.0f}x dp torch; at matched size "
                f"{cpu['lerobot_matched'] / cpu['dp_onnx_rti']:,.0f}x and {cpu['lerobot_matched'] / cpu['dp_torch']:,.1f}x "
                "(100 DDPM steps a chunk against dp's 10 sampler steps, or 1 to 3 warm-started ones).", ""]
    rows = peers_success_rows(peers)
    if rows:
        ev, tr = peers.get("eval") or {}, peers.get("train") or {}
        out += [f"Success at equal training time: both trained at once, one thread each, for {num(get(tr, 'dp', 'wall_s'), 0)} s "
                f"(dp) and {num(get(tr, 'lerobot', 'wall_s'), 0)} s (LeRobot) of wall clock, then evaluated on the same Push-T test "
                f"seeds ({ev.get('seeds', '?')}) with Diffusion Policy's protocol (at most 300 steps, score = max min(coverage / 0.95, 1), "
                "success at coverage 0.95); success with its 95% Wilson interval, mean score with its 95% t-interval.", "",
                table(["Tool", "steps × batch", "Success", "95% CI", "Successes / episodes", "mean score (95% CI)"], rows), ""]
        a, b = (get(ev, side, "on_common_seeds", "score_ci95") or [None, None] for side in ("dp", "lerobot"))
        if all(_finite(v) for v in (*a, *b)) and a[0] <= b[1] and b[0] <= a[1]:
            out += ["On the seeds both finished the two scores' 95% intervals overlap: this run does not separate the tools.", ""]
        plan = [f"{name} {num(get(tr, key, 'steps'), 0)} of {num(get(tr, key, 'steps_planned'), 0)} planned steps "
                f"(peak RSS {num(get(tr, key, 'peak_rss_mb'), 0)} MB)" for key, name in (("dp", "dp"), ("lerobot", "LeRobot"))]
        out += ["Training reached " + "; ".join(plan) + ". Each schedule was planned for the budget on an idle core (the CPU "
                "seconds per step above); the shared machine gave each process far less, so neither finished its schedule.", ""]
        stopped = [f"{name} after {num(get(ev, key, 'episodes'), 0)} episodes ({num(get(ev, key, 'sampler_steps'), 0)} sampler steps a chunk)"
                   for key, name in (("dp", "dp"), ("lerobot", "LeRobot")) if get(ev, key, "stopped_by_budget")]
        if stopped:
            out += ["Evaluation stopped at its time budget: " + "; ".join(stopped) + ".", ""]
    else:
        out += [f"Success at equal training time: *{MISSING}* (`--parts train,eval`).", ""]
    fd, fl = get(sizes, "dp_pusht", "flops_per_sample_step"), get(sizes, "lerobot_matched", "flops_per_sample_step")
    sd, sl = get(tp, "dp_pusht", "samples_per_cpu_s"), get(tp, "lerobot_matched", "samples_per_cpu_s")
    if _finite(tp_ratio) and tp_ratio < 3.0 and all(_finite(v) for v in (fd, fl, sd, sl)):
        cpu_ratio = ratios.get("train_samples_per_cpu_s_dp_vs_lerobot_matched")
        out += [f"Why dp trains only {tp_ratio:.2f}x as many samples/s as LeRobot at matched size ({num(cpu_ratio)}x per CPU second): at about the same parameter "
                f"count its transformer does {fd / fl:.1f}x the FLOPs per sample ({big(fd)} against {big(fl)}; every layer sees "
                "all the observation and action tokens, where the UNet halves the 16-step sequence at each stage), while it "
                f"turns CPU time into FLOPs {sd * fd / (sl * fl):.1f}x as fast. Matching LeRobot's speed per sample takes a model "
                "with fewer FLOPs per sample (narrower, or fewer tokens per layer), not a faster training loop.", ""]
    return out


def _less(theirs: Any, ours: Any) -> str:
    return f"{theirs / ours:.1f}x" if _finite(theirs) and _finite(ours) and ours > 0 else "—"


def peers_readme_table(results: Results) -> list[str]:
    """The README's short dp-against-LeRobot table (issue 17), from peers.json."""
    peers = results.bench("peers")
    if peers is None:
        return []
    tp, lat, r = get(peers, "speed", "throughput") or {}, get(peers, "speed", "latency") or {}, get(peers, "speed", "ratios") or {}
    rows = [["Training at matched size, samples/s (per CPU s)",
             f"{num(get(tp, 'dp_pusht', 'samples_per_s'), 1)} ({num(get(tp, 'dp_pusht', 'samples_per_cpu_s'), 1)})",
             f"{num(get(tp, 'lerobot_matched', 'samples_per_s'), 1)} ({num(get(tp, 'lerobot_matched', 'samples_per_cpu_s'), 1)})",
             f"{num(r.get('train_samples_per_s_dp_vs_lerobot_matched'))}x ({num(r.get('train_samples_per_cpu_s_dp_vs_lerobot_matched'))}x)"],
            ["Chunk latency, batch 1, median ms (dp ONNX + RTI; LeRobot default `select_action`)",
             num(get(lat, "dp_onnx_rti", "median_ms"), 1), num(get(lat, "lerobot_default", "median_ms"), 0),
             f"{num(r.get('chunk_median_lerobot_default_vs_dp_onnx_rti'), 0)}x faster"],
            ["Peak RSS, MB: training, batch 64 / acting (dp ONNX + RTI; LeRobot default)",
             f"{num(get(tp, 'dp_pusht', 'peak_rss_mb'), 0)} / {num(get(lat, 'dp_onnx_rti', 'peak_rss_mb'), 0)}",
             f"{num(get(tp, 'lerobot_default', 'peak_rss_mb'), 0)} / {num(get(lat, 'lerobot_default', 'peak_rss_mb'), 0)}",
             f"{_less(get(tp, 'lerobot_default', 'peak_rss_mb'), get(tp, 'dp_pusht', 'peak_rss_mb'))} / "
             f"{_less(get(lat, 'lerobot_default', 'peak_rss_mb'), get(lat, 'dp_onnx_rti', 'peak_rss_mb'))} less"]]
    ev = get(peers, "eval") or {}
    if ev.get("dp") and ev.get("lerobot"):
        cell = lambda e: f"{num(e.get('mean_score'), 3)} / {pct(e.get('success_rate'))} ({num(e.get('successes'), 0)}/{num(e.get('episodes'), 0)})"
        gap = peers_score_gap(peers)
        rows.append([f"Push-T at equal training time ({num(get(peers, 'train', 'dp', 'wall_s'), 0)} s, LeRobot at matched size): score / success",
                     cell(ev["dp"]), cell(ev["lerobot"]), f"{gap:+.3f} score on the seeds both finished" if gap is not None else "—"])
    return ["Compared with LeRobot 0.4.4 on Push-T (state; same data, same machine, one thread each, in one run; "
            "[details](docs/results.md#compared-with-lerobot)):", "", table(["Figure", "dp", "LeRobot", "dp against LeRobot"], rows), ""]


def section_quickstart(results: Results) -> list[str]:
    out = ["## Quickstart", ""]
    qs = results.quickstart
    if qs is None:
        return out + [f"*{MISSING}* — `dp quickstart && cp quickstart/report.json bench/results/quickstart.json`", ""]
    sizes = qs.get("sizes") or {}
    out.append(f"`dp quickstart` on `{qs.get('task', '?')}`: {num(qs.get('seconds'), 0)} s in all "
               f"({num(sizes.get('episodes'), 0)} demonstrations, `{sizes.get('preset', '?')}` preset, {num(sizes.get('train_steps'), 0)} steps).")
    if qs.get("fast"):
        out.append("This is a `--fast` smoke run: its success rates mean nothing.")
    out.append("")
    stages = qs.get("stages") or {}
    out += [table(["Stage", "seconds", "command"], [[name, num(s.get("seconds"), 1), f"`{shown(s.get('command', ''), qs.get('out'), 'quickstart')}`"] for name, s in stages.items()]), ""]
    s = qs.get("summary") or {}
    rows = []
    for path, label in (("torch", "torch"), ("onnx", "ONNX Runtime")):
        p = s.get(path) or {}
        rows.append([label, pct(p.get("success_rate")), num(p.get("episodes"), 0), f"policy {num(p.get('policy_ms_median'))} ms (median)"])
    d = s.get("deploy") or {}
    rows.append(["deploy", pct(d.get("success_rate")), num(d.get("episodes"), 0),
                 f"obs→command {num(d.get('obs_to_command_ms_median'))} ms median, {num(d.get('obs_to_command_ms_p99'))} ms p99"])
    out += [table(["Path", "Success", "Episodes", "Latency"], rows), ""]
    return out


def section_inputs(results: Results) -> list[str]:
    out = ["## Inputs", "", f"Read from `{shown(results.root)}` (see `bench/results/README.md`).", ""]
    rows = []
    for name in BENCHES:
        path = results.root / f"{name}.json"
        status = "read" if name in results.benches else ("unreadable" if str(path) in results.errors else MISSING)
        rows.append([f"`{name}.json`", status, f"`{HOW[name]}`"])
    rows.append(["`success/*.json`", f"{len(results.success)} file(s)", "`dp eval ... --json-out`, `dp node ... --json-out`"])
    rows.append(["`curves/*.jsonl`", f"{len(results.curves)} file(s)", "a run's `metrics.jsonl`"])
    rows.append(["`quickstart.json`", "read" if results.quickstart is not None else MISSING, "`dp quickstart`'s `report.json`"])
    out += [table(["File", "Status", "Written by"], rows), ""]
    if results.errors:
        out += ["Unreadable inputs:", ""] + [f"- `{p}`: {e}" for p, e in sorted(results.errors.items())] + [""]
    return out


PLOTS = ("results_success.png", "results_latency.png", "results_training.png")


def build_page(results: Results, out: Path, img: Path) -> str:
    """The page's markdown; writes the plots it links into ``img`` (and removes those it no longer has data for)."""
    for name in PLOTS:
        (img / name).unlink(missing_ok=True)
    rel = Path(os.path.relpath(img, out.parent)).as_posix()
    targets = Targets()
    success = section_success(results, img, rel)
    runtime_targets(results, targets)
    multitask = section_multitask(results, targets)
    latency = section_latency(results, targets, img, rel)
    deploy = section_deploy(results, targets)
    data = section_data(results, targets)
    formats = section_formats(results, targets)
    training = section_training(results, img, rel)
    peers = section_peers(results, targets)
    quickstart = section_quickstart(results)
    inputs = section_inputs(results)
    verdicts = [r[4] for r in targets.rows]
    overview = ["## Targets", "",
                f"{verdicts.count(MET)} met, {verdicts.count(NOT_MET)} not met, {verdicts.count(MISSING)} {MISSING}.", "",
                table(["Section", "Metric", "Measured", "Target", "Verdict"], targets.rows), ""]
    head = ["# Results", "",
            f"Generated by `python bench/report.py` from the benchmark outputs in `{results.root}`; edit those, not this page. "
            "Targets come from the project's issues; an input that has not been measured yet says so.", ""]
    return "\n".join(head + success + multitask + overview + latency + deploy + data + formats + training + peers + quickstart + inputs).rstrip() + "\n"


README_INTRO = (
    "Measured on this project's reference machine (2 CPU cores, no GPU); every figure, its command and\n"
    "the plots are on the [results page](docs/results.md). Policies use the `small` preset and state\n"
    "observations unless the task says `image`; 50 seeded episodes each. Latency is per `select_action`\n"
    "call (median: a queued action; p99: a new chunk) while other jobs shared the machine; the clean\n"
    "per-chunk figures are in the latency table below."
)


def readme_section(results: Results) -> str:
    """The README's Results section: the measured headline rows, the multitask table, per-chunk latency
    and one line of data, training and deploy figures, all from the benchmark JSONs."""
    out = ["## Results", "", README_INTRO, "", *(line for line in headline_table(results).splitlines() if MISSING not in line and not line.startswith("| multitask_")), ""]
    text, means = multitask_table(results)
    if any(v is not None for v in means.values()):
        out += [f"Multitask, language-conditioned ({', '.join(MULTITASK)} in one policy; MoDE against its dense twin):", "", text, ""]
    lat = results.bench("latency")
    if lat is not None:
        cases = [k for k, _ in LATENCY_CASES if isinstance(lat.get(k), dict)]
        rows = [[label, *(f"{num(get(lat, k, mode, 'median_ms'), 1)} / {num(get(lat, k, mode, 'p99_ms'), 1)}" for k in cases)]
                for mode, label in LATENCY_MODES]
        headers = ["Inference, `small` preset, batch 1, 1 thread", *(f"{label}: median / p99 ms per chunk" for k, label in LATENCY_CASES if k in cases)]
        out += [table(headers, rows), ""]
    out += peers_readme_table(results)
    data, imp, train, image, dep = (results.bench(n) or {} for n in ("data_throughput", "import_throughput", "train", "image_train", "deploy"))
    facts = []
    if data:
        facts.append(f"Store: {num(data.get('lowdim_windows_per_s_loader'))} low-dim and {num(data.get('image_windows_per_s'))} image "
                     "windows/s through the loader.")
    if imp:
        facts.append(f"Import: CALVIN {num(get(imp, 'calvin', 'frames_per_s'), 0)} frames/s, LIBERO {num(get(imp, 'libero', 'frames_per_s'), 0)} frames/s.")
    if train:
        facts.append(f"Training: {num(get(train, 'state', 'samples_per_s'), 0)} samples/s (state), "
                     f"{num(get(train, 'two_cameras_84', 'samples_per_s'), 0)} samples/s (two cameras).")
    for name, what in (("pusht", "state"), ("pusht_image", "image")):
        rows = get(results.bench(name), "test") or {}
        if isinstance(rows.get("torch"), dict):
            parts = ", ".join(f"{label} {num(get(rows, k, 'mean_score'), 3)} / {pct(get(rows, k, 'success_rate'))}"
                              for k, label in (("torch", "torch"), ("onnx", "ONNX"), ("onnx_rti", "ONNX + RTI"), ("deploy", "deploy"))
                              if isinstance(rows.get(k), dict))
            facts.append(f"Push-T ({what}, human demonstrations, gym-pusht, {get(rows, 'torch', 'episodes')} test episodes; "
                         f"mean score / success): {parts}.")
    if image:
        facts.append(f"CALVIN-shaped image training: the loader delivers {num(get(image, 'loader_over_step_ratio'), 1)}x what the model consumes.")
    if dep:
        facts.append(f"Deploy path ({shown(dep.get('policy', '?'))}): {pct(get(dep, 'success', 'success_rate'))} success, "
                     f"observation-to-command median {num(get(dep, 'obs_to_command_ms', 'median'))} ms, "
                     f"p99 {num(get(dep, 'obs_to_command_ms', 'p99'))} ms.")
    if facts:
        out += [" ".join(facts), ""]
    return "\n".join(out)


def write_readme(results: Results, path: Path) -> None:
    """Replace the ``## Results`` section of ``path`` (up to the next ``## `` heading)."""
    text = path.read_text()
    start = text.find("## Results\n")
    if start < 0:
        raise SystemExit(f"{path}: no '## Results' section to replace")
    end = text.find("\n## ", start + 1)
    path.write_text(text[:start] + readme_section(results) + ("\n" + text[end + 1:] if end >= 0 else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("bench/results"), help="folder of benchmark JSONs (default bench/results)")
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"), help="page to write (default docs/results.md)")
    parser.add_argument("--img", type=Path, default=None, help="folder for the PNG plots (default: img/ next to --out)")
    parser.add_argument("--headline", action="store_true", help="print only the headline success table (markdown) and write nothing")
    parser.add_argument("--readme", type=Path, default=None, help="also rewrite the '## Results' section of this README")
    args = parser.parse_args(argv)
    results = load(args.results)
    if args.readme is not None:
        write_readme(results, args.readme)
    if args.headline:
        print(headline_table(results))
        return 0
    img = args.img or args.out.parent / "img"
    page = build_page(results, args.out, img)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    pngs = [str(img / name) for name in PLOTS if (img / name).is_file()]
    print(f"wrote {args.out}" + (f" and {', '.join(pngs)}" if pngs else "") + f" from {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

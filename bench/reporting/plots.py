"""The page's PNG plots: success with intervals, latency, training curves (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

from bench.reporting.load import SuccessRow, order
from bench.reporting.spec import LATENCY_CASES, METHODS, latency_modes
from bench.reporting.text import finite, get


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
    rows = [r for r in rows if finite(r.rate)]
    if not rows:
        return None
    plt = _plt()
    tasks = list(dict.fromkeys(r.task for r in rows))
    methods = list(dict.fromkeys(r.method for r in sorted(rows, key=lambda r: order("", r.method))))
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
        for i, (mode, _) in enumerate(latency_modes(latency)):
            m, p = get(latency, key, mode, "median_ms"), get(latency, key, mode, "p99_ms")
            if finite(m) and m > 0:
                xs.append(i - 0.4 + width * (j + 0.5))
                med.append(m)
                up.append(max(0.0, p - m) if finite(p) else 0.0)
        ax.bar(xs, med, width, yerr=[[0] * len(up), up], capsize=3, label=f"{label} (median, bar to p99)")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.axhline(2.0, color="k", ls="--", lw=1, label="target: ONNX Runtime + RTI, state, median <= 2 ms")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    modes = latency_modes(latency)
    ax.set_xticks(range(len(modes)), [label.replace(", ", ",\n").replace(" + ", " +\n") for _, label in modes], fontsize=8)
    ax.set_ylabel("ms per chunk (batch 1, log)")
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_curves(curves: dict[str, list[dict]], path: Path) -> Path | None:
    """Each run's training loss (solid), validation loss (dots) and learning rate, one colour per run, the
    legend in a panel of its own so that it grows with the runs instead of covering the curves."""
    if not curves:
        return None
    plt = _plt()
    from matplotlib.lines import Line2D

    height = max(3.8, 0.15 * (len(curves) + 2) + 0.8)
    fig, (ax_loss, ax_lr, ax_key) = plt.subplots(1, 3, figsize=(13, height), dpi=100, gridspec_kw={"width_ratios": [2, 1, 1]})
    palette = plt.get_cmap("tab20")
    handles = [Line2D([], [], color="k", lw=1, label="train loss"), Line2D([], [], color="k", ls="--", marker="o", ms=3, lw=1, label="validation loss")]
    for i, (name, rows) in enumerate(curves.items()):
        color = palette(i % palette.N)
        train = [(r["step"], r["loss"]) for r in rows if r.get("event") == "train" and finite(r.get("loss"))]
        val = [(r["step"], r["val_loss"]) for r in rows if r.get("event") == "val" and finite(r.get("val_loss"))]
        lr = [(r["step"], r["lr"]) for r in rows if r.get("event") == "train" and finite(r.get("lr"))]
        if train:
            ax_loss.plot(*zip(*train), color=color, lw=1)
        if val:
            ax_loss.plot(*zip(*val), "o--", color=color, ms=3, lw=1)
        if lr:
            ax_lr.plot(*zip(*lr), color=color, lw=1)
        if train or val or lr:
            handles.append(Line2D([], [], color=color, lw=2, label=name))
    if ax_loss.get_lines():
        ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss (log)")
    ax_loss.grid(alpha=0.3, which="both")
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("learning rate")
    ax_lr.grid(alpha=0.3)
    ax_key.axis("off")
    ax_key.legend(handles=handles, loc="upper left", fontsize=7, frameon=False)
    return _save(fig, path)

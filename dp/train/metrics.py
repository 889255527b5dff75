"""Training metrics: one JSON object per line in ``metrics.jsonl``, a loss plot ``loss.png`` and,
optionally, the same figures as TensorBoard scalars in ``tensorboard/`` (``tensorboard --logdir RUN``).
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

from dp.errors import DpError

TENSORBOARD_DIR = "tensorboard"


class TensorBoardLog:
    """Every numeric field of a metrics row as a scalar ``<event>/<field>`` at the row's step."""

    def __init__(self, run_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run drops the events the killed run logged after its checkpoint
        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR), purge_step=purge_step, flush_secs=10)

    def log(self, row: dict[str, Any]) -> None:
        event, step = row.get("event", "metrics"), int(row.get("step", 0))
        for name, value in row.items():
            if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(f"{event}/{name}", value, step)

    def close(self) -> None:
        self.writer.close()


def open_tensorboard(run_dir: Path, enabled: bool | None, purge_step: int | None = None) -> TensorBoardLog | None:
    """A TensorBoard log when ``enabled`` (None: when the tensorboard package is installed), else None."""
    if enabled is False:
        return None
    if importlib.util.find_spec("tensorboard") is None:
        if enabled:
            raise DpError("train.tensorboard=true needs the tensorboard package: pip install 'dp[tensorboard]'")
        return None
    return TensorBoardLog(run_dir, purge_step)


def append_metrics(path: Path, row: dict[str, Any], tensorboard: TensorBoardLog | None = None) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row, allow_nan=False, default=float) + "\n")
    if tensorboard is not None:
        tensorboard.log(row)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics file; a line cut short by a kill is skipped."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def truncate_after(path: Path, step: int) -> None:
    """Drop rows logged after ``step`` (a resumed run re-logs them)."""
    rows = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def plot_loss(metrics: Path, out: Path) -> None:
    """Training and validation loss against step (log scale), written to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics)
    train = [(r["step"], r["loss"]) for r in rows if r.get("event") == "train" and math.isfinite(r.get("loss", math.nan))]
    val = [(r["step"], r["val_loss"]) for r in rows if r.get("event") == "val"]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if train or val:
        ax.set_yscale("log")
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = out.with_name(f".tmp-{out.name}")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(out)

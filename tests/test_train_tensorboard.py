"""`dp train` mirrors metrics.jsonl into a TensorBoard event file (train.tensorboard), and a resumed run keeps it consistent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("tensorboard", reason="needs the tensorboard extra: pip install -e '.[tensorboard]'")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from dp.cli import main as dp_main  # noqa: E402
from dp.testing.reach_store import make_store  # noqa: E402

pytestmark = pytest.mark.slow  # trains, simulates or runs processes: `pytest -m "not slow"` leaves it out


def _rows(run: Path, event: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["event"] == event]


def _scalars(run: Path) -> EventAccumulator:
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return events


def _train(store: Path, run: Path, *extra: str) -> None:
    assert dp_main(["train", "--data", str(store), "--preset", "tiny", "--out", str(run), "--no-progress",
                    "train.log_every=5", "train.val_every=10", "train.ckpt_every=10", *extra]) == 0


def test_event_file_holds_what_metrics_jsonl_holds(tmp_path):
    store = make_store(tmp_path / "reach.zarr", episodes=4, length=20)
    run = tmp_path / "run"
    _train(store, run, "train.steps=20", "train.tensorboard=true")
    events = _scalars(run)
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "train/samples_per_s", "val/val_loss"} <= set(tags)
    train = _rows(run, "train")
    logged = events.Scalars("train/loss")
    assert [e.step for e in logged] == [r["step"] for r in train] == [5, 10, 15, 20]
    assert [e.value for e in logged] == pytest.approx([r["loss"] for r in train], rel=1e-6)
    assert [e.value for e in events.Scalars("val/val_loss")] == pytest.approx([r["val_loss"] for r in _rows(run, "val")], rel=1e-6)
    # resumed to 30 steps: the event log continues at step 25, without doubled or stale steps
    _train(store, run, "train.steps=30", "train.tensorboard=true", "--resume")
    steps = [e.step for e in _scalars(run).Scalars("train/loss")]
    assert steps == [r["step"] for r in _rows(run, "train")] == [5, 10, 15, 20, 25, 30]


def test_off_means_no_event_file(tmp_path):
    store = make_store(tmp_path / "reach.zarr", episodes=2, length=12)
    _train(store, tmp_path / "run", "train.steps=5", "train.tensorboard=false")
    assert not (tmp_path / "run" / "tensorboard").exists() and (tmp_path / "run" / "metrics.jsonl").is_file()

"""Exact resume after SIGKILL, and two-process DDP (gloo on CPU) ending with identical weights."""

from __future__ import annotations

import pytest

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from dp.cli import main as dp_main
from dp.models import checkpoint_files as ckpt_files
from dp.testing.reach_store import make_store
from dp.train import checkpoint as ckpt

pytestmark = pytest.mark.slow  # trains, simulates or runs processes: `pytest -m "not slow"` leaves it out

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _latest_step(run: Path) -> int:
    latest = ckpt_files.latest_checkpoint(run)
    return int(latest.name.split("_")[1]) if latest else 0


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    store = make_store(tmp_path / "s.zarr", episodes=6, length=30)
    args = ["--data", str(store), "--preset", "tiny", "--no-progress", "train.steps=120", "train.ckpt_every=10",
            "train.log_every=10", "train.val_every=40", "train.batch_size=32"]
    whole = tmp_path / "whole"
    assert dp_main(["train", "--out", str(whole), *args]) == 0

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "dp", "train", "--out", str(killed), *args], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _latest_step(killed) < 30 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    at_kill = _latest_step(killed)
    assert 30 <= at_kill < 120
    for folder in (killed / "checkpoints").iterdir():  # every completed checkpoint is whole
        if folder.name.startswith("step_"):
            ckpt_files.load_weights(folder / ckpt_files.MODEL_FILE)
            ckpt.load_train_state(folder / ckpt_files.STATE_FILE)

    assert dp_main(["train", "--out", str(killed), "--resume", "--no-progress"]) == 0  # stores come from the run
    assert not [p for p in (killed / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    a, b = ckpt_files.load_weights(whole / ckpt_files.MODEL_FILE), ckpt_files.load_weights(killed / ckpt_files.MODEL_FILE)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "EMA weights differ after resume"
    raw_a = ckpt.load_train_state(whole / ckpt_files.STATE_FILE)["model"]
    raw_b = ckpt.load_train_state(killed / ckpt_files.STATE_FILE)["model"]
    assert all(torch.equal(raw_a[k], raw_b[k]) for k in raw_a)
    # the metrics of the resumed run continue the same curve (rows after the checkpoint were re-logged)
    losses = lambda run: {r["step"]: r["loss"] for r in _metrics(run) if r["event"] == "train"}  # noqa: E731
    assert losses(whole) == losses(killed)

    # a plain rerun never overwrites a run; a process torchrun restarted (--max-restarts) resumes by itself
    assert dp_main(["train", "--out", str(whole), *args]) == 1
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert dp_main(["train", "--out", str(whole), *args]) == 0
    assert ckpt_files.load_weights(whole / ckpt_files.MODEL_FILE).keys() == a.keys()


def test_two_process_gloo_run_ends_with_identical_weights(tmp_path):
    store = make_store(tmp_path / "s.zarr", episodes=4, length=30)
    run = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "dp", "train", "--data", str(store), "--preset", "tiny", "--out", str(run), "--nproc", "2",
         "--no-progress", "train.steps=20", "train.log_every=5", "train.val_every=20", "train.ckpt_every=10"],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _metrics(run)
    start = next(r for r in rows if r["event"] == "start")
    end = rows[-1]
    assert start["world_size"] == 2 and end["event"] == "end" and end["step"] == 20
    assert len(end["weights_sha256"]) == 2 and end["weights_sha256"][0] == end["weights_sha256"][1]
    state = ckpt.load_train_state(run / ckpt_files.STATE_FILE)
    assert len(state["rng"]) == 2 and state["batch_size_per_rank"] == 32
    assert "trained 20 steps" in proc.stdout  # rank 0 alone reports
    assert proc.stdout.count("trained 20 steps") == 1


def test_bad_nproc(tmp_path, capsys):
    assert dp_main(["train", "--out", str(tmp_path / "r"), "--data", "x", "--nproc", "0"]) == 1
    assert "--nproc" in capsys.readouterr().err

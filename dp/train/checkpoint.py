"""Checkpoints as the trainer writes them: atomically, with rotation, and read back to resume.

A run folder looks like::

    RUN/config.yaml             the run's configuration
    RUN/metrics.jsonl, loss.png
    RUN/checkpoints/step_0000200/  config.yaml, model.safetensors (EMA weights),
                                  normalizer.safetensors, train_state.pt, [goals.safetensors],
                                  checksums.json (the sha256 of each tensor file)
    RUN/latest -> checkpoints/step_0000200
    RUN/model.safetensors -> latest/model.safetensors   (and the other checkpoint files)

A checkpoint is written into a temporary folder and renamed into place (atomic), then ``latest``
is swapped by renaming a new symlink over it (atomic). A kill at any moment leaves every completed
checkpoint whole; the newest complete one is found by scanning, not by trusting the link. The
top-level links make the run folder itself a checkpoint folder (``Policy.load(RUN)``).
``checksums.json`` is written inside the temporary folder, so it lands with the files it covers.

The files' names, the goal table, the checksum list and reading a checkpoint live in
:mod:`dp.models.checkpoint_files` (the runtime reads checkpoints without the trainer); only
``train_state.pt`` is unpickled, here, with ``weights_only=True``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dp.config import Config
from dp.data.normalize import Normalizer
from dp.errors import DpError
from dp.models.checkpoint_files import (
    CKPT_DIR,
    LINKED_FILES,
    STATE_FILE,
    write_checksums,
    write_policy_files,
)

TMP_PREFIX = ".tmp-"


def _step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed over it (a kill leaves the old or the new file)."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_files(folder: Path) -> None:
    for file in folder.iterdir():
        with open(file, "rb+") as f:
            os.fsync(f.fileno())


def save_checkpoint(
    run_dir: Path,
    step: int,
    cfg: Config,
    ema_weights: dict[str, torch.Tensor],
    normalizer: Normalizer,
    train_state: dict[str, Any],
    goals: dict[str, np.ndarray] | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it, prune to the newest ``keep``."""
    ckpt_root = run_dir / CKPT_DIR
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / _step_dir_name(step)
    tmp = ckpt_root / f"{TMP_PREFIX}{final.name}.{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    write_policy_files(tmp, cfg, ema_weights, normalizer, goals, step)
    torch.save(train_state, tmp / STATE_FILE)
    write_checksums(tmp)
    _fsync_files(tmp)
    if final.exists():  # the same step saved again (e.g. the final save after a resume): replace it
        old = ckpt_root / f"{TMP_PREFIX}old-{final.name}.{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old)
    else:
        os.rename(tmp, final)
    _fsync_dir(ckpt_root)
    _point_latest(run_dir, final)
    _prune(ckpt_root, keep, final)
    return final


def _point_latest(run_dir: Path, target: Path) -> None:
    link = run_dir / "latest"
    tmp = run_dir / f"{TMP_PREFIX}latest.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(os.path.relpath(target, run_dir), tmp)
    os.replace(tmp, link)
    for name in LINKED_FILES:  # static links through `latest`; created once
        top = run_dir / name
        if not top.is_symlink() and (target / name).exists():
            if top.exists():
                top.unlink()
            os.symlink(os.path.join("latest", name), top)
    _fsync_dir(run_dir)


def _prune(ckpt_root: Path, keep: int, current: Path) -> None:
    done = sorted(p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith("step_"))
    for old in done[: max(0, len(done) - max(1, keep))]:
        if old != current:  # renamed away first, so a step_ folder is always whole or absent
            doomed = ckpt_root / f"{TMP_PREFIX}del-{old.name}.{os.getpid()}"
            os.rename(old, doomed)
            shutil.rmtree(doomed, ignore_errors=True)


def clean_partial(run_dir: Path) -> None:
    """Remove temporary leftovers of a save that was killed."""
    for folder in (run_dir, run_dir / CKPT_DIR):
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name.startswith(TMP_PREFIX):
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def load_train_state(path: Path) -> dict[str, Any]:
    """The resume state, unpickled with ``weights_only=True`` (tensors and plain containers only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DpError(f"{path}: cannot load the training state ({type(exc).__name__}: {exc})") from exc

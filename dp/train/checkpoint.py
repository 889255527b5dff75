"""Checkpoints: written atomically, loaded without unpickling anything but ``train_state.pt``.

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

``checksums.json`` (the sha256 of the four tensor files; ``config.yaml`` stays editable) is written
inside the temporary folder, so it lands with the files it covers;
:func:`verify_checkpoint` checks it before eval, export, the node (``Policy.load``) or a resume
read a file, and a mismatch is a one-line error naming the file. Checkpoints written before
checksums existed load with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from dp.config import Config, dump_config, load_config
from dp.data.normalize import Normalizer
from dp.errors import DpError

MODEL_FILE = "model.safetensors"
NORMALIZER_FILE = "normalizer.safetensors"
STATE_FILE = "train_state.pt"
CONFIG_FILE = "config.yaml"
GOALS_FILE = "goals.safetensors"
CHECKSUMS_FILE = "checksums.json"
LINKED_FILES = (MODEL_FILE, NORMALIZER_FILE, STATE_FILE, GOALS_FILE)
CKPT_DIR = "checkpoints"
TMP_PREFIX = ".tmp-"


def _step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def write_text_atomic(path: Path, text: str) -> None:
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


def save_goals(path: Path, table: dict[str, np.ndarray]) -> None:
    """Instruction -> language embedding table, as one (N, E) tensor + the instructions in metadata."""
    names = sorted(table)
    emb = torch.from_numpy(np.stack([np.asarray(table[n], dtype=np.float32) for n in names]))
    save_file({"lang_emb": emb}, str(path), metadata={"instructions": json.dumps(names)})


def load_goals(path: Path) -> dict[str, np.ndarray]:
    try:
        with safe_open(str(path), "np") as f:
            names = json.loads(f.metadata()["instructions"])
            emb = f.get_tensor("lang_emb")
    except Exception as exc:  # safetensors raises its own types for bad headers
        raise DpError(f"{path}: not a readable goal table ({type(exc).__name__}: {exc})") from exc
    if len(names) != len(emb):
        raise DpError(f"{path}: {len(names)} instructions for {len(emb)} embeddings")
    return dict(zip(names, emb))


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
    (tmp / CONFIG_FILE).write_text(dump_config(cfg))
    save_file({k: v.detach().contiguous().cpu() for k, v in ema_weights.items()}, str(tmp / MODEL_FILE), metadata={"step": str(step), "preset": cfg.preset})
    normalizer.save(tmp / NORMALIZER_FILE)
    torch.save(train_state, tmp / STATE_FILE)
    if goals:
        save_goals(tmp / GOALS_FILE, goals)
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


def file_sha256(path: Path) -> str:
    """The sha256 of a file, as hex."""
    h = hashlib.sha256()  # read in blocks (hashlib.file_digest needs Python 3.11)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def write_checksums(folder: Path) -> None:
    """Record the sha256 of a checkpoint folder's tensor files in its ``checksums.json``."""
    files = {name: file_sha256(folder / name) for name in LINKED_FILES if (folder / name).is_file()}
    (folder / CHECKSUMS_FILE).write_text(json.dumps({"algorithm": "sha256", "files": files}, indent=1) + "\n")


def verify_checkpoint(folder: Path, names: tuple[str, ...] = (MODEL_FILE, NORMALIZER_FILE, GOALS_FILE)) -> None:
    """Check the files ``names`` of a checkpoint folder (those present) against its ``checksums.json``:
    a DpError naming the first damaged or unlisted file; a warning for a checkpoint without checksums."""
    manifest = folder / CHECKSUMS_FILE
    if not manifest.is_file():
        warnings.warn(f"{folder}: no {CHECKSUMS_FILE} (written before checkpoints carried checksums): its files are not verified", stacklevel=2)
        return
    try:
        listed = json.loads(manifest.read_text()).get("files")
    except (ValueError, AttributeError) as exc:
        raise DpError(f"{manifest}: not a readable checksum list ({type(exc).__name__}: {exc})") from None
    if not isinstance(listed, dict):
        raise DpError(f"{manifest}: not a readable checksum list (no 'files' mapping)")
    for name in names:
        path = folder / name
        if not path.is_file():
            if name in listed:
                raise DpError(f"{path}: missing, though {CHECKSUMS_FILE} lists it")
            continue
        if name not in listed:
            raise DpError(f"{path}: not covered by {CHECKSUMS_FILE} (added after the checkpoint was written?)")
        if file_sha256(path) != listed[name]:
            raise DpError(f"{path}: checksum mismatch (its sha256 differs from {CHECKSUMS_FILE}): the file is damaged; "
                          "restore it or use another checkpoint")


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


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder of a run (None if there is none)."""
    root = run_dir / CKPT_DIR
    if not root.is_dir():
        return None
    done = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / STATE_FILE).is_file())
    return done[-1] if done else None


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder behind ``path``: a checkpoint folder, or a run folder (its latest)."""
    path = Path(path)
    if not path.exists():
        raise DpError(f"{path}: no such run or checkpoint folder")
    model = path / MODEL_FILE
    if model.exists():
        return model.resolve().parent  # follow the run's links once, so every file comes from one checkpoint
    latest = latest_checkpoint(path)
    if latest is not None:
        return latest
    raise DpError(f"{path}: no {MODEL_FILE} here and no checkpoint under {path / CKPT_DIR} (is training still at its first steps?)")


def load_checked_state(module: nn.Module, state: dict[str, torch.Tensor], source: str, cfg: Config | None = None) -> None:
    """Load ``state`` into ``module`` strictly; a mismatch is a DpError naming tensors and shapes."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        preset = f" (preset {cfg.preset!r}, d_model={cfg.model.d_model}, n_layers={cfg.model.n_layers}, n_experts={cfg.model.n_experts})" if cfg else ""
        parts = []
        if wrong:
            k, got, want = wrong[0]
            parts.append(f"tensor {k!r} has shape {list(got)}, the model{preset} expects {list(want)}" + (f" (+{len(wrong) - 1} more)" if len(wrong) > 1 else ""))
        if missing:
            parts.append(f"missing tensors {missing[:3]}" + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""))
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:3]}" + (f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else ""))
        raise DpError(f"{source}: weights do not fit the configured model: {'; '.join(parts)}. The checkpoint is from another preset or configuration.")
    module.load_state_dict(state)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise DpError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own types for corrupt files
        raise DpError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from exc


def load_train_state(path: Path) -> dict[str, Any]:
    """The resume state, unpickled with ``weights_only=True`` (tensors and plain containers only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DpError(f"{path}: cannot load the training state ({type(exc).__name__}: {exc})") from exc


def load_checkpoint_config(ckpt: Path) -> Config:
    return load_config(ckpt / CONFIG_FILE)

"""The files of a checkpoint folder: their names, the goal table, the checksum list, and reading them.

A checkpoint folder (``RUN/checkpoints/step_NNNNNNN/``, or a run folder through its top-level links)
holds ``config.yaml``, ``model.safetensors`` (EMA weights), ``normalizer.safetensors``,
``train_state.pt``, optionally ``goals.safetensors`` (instruction -> language embedding), and
``checksums.json``: the sha256 of each tensor file (``config.yaml`` stays editable).
:func:`verify_checkpoint` checks it before eval, export, the node (``Policy.load``) or a resume read
a file; a mismatch is a one-line error naming the file. Checkpoints written before checksums existed
load with a warning. The trainer writes these folders (:mod:`dp.train.checkpoint`); the runtime
reads them from here, without importing the trainer.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from dp.config import Config, dump_config, load_config
from dp.errors import DpError
from dp.files import sha256_file

if TYPE_CHECKING:
    from dp.data.normalize import Normalizer

MODEL_FILE = "model.safetensors"
NORMALIZER_FILE = "normalizer.safetensors"
STATE_FILE = "train_state.pt"
CONFIG_FILE = "config.yaml"
GOALS_FILE = "goals.safetensors"
CHECKSUMS_FILE = "checksums.json"
LINKED_FILES = (MODEL_FILE, NORMALIZER_FILE, STATE_FILE, GOALS_FILE)  # the tensor files: checksummed, linked from the run folder
CKPT_DIR = "checkpoints"


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


def write_policy_files(folder: Path, cfg: Config, weights: dict[str, torch.Tensor], normalizer: Normalizer,
                       goals: dict[str, np.ndarray] | None = None, step: int | None = None) -> None:
    """The files a runtime reads from a checkpoint folder: ``config.yaml``, ``model.safetensors``
    (``weights``: the EMA weights), ``normalizer.safetensors`` and, with ``goals``, ``goals.safetensors``
    (checksums: :func:`write_checksums`, once every tensor file is written)."""
    (folder / CONFIG_FILE).write_text(dump_config(cfg))
    metadata = {"preset": cfg.preset, **({"step": str(step)} if step is not None else {})}
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(folder / MODEL_FILE), metadata=metadata)
    normalizer.save(folder / NORMALIZER_FILE)
    if goals:
        save_goals(folder / GOALS_FILE, goals)


def write_checksums(folder: Path) -> None:
    """Record the sha256 of a checkpoint folder's tensor files in its ``checksums.json``."""
    files = {name: sha256_file(folder / name) for name in LINKED_FILES if (folder / name).is_file()}
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
        if sha256_file(path) != listed[name]:
            raise DpError(f"{path}: checksum mismatch (its sha256 differs from {CHECKSUMS_FILE}): the file is damaged; "
                          "restore it or use another checkpoint")


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
    """The tensors of a safetensors file; a DpError naming the file when it is missing or unreadable."""
    if not path.is_file():
        raise DpError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own types for corrupt files
        raise DpError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from exc


def load_checkpoint_config(ckpt: Path) -> Config:
    """The configuration a checkpoint folder was trained with."""
    return load_config(ckpt / CONFIG_FILE)

"""Average the weights of several checkpoints of one run into one policy folder (latest weight averaging).

Each checkpoint already holds EMA weights; averaging the last few of a run lengthens that average after
the fact (LAWA, Kaddour 2022; Karras et al. 2024 reconstruct longer EMAs from snapshots the same way).
The checkpoints must share their configuration, normaliser and goal table (one run's); the output is a
policy folder that `dp eval`, `dp export` and `dp node` read like any checkpoint (no training state: it
cannot be resumed). It is an experiment's tool: choose it against single checkpoints on validation seeds.

    python bench/average_checkpoints.py RUN/checkpoints/step_0005000 RUN/checkpoints/step_0006000 --out AVG
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dp.config import Config  # noqa: E402
from dp.errors import DpError  # noqa: E402
from dp.files import sha256_file  # noqa: E402
from dp.models.checkpoint_files import (CONFIG_FILE, GOALS_FILE, MODEL_FILE, NORMALIZER_FILE, load_checkpoint_config,  # noqa: E402
                                        load_weights, resolve_checkpoint, verify_checkpoint, write_checksums)


def _same_run(folders: list[Path]) -> Config:
    """The last checkpoint's configuration; a DpError naming the first checkpoint whose configuration,
    normaliser or goal table differs from the first's."""
    first = cfg = load_checkpoint_config(folders[0])
    for folder in folders[1:]:
        cfg = load_checkpoint_config(folder)
        for section in ("model", "data", "vocab"):  # the sampler settings (diffusion) may differ: the last one's are kept
            if getattr(cfg, section) != getattr(first, section):
                raise DpError(f"{folder}: its {section} configuration differs from {folders[0]}'s: average checkpoints of one run only")
        for name in (NORMALIZER_FILE, GOALS_FILE):
            here, there = folder / name, folders[0] / name
            if here.is_file() != there.is_file() or (here.is_file() and sha256_file(here) != sha256_file(there)):
                raise DpError(f"{here}: differs from {there}: average checkpoints of one run only")
    return cfg


def average_checkpoints(sources: list[str | Path], out: Path) -> Path:
    """Write the mean of the checkpoints' weights (in float64, stored in their dtype) to the policy folder ``out``."""
    if len(sources) < 2:
        raise DpError(f"averaging needs at least two checkpoints, got {len(sources)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DpError(f"{out}: exists and is not an empty folder (choose a new folder)")
    folders = [resolve_checkpoint(s) for s in sources]
    if len(set(folders)) < len(folders):
        raise DpError("the same checkpoint is listed twice")
    for folder in folders:
        verify_checkpoint(folder)
    cfg = _same_run(folders)
    weights = [load_weights(f / MODEL_FILE) for f in folders]
    for folder, w in zip(folders[1:], weights[1:]):
        if w.keys() != weights[0].keys() or any(w[k].shape != weights[0][k].shape for k in w):
            raise DpError(f"{folder / MODEL_FILE}: its tensors differ in names or shapes from {folders[0] / MODEL_FILE}")
    mean = {k: (sum(w[k].double() for w in weights) / len(weights)).to(weights[0][k].dtype) for k in weights[0]}
    out.mkdir(parents=True, exist_ok=True)
    save_file(mean, str(out / MODEL_FILE), metadata={"preset": cfg.preset, "averaged": json.dumps([str(f) for f in folders])})
    for name in (CONFIG_FILE, NORMALIZER_FILE, GOALS_FILE):
        if (folders[-1] / name).is_file():
            shutil.copyfile(folders[-1] / name, out / name)
    write_checksums(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint folders of one run (two or more)")
    parser.add_argument("--out", type=Path, required=True, help="the new policy folder (must not exist or be empty)")
    args = parser.parse_args(argv)
    try:
        print(average_checkpoints(args.checkpoints, args.out))
    except DpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

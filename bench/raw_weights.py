"""A checkpoint folder holding a training checkpoint's raw (non-EMA) weights, for the EMA ablation.

EMA never changes the training trajectory, only which weights are saved, so the raw weights at
step N are exactly what the same run without EMA would have saved. `dp eval` then runs them like
any checkpoint:

    python bench/raw_weights.py runs/can/checkpoints/step_0005000 --out runs/can_raw5000
    dp eval runs/can_raw5000 --task can --split val --episodes 50
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from dp.models.checkpoint_files import CONFIG_FILE, GOALS_FILE, MODEL_FILE, NORMALIZER_FILE, STATE_FILE, verify_checkpoint, write_checksums


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a checkpoint folder (runs/X/checkpoints/step_N) with train_state.pt")
    p.add_argument("--out", type=Path, required=True, help="new checkpoint folder (must not exist)")
    a = p.parse_args()
    if a.out.exists():
        sys.exit(f"error: {a.out} exists")
    verify_checkpoint(a.checkpoint)
    state = torch.load(a.checkpoint / STATE_FILE, map_location="cpu", weights_only=True)  # tensors and plain values only
    if "model" not in state:
        sys.exit(f"error: {a.checkpoint / STATE_FILE} has no 'model' weights")
    a.out.mkdir(parents=True)
    for name in (CONFIG_FILE, NORMALIZER_FILE, GOALS_FILE):
        if (a.checkpoint / name).is_file():
            shutil.copy2(a.checkpoint / name, a.out / name)
    save_file({k: v.contiguous() for k, v in state["model"].items()}, str(a.out / MODEL_FILE), metadata={"step": str(state.get("step")), "weights": "raw"})
    write_checksums(a.out)
    print(f"wrote {a.out} (raw weights of step {state.get('step')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

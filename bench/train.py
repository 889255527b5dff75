"""Training benchmark: samples/s of the `small` preset (state only, and two 84x84 cameras) through the
real data path (episode store -> windows -> DataLoader -> AdamW step + EMA) on this machine, plus total
and active parameters and FLOPs per denoising step of MoDE and of its dense twin (one expert as wide
as the top-k experts together, so equal active FLOPs). Prints JSON.

    python bench/train.py [--steps 20] [--preset small] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_json  # noqa: E402
from dp.config import Config, build_config  # noqa: E402
from dp.models.cost import measure_flops, param_counts  # noqa: E402
from dp.models.diffusion_policy import DiffusionPolicy  # noqa: E402
from dp.testing.reach_store import make_store  # noqa: E402
from dp.train.data import resolve  # noqa: E402
from dp.train.train_cmd import set_experts  # noqa: E402
from dp.train.trainer import Trainer  # noqa: E402


def samples_per_s(cfg: Config, store: Path, run: Path, steps: int, warmup: int = 3) -> dict:
    trainer = Trainer(cfg, [str(store)], run, resume=False, progress=False)
    done, t0 = 0, None
    while done < steps + warmup:
        for raw in trainer.loader:
            if done == warmup:
                t0 = time.perf_counter()
            trainer.train_step(trainer._to_device(raw, trainer.train_map))
            done += 1
            if done >= steps + warmup:
                break
    elapsed = time.perf_counter() - t0
    trainer.close()
    return {"samples_per_s": round(steps * trainer.batch_size / elapsed, 1), "batch_size": trainer.batch_size,
            "s_per_step": round(elapsed / steps, 4), "threads": torch.get_num_threads()}


def sizes(cfg: Config) -> dict:
    policy = DiffusionPolicy(cfg)
    return {**param_counts(policy), **measure_flops(policy)}


def dense_twin(cfg: Config) -> Config:
    """The same model with one expert as wide as the top-k experts together (`dp train --experts 1`)."""
    twin = copy.deepcopy(cfg)
    set_experts(twin, 1, widen=True)
    return twin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", help="preset to measure (default: small)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per case (after 3 warm-up steps)")
    parser.add_argument("--image-steps", type=int, default=3, help="timed steps with cameras (slow on CPU)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    out: dict = {"preset": args.preset, "device": "cuda" if torch.cuda.is_available() else "cpu"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        state_store = make_store(tmp / "state.zarr", episodes=20, length=100)
        image_store = make_store(tmp / "image.zarr", episodes=8, length=60, cameras=2, image_size=84)
        state_cfg = build_config(args.preset, ["train.val_every=1000000", "train.ckpt_every=1000000"])
        image_cfg = build_config(args.preset, ["data.images=true", "train.val_every=1000000", "train.ckpt_every=1000000"])
        out["state"] = samples_per_s(state_cfg, state_store, tmp / "run_state", args.steps)
        out["two_cameras_84"] = samples_per_s(image_cfg, image_store, tmp / "run_image", args.image_steps)
        for name, cfg, store in (("state", state_cfg, state_store), ("two_cameras_84", image_cfg, image_store)):
            resolved, _ = resolve(cfg, [str(store)])
            out[name]["mode"] = sizes(resolved)
            out[name]["dense_twin"] = sizes(dense_twin(resolved))
    write_json(out, args.json_out)


if __name__ == "__main__":
    main()

"""Where an image Push-T training step spends its time, on one thread. Prints JSON.

Through the training code itself (`dp.train.trainer.Trainer` on the Push-T image store, the
`pusht-image` preset plus overrides), each phase timed on the same real batches:

- data: one batch built in this process (`WindowDataset.__getitems__`: frame reads and decoding), what
  one loader worker does per batch;
- augmentation: the crop / shift of the batch's frames;
- encoder: the vision and state encoders, forward and backward (their share of the step);
- step: the whole `train_step` (encoders, the denoiser for every noise draw, the loss, backward,
  clipping, AdamW, EMA); the denoiser and optimiser are the step less the encoder.

    python bench/image_step.py --store PUSHT_IMG_ZARR [KEY=VALUE ...] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch, as `dp train` does

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import emit  # noqa: E402


def _seconds(fn, n: int, warmup: int = 2) -> float:
    for i in range(warmup):
        fn(i)
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n


def profile(store: Path, overrides: list[str], steps: int) -> dict[str, Any]:
    import numpy as np
    import torch

    from dp.config import build_config
    from dp.models.encoders import crop, random_shift
    from dp.train.trainer import Trainer

    torch.set_num_threads(1)
    cfg = build_config("pusht-image", ["train.val_every=1000000000", "train.ckpt_every=1000000000", "train.num_workers=0",
                                       "train.threads=1", *overrides])
    with tempfile.TemporaryDirectory(prefix="dp-image-step-") as tmp:
        trainer = Trainer(cfg, [str(store)], Path(tmp) / "run", resume=False, progress=False)
        data, B = trainer.data.train, trainer.batch_size
        idx = np.random.default_rng(0).integers(0, len(data), size=B * 4).tolist()
        raws = [data.__getitems__(idx[i * B:(i + 1) * B]) for i in range(4)]
        data_s = _seconds(lambda i: data.__getitems__(idx[(i % 4) * B:(i % 4 + 1) * B]), 4, warmup=0)
        batches = [trainer._to_device(r, trainer.train_map) for r in raws]
        step_s = _seconds(lambda i: trainer.train_step(batches[i % 4]), steps)
        policy, mcfg = trainer.policy, trainer.cfg.model
        policy.train()

        def encode(i: int) -> None:
            b = batches[i % 4]
            policy.encode(b["obs"], b.get("task_id"), b.get("lang_emb")).sum().backward()
            policy.zero_grad(set_to_none=True)

        encoder_s = _seconds(encode, steps)
        frames = {k: v.reshape(-1, *v.shape[2:]) for k, v in batches[0]["obs"].items() if k in policy.image_keys}

        def augment(i: int) -> None:
            for f in frames.values():
                if mcfg.aug_crop:
                    f = crop(f, mcfg.aug_crop, random=True)
                random_shift(f, mcfg.aug_shift)

        aug_s = _seconds(augment, steps)
        trainer.close()
    ms = lambda s: round(1000 * s, 1)  # noqa: E731
    return {"overrides": overrides, "batch_size": B, "noise_draws": trainer.cfg.train.noise_draws,
            "windows_per_s": round(B / step_s, 1), "step_ms": ms(step_s), "data_ms_one_core": ms(data_s),
            "augment_ms": ms(aug_s), "encoder_fwd_bwd_ms": ms(encoder_s), "denoiser_and_optimiser_ms": ms(step_s - encoder_s),
            "encoder_share": round(encoder_s / step_s, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True, help="the Push-T image store (dp import dp-zarr ... --card datasets/pusht.yaml)")
    parser.add_argument("--steps", type=int, default=6, help="timed repetitions of each phase (default 6)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON here")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the pusht-image preset")
    args = parser.parse_args()
    t0 = time.perf_counter()
    emit({"bench": "image_step", "preset": "pusht-image", "threads": 1, **profile(args.store, args.overrides, args.steps)}, t0, args.json_out)


if __name__ == "__main__":
    main()

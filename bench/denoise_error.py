"""Where a policy denoises: its denoiser's error on held-out windows at each noise level (issue 37).

For each sigma, the demonstrated chunks x0 of the checkpoint's validation windows are noised,
x = x0 + sigma * n, and denoised once, D(x; sigma); the row gives the RMSE of D against x0 (normalised
action units) and that RMSE over sigma: 1 means the denoiser removes none of the noise (returning x
does as well), 0 that it removes all of it. ``train_share_below`` is the share of training sigmas
below that sigma (the policy's log-logistic training distribution). Prints JSON.

    python bench/denoise_error.py runs/pusht/checkpoints/step_0005000 --data data/pusht_kp.zarr
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_json  # noqa: E402
from dp.diffusion.schedules import log_logistic_cdf  # noqa: E402
from dp.infer.policy import Policy  # noqa: E402
from dp.train.data import build_data, open_stores  # noqa: E402

SIGMAS = (0.001, 0.0035, 0.012, 0.043, 0.15, 0.53, 1.86, 6.5)  # MoDE's 10-step exponential schedule's range


def denoising_error(denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor, sigmas, seed: int = 0,
                    train: tuple[float, float] | None = None) -> list[dict[str, float]]:
    """One row per sigma: RMSE of ``denoise(x0 + sigma n, sigma)`` against ``x0``, the RMSE over sigma and,
    with ``train`` = (loc, scale) of log sigma, the share of training sigmas below sigma."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for sigma in sigmas:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        levels = torch.full((x0.shape[0],), float(sigma), dtype=x0.dtype)
        rmse = (denoise(x0 + sigma * noise, levels) - x0).pow(2).mean().sqrt().item()
        row = {"sigma": float(sigma), "rmse": rmse, "rmse_over_sigma": rmse / sigma}
        if train:
            row["train_share_below"] = log_logistic_cdf(sigma, *train)
        rows.append(row)
    return rows


def checkpoint_error(checkpoint: str, data: list[str] | None, windows: int, sigmas, seed: int) -> dict[str, Any]:
    """:func:`denoising_error` of a checkpoint (EMA weights) on up to ``windows`` of its validation windows."""
    policy = Policy.load(checkpoint)
    model, cfg = policy.model, policy.cfg
    windows_of = build_data(cfg, open_stores(data or cfg.data.stores), policy.normalizer)
    held_out = windows_of.val
    if held_out is None or len(held_out) == 0:
        raise SystemExit(f"{checkpoint}: its stores have no validation episodes (data.val_fraction)")
    index = torch.linspace(0, len(held_out) - 1, min(windows, len(held_out))).round().long().tolist()
    batch = held_out.__getitems__(index)
    task_id = windows_of.val_task_map[batch["task_id"]]  # the store's task index -> the policy's vocabulary
    with torch.no_grad():
        cond = model.encode(batch["obs"], task_id, batch.get("lang_emb"))
        rows = denoising_error(lambda x, s: model.edm.denoise(model.net, cond, x, s)[0], batch["action"].float(), sigmas, seed,
                               (model.edm.train_loc, model.edm.train_scale))
    return {"checkpoint": checkpoint, "windows": len(index), "train_loc": model.edm.train_loc,
            "train_scale": model.edm.train_scale, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="checkpoint or run folders")
    parser.add_argument("--data", nargs="*", help="the stores the policies trained on (default: the paths in their config)")
    parser.add_argument("--windows", type=int, default=512, help="validation windows (default 512)")
    parser.add_argument("--sigmas", default=",".join(map(str, SIGMAS)), help="noise levels, comma-separated")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (the same for every checkpoint)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sigmas = [float(s) for s in args.sigmas.split(",")]
    result = {"bench": "denoise_error", "sigmas": sigmas,
              "policies": [checkpoint_error(c, args.data, args.windows, sigmas, args.seed) for c in args.checkpoints]}
    write_json(result, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Image Push-T recipe choices at equal CPU time: which choice learns the most per CPU-minute? Prints JSON.

Each variant is the `pusht-image` preset plus overrides, trained on Diffusion Policy's Push-T images with
ONE thread for the same CPU budget: its step time is measured first (bench/image_step.py: a few
`train_step`s through the Trainer itself), its step count set to budget / step time (the cosine schedule then ends at the budget),
and `dp train` runs it to the end. Reported per variant: the step time, windows/s, steps, and the EMA
weights' validation figures at the end on held-out demonstration episodes (diffusion loss at fixed
sigmas and noise, and the MSE of sampled chunks against the demonstrations, normalised action units).
Rollout scores on validation seeds for the chosen recipe are in bench/pusht.py.

Step times are measured one variant at a time; the trainings then run two at a time (one thread each,
so the machine's two cores are both busy, the same for every variant); a variant whose run already finished is read back, not retrained (--work keeps them).

    python bench/image_recipe.py --store PUSHT_IMG_ZARR --work WORK --budget-min 14 [--only NAME ...]
    python bench/image_recipe.py --store PUSHT_IMG_ZARR --work WORK --quick        # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import emit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# name -> overrides of the pusht-image preset
VARIANTS: dict[str, list[str]] = {
    "preset": [],
    "crop84": ["model.aug_crop=84", "model.aug_shift=0", "model.image_size=null"],
    "crop84_resize64": ["model.aug_crop=84", "model.aug_shift=0", "model.image_size=64"],
    "draws2": ["train.noise_draws=2"],
    "draws4": ["train.noise_draws=4"],
    "experts256": ["model.expert_hidden=256"],
    "avgpool": ["model.vision_pool=avg"],
    "wide": ["model.vision_channels=[64,128,256]"],
    "obs1": ["data.obs_horizon=1"],
    "lr1e-3": ["train.lr=1.0e-3"],
}
COMMON = ["train.threads=1", "train.num_workers=0", "train.val_batches=16", "train.log_every=25", "train.warmup_steps=100"]


def preset_recipe() -> dict[str, Any]:
    """The `pusht-image` preset's settings that the variants change (the baseline of this round)."""
    from dp.config import load_preset

    cfg = load_preset("pusht-image")
    return {"image_size": cfg.model.image_size, "aug_crop": cfg.model.aug_crop, "aug_shift": cfg.model.aug_shift,
            "expert_hidden": cfg.model.expert_hidden, "vision_channels": cfg.model.vision_channels,
            "vision_pool": cfg.model.vision_pool, "obs_horizon": cfg.data.obs_horizon, "lr": cfg.train.lr}


def step_seconds(store: Path, overrides: list[str], steps: int = 12) -> float:
    """Seconds per training step of this variant (one thread), as bench/image_step.py measures it: the
    Trainer's own `train_step` on real batches, in a process of its own."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, str(ROOT / "bench" / "image_step.py"), "--store", str(store), "--steps", str(steps), *COMMON, *overrides]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"timing {overrides} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)["step_ms"] / 1000


def final_row(run: Path) -> dict[str, Any] | None:
    """The finished run's last validation and its training wall time, or None if it did not finish."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    end = [r for r in rows if r.get("event") == "end"]
    vals = [r for r in rows if r.get("event") == "val"]
    if not end or not vals:
        return None
    return {"val_loss": round(vals[-1]["val_loss"], 5), "val_action_mse": round(vals[-1]["val_action_mse"], 5),
            "train_wall_s": round(end[-1]["wall_s"], 1), "steps": end[-1]["step"]}


def plan_variant(name: str, store: Path, work: Path, budget_s: float, batch: int | None) -> dict[str, Any]:
    """The variant's step time and step count (measured once, with nothing else of this bench running)."""
    plan_path = work / f"{name}.plan.json"
    if plan_path.is_file():
        return json.loads(plan_path.read_text())
    s = step_seconds(store, VARIANTS[name] + ([f"train.batch_size={batch}"] if batch else []))
    plan = {"s_per_step": round(s, 4), "steps": max(20, int(budget_s / s)), "load_average_1min": round(os.getloadavg()[0], 2)}
    work.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(json.dumps(plan))
    return plan


def run_variant(name: str, store: Path, work: Path, plan: dict[str, Any], batch: int | None) -> dict[str, Any]:
    overrides = VARIANTS[name] + ([f"train.batch_size={batch}"] if batch else [])
    run = work / name
    result = final_row(run)
    if result is None:
        steps = plan["steps"]
        argv = ["train", "--data", str(store), "--preset", "pusht-image", "--out", str(run), "--no-progress",
                *[o for o in [*COMMON, *overrides, f"train.steps={steps}", f"train.val_every={steps}",
                                         f"train.ckpt_every={max(1, steps // 4)}"]]]
        if (run / "checkpoints").is_dir():
            argv.append("--resume")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run([sys.executable, "-m", "dp.cli", *argv], capture_output=True, text=True, env=env, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"dp {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
        result = final_row(run)
    batch_size = batch or 64
    return {"name": name, "overrides": overrides, **plan, "windows_per_s": round(batch_size / plan["s_per_step"], 1), **(result or {}),
            "command": "dp train --data STORE --preset pusht-image --out RUN " + " ".join(f"{o}" for o in [*COMMON, *overrides])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True, help="the Push-T image store (dp import dp-zarr ... --card datasets/pusht.yaml)")
    parser.add_argument("--work", type=Path, required=True, help="folder for the variants' runs (kept; finished variants are read back)")
    parser.add_argument("--budget-min", type=float, default=14.0, help="CPU minutes of training per variant (default 14)")
    parser.add_argument("--only", nargs="*", choices=sorted(VARIANTS), help="these variants (default: all)")
    parser.add_argument("--parallel", type=int, default=2, help="variants trained at once, one thread each (default 2)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: two variants, 20 steps, batch 8")
    parser.add_argument("--json-out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    t0 = time.perf_counter()
    names = ["preset", "draws2"] if args.quick else (args.only or list(VARIANTS))
    budget_s = 1.0 if args.quick else args.budget_min * 60
    batch = 8 if args.quick else None
    plans = {n: plan_variant(n, args.store, args.work, budget_s, batch) for n in names}  # one at a time: clean step times
    with ThreadPoolExecutor(args.parallel) as pool:
        rows = list(pool.map(lambda n: run_variant(n, args.store, args.work, plans[n], batch), names))
    best = min((r for r in rows if "val_action_mse" in r), key=lambda r: r["val_action_mse"], default=None)
    out = {"bench": "image_recipe", "preset": "pusht-image", "preset_recipe": preset_recipe(), "budget_cpu_min": round(budget_s / 60, 2), "threads_per_variant": 1,
           "parallel": args.parallel, "variants": rows, "lowest_val_action_mse": best["name"] if best else None}
    emit(out, t0, args.json_out)


if __name__ == "__main__":
    main()

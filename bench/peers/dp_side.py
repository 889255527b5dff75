"""dp's side of bench/peers/compare_lerobot.py; runs in dp's environment and prints one JSON line per
call, with the process's peak RSS (each call is its own process, so the figure is that phase's).

    python dp_side.py throughput --store STORE --batch 64 --steps 30 [--save RUN] [-o model.d_model=128 ...]
    python dp_side.py latency --run RUN --calls 200                    # torch Policy.predict_chunk
    python dp_side.py latency --onnx DIR --calls 200 [--rti]          # numpy + onnxruntime only
    python dp_side.py train --store STORE --budget-s 1200 --steps-planned N --out RUN
    python dp_side.py eval --run RUN --seeds 1,2,3 [--budget-s S]      # `dp eval`'s rollout, per seed

``--preset`` (size, throughput, train) picks the preset: ``pusht`` (state: the keypoint store of
datasets/pusht_keypoints.yaml, the default) or ``pusht-image`` (the 96x96 view + agent position: the
store of datasets/pusht.yaml); eval renders the cameras the policy observes, as `dp eval` does.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch, as `dp train` does
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # dp from this checkout

import numpy as np

PRESET = "pusht"  # dp's state Push-T preset (agent_pos + 9 keypoints, 2 obs, 16 predicted, 8 executed)
# (pusht-image: the 96x96 top view + agent_pos, the same chunking)


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def trainer(store: Path, run: Path, batch: int | None, steps: int, overrides: list[str], preset: str = PRESET):
    """dp's Trainer of ``preset`` on ``store``, 1 thread, data loaded in this process; ``batch`` None
    keeps the preset's batch size."""
    from dp.config import build_config
    from dp.train.trainer import Trainer

    sized = [] if batch is None else [f"train.batch_size={batch}"]
    cfg = build_config(preset, [*sized, f"train.steps={steps}", "train.threads=1",
                                "train.val_every=1000000000", "train.ckpt_every=1000000000", "train.num_workers=0", *overrides])
    return Trainer(cfg, [str(store)], run, resume=False, progress=False)


def batches(t):
    while True:
        for raw in t.loader:
            yield raw


def cmd_throughput(a) -> dict:
    import tempfile

    from dp.models.cost import param_counts

    with tempfile.TemporaryDirectory() as tmp:
        t = trainer(a.store, a.save or Path(tmp) / "run", a.batch, a.steps + a.warmup, a.override, a.preset)
        it = batches(t)
        for _ in range(a.warmup):
            t.train_step(t._to_device(next(it), t.train_map))
        data_s = compute_s = 0.0
        cpu0 = time.process_time()
        for _ in range(a.steps):
            t0 = time.perf_counter()
            raw = t._to_device(next(it), t.train_map)
            t1 = time.perf_counter()
            t.train_step(raw)
            data_s += t1 - t0
            compute_s += time.perf_counter() - t1
        cpu = time.process_time() - cpu0
        if a.save:
            t.step = a.steps + a.warmup
            t.save()
        total = data_s + compute_s
        import torch

        return {"samples_per_s": round(a.steps * a.batch / total, 1), "s_per_step": round(total / a.steps, 4),
                "cpu_s_per_step": round(cpu / a.steps, 4), "samples_per_cpu_s": round(a.steps * a.batch / cpu, 1),
                "data_s_per_step": round(data_s / a.steps, 4), "compute_s_per_step": round(compute_s / a.steps, 4),
                "batch_size": t.cfg.train.batch_size, "steps": a.steps, "warmup": a.warmup, **param_counts(t.policy),
                "overrides": a.override, "threads": torch.get_num_threads()}


def observation(keys: list[str], shapes: dict, seed: int = 0, image_keys: list[str] = ()) -> dict[str, np.ndarray]:
    """One Push-T-like observation: positions in pixels, images uint8 (H, W, C) as the task renders them."""
    rng = np.random.default_rng(seed)
    out = {k: rng.uniform(50, 450, shapes[k]).astype(np.float32) for k in keys}
    out.update({k: rng.integers(0, 256, shapes[k], dtype=np.uint8) for k in image_keys})
    return out


def timed(fn, calls: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    times, cpu0 = [], time.process_time()
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    cpu = time.process_time() - cpu0
    ms = np.array(times) * 1e3
    return {"median_ms": round(float(np.median(ms)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "cpu_ms_mean": round(cpu / calls * 1e3, 3), "calls": calls}


def cmd_latency(a) -> dict:
    if a.onnx:  # numpy + onnxruntime alone: what runs on the robot
        from dp.infer.onnx_policy import OnnxPolicy

        policy = OnnxPolicy.load(a.onnx, rti=a.rti, threads=1)
        obs = observation(policy.lowdim_keys, {k: v for k, v in policy.shapes.items()}, image_keys=policy.image_keys)
        policy.reset()
        policy.predict_chunk(obs)  # with RTI the first chunk is full, every later one warm
        out = timed(lambda: policy.predict_chunk(obs), a.calls, a.warmup)
        out["runtime"] = "onnxruntime + RTI" if a.rti else "onnxruntime"
        out["sampler_steps"] = policy.spec["rti"]["steps"] if a.rti else policy.spec["sampler"]["steps"]
    else:
        import torch

        from dp.infer.policy import Policy

        torch.set_num_threads(1)
        policy = Policy.load(a.run)
        obs = observation(policy.lowdim_keys, policy.shapes, image_keys=policy.image_keys)
        policy.reset()
        out = timed(lambda: policy.predict_chunk(obs), a.calls, a.warmup)
        out.update(runtime="torch (eager, experts routed)", threads=torch.get_num_threads(), sampler_steps=policy.steps)
    return out


def cmd_size(a) -> dict:
    """Parameters and forward FLOPs per sample and denoising step (torch's flop counter); an image
    policy also gives its observation encoder's FLOPs per sample (once per chunk, all observed steps)."""
    from dp.config import build_config
    from dp.models.diffusion_policy import DiffusionPolicy
    from dp.models.cost import measure_flops, param_counts
    from dp.train.data import resolve

    cfg, _ = resolve(build_config(a.preset, a.override), [str(a.store)])
    policy = DiffusionPolicy(cfg)
    flops = measure_flops(policy)
    out = {**param_counts(policy), "flops_per_sample_step": flops["flops_per_step"]}
    if policy.image_keys:
        out["encoder_flops_per_sample"] = flops["encoder_flops"]
    return out


def cmd_train(a) -> dict:
    t = trainer(a.store, a.out, a.batch, a.steps_planned, a.override, a.preset)
    it = batches(t)
    t0, losses = time.perf_counter(), []
    while t.step < a.steps_planned and time.perf_counter() - t0 < a.budget_s:
        out = t.train_step(t._to_device(next(it), t.train_map))
        t.step += 1
        t.batch_in_epoch += 1
        losses.append(float(out["loss"]))
    wall = time.perf_counter() - t0
    t.save()
    return {"steps": t.step, "steps_planned": a.steps_planned, "wall_s": round(wall, 1), "batch_size": t.cfg.train.batch_size,
            "final_loss_mean_50": round(float(np.mean(losses[-50:])), 4), "run": str(a.out)}


def cmd_eval(a) -> dict:
    """The rollouts of `dp eval --task pusht` (``dp.sim.rollout.run_episode``) on the given seeds, starting
    no new episode after ``--budget-s`` seconds. As `dp eval`, the environment renders the cameras the
    policy observes at the task's size (Push-T: the 96x96 top view, gym-pusht's ``pixels_agent_pos``)."""
    import torch

    from dp.eval.evaluate import check_fit, policy_cameras
    from dp.infer.policy import Policy
    from dp.sim.rollout import run_episode
    from dp.sim.tasks import get_task

    torch.set_num_threads(1)
    policy = Policy.load(a.run)
    spec = get_task("pusht")
    check_fit(policy, spec)
    env = spec.make_env(policy_cameras(policy, spec), None)
    episodes, t0 = [], time.perf_counter()
    for seed in a.seeds:
        if time.perf_counter() - t0 > a.budget_s:
            break
        ep = run_episode(env, policy, seed, record=False)
        episodes.append({"seed": int(seed), "score": float(ep.score), "success": bool(ep.success), "steps": int(ep.length)})
    env.close()
    return {"episodes": episodes, "wall_s": round(time.perf_counter() - t0, 1), "sampler_steps": policy.steps,
            "cameras": list(env.cameras)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    preset = {"default": PRESET, "help": f"dp preset (default {PRESET}; pusht-image for the image policy)"}
    for name in ("throughput", "train"):
        p = sub.add_parser(name)
        p.add_argument("--store", type=Path, required=True,
                       help="the Push-T store (dp import ... --card pusht_keypoints for pusht, --card pusht for pusht-image)")
        p.add_argument("--preset", **preset)
        p.add_argument("--batch", type=int, default=None, help="training batch (default: the preset's)")
        p.add_argument("-o", "--override", action="append", default=[], help="config override (section.key=value)")
    sub.choices["throughput"].add_argument("--steps", type=int, default=30)
    sub.choices["throughput"].add_argument("--warmup", type=int, default=3)
    sub.choices["throughput"].add_argument("--save", type=Path, help="also save a checkpoint here (for the latency runs)")
    sub.choices["train"].add_argument("--budget-s", type=float, required=True)
    sub.choices["train"].add_argument("--steps-planned", type=int, required=True, help="the LR schedule's length")
    sub.choices["train"].add_argument("--out", type=Path, required=True)
    p = sub.add_parser("eval")
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], required=True)
    p.add_argument("--budget-s", type=float, default=float("inf"), help="start no new episode after this many seconds")
    p = sub.add_parser("size")
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--preset", **preset)
    p.add_argument("-o", "--override", action="append", default=[])
    p = sub.add_parser("latency")
    p.add_argument("--run", type=Path, help="a run / checkpoint folder (torch)")
    p.add_argument("--onnx", type=Path, help="an exported folder (onnxruntime)")
    p.add_argument("--rti", action="store_true")
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--warmup", type=int, default=5)
    a = parser.parse_args()
    out = {"throughput": cmd_throughput, "latency": cmd_latency, "train": cmd_train, "size": cmd_size, "eval": cmd_eval}[a.cmd](a)
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out))


if __name__ == "__main__":
    main()

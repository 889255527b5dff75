"""Inference latency per chunk (batch 1) and the RTI warm-start check; prints JSON.

Latency: the ``small`` preset (random weights time the same as trained ones), state only and with
two 84x84 cameras; median and p99 over ``--calls`` chunks of

- ``eager_uncached``: the torch Policy, 10-step sampling through the router (``predict_chunk``);
- ``cached``: the same in torch with experts cached (the graph that is exported);
- ``cached_rti``: cached, warm-started from a guess (RTI steps only);
- ``onnx_full`` / ``onnx_rti``: ``dp.infer.OnnxPolicy.predict_chunk`` on the exported folder.

Also FLOPs per chunk (torch's flop counter): uncached, cached, cached RTI, and the dense twin (one
expert as wide as all four: equal total parameters). Targets (state, small): ONNX Runtime + RTI
median <= 2 ms and >= 10x faster than eager uncached sampling.

RTI check (``--rti-run RUN --rti-data STORE``, or by default a tiny policy trained here for a minute
on a synthetic store): on held-out episodes, warm chunks against the demonstrations and against full
sampling, and how an error in the guess shrinks over the warm steps (contractivity). ``--rti-sweep``
evaluates a grid of (steps, start sigma) to choose the defaults.

    PYTHONPATH=. python3 bench/latency.py [--calls 200] [--threads 1] [--skip-rti-check]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dp.config import Config, build_config  # noqa: E402
from dp.data.normalize import Normalizer  # noqa: E402
from dp.infer.onnx_export import build_graphs, example_inputs, export_policy  # noqa: E402
from dp.infer.onnx_policy import OnnxPolicy  # noqa: E402
from dp.infer.policy import Policy  # noqa: E402
from dp.infer.rti import RTISettings, evaluate_warm_starts  # noqa: E402
from dp.models.diffusion_policy import DiffusionPolicy  # noqa: E402

LOWDIM = {"robot0_eef_pos": [3], "robot0_eef_quat": [4], "robot0_gripper_qpos": [2], "object": [10]}
CAMERAS = ["agentview_image", "robot0_eye_in_hand_image"]


def preset_policy(preset: str, cameras: bool, overrides: list[str] | None = None, seed: int = 0) -> Policy:
    """A torch Policy of ``preset`` for the simulator's lift keys, random weights (routers included),
    a normaliser over [-1, 1] for every key."""
    torch.manual_seed(seed)
    cfg: Config = build_config(preset, ["model.goal=task", *(overrides or [])])
    cfg.data.lowdim_keys = list(LOWDIM)
    cfg.data.shapes = dict(LOWDIM)
    if cameras:
        cfg.data.image_keys = list(CAMERAS)
        cfg.data.shapes.update({k: [84, 84, 3] for k in CAMERAS})
    cfg.data.action_dim = 7
    cfg.vocab.tasks = ["lift"]
    model = DiffusionPolicy(cfg)
    with torch.no_grad():  # a trained-looking model: routers with preferences, a non-zero head
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (1.0 if "router" in name else 0.02))
    stats = {k: {"min": -np.ones(v[0]), "max": np.ones(v[0])} for k, v in LOWDIM.items()}
    stats["action"] = {"min": -np.ones(7), "max": np.ones(7)}
    return Policy(model, Normalizer(stats, {"action": [6]}))


def timed(fn, calls: int, warmup: int = 10) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    return {"median_ms": round(float(np.median(ms)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3), "calls": calls}


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops())


def one_observation(policy: Policy) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    obs = {k: rng.uniform(-1, 1, v).astype(np.float32) for k, v in LOWDIM.items()}
    obs.update({k: rng.integers(0, 256, (84, 84, 3), dtype=np.uint8) for k in policy.image_keys})
    return obs


def latency_section(cameras: bool, calls: int, rti: RTISettings, threads: int, workdir: Path) -> dict:
    policy = preset_policy("small", cameras)
    obs = one_observation(policy)
    full, warm = build_graphs(policy, None, rti)
    inputs_full = [torch.from_numpy(v) for v in example_inputs(policy, False).values()]
    inputs_warm = [torch.from_numpy(v) for v in example_inputs(policy, True).values()]
    out = workdir / ("cameras" if cameras else "state")
    export_policy(policy, out, rti=rti, control_freq=20.0, source="bench: random small preset")
    onnx_full = OnnxPolicy.load(out, rti=False, threads=threads)
    onnx_rti = OnnxPolicy.load(out, rti=True, threads=threads)
    onnx_rti.predict_chunk(obs)  # the first chunk is full; every later one is warm

    with torch.no_grad():
        result = {
            "eager_uncached": timed(lambda: policy.predict_chunk(obs), calls),
            "cached": timed(lambda: full(*inputs_full), calls),
            "cached_rti": timed(lambda: warm(*inputs_warm), calls),
        }
    result["onnx_full"] = timed(lambda: onnx_full.predict_chunk(obs), calls)
    result["onnx_rti"] = timed(lambda: onnx_rti.predict_chunk(obs), calls)
    result["speedup_onnx_rti_vs_eager"] = round(result["eager_uncached"]["median_ms"] / result["onnx_rti"]["median_ms"], 1)

    dense = preset_policy("small", cameras, ["model.n_experts=1", "model.top_k=1", f"model.expert_hidden={4 * policy.cfg.model.expert_hidden}"])
    obs_t = {k: torch.from_numpy(np.asarray(v)[None, None]) for k, v in obs.items()}
    goal = {"task_id": torch.zeros(1, dtype=torch.long)}
    noise = torch.randn(1, policy.action_horizon, policy.action_dim)
    result["flops_per_chunk"] = {
        "uncached": flops(lambda: policy.model.sample(obs_t, noise=noise, **goal)),
        "cached": flops(lambda: full(*inputs_full)),
        "cached_rti": flops(lambda: warm(*inputs_warm)),
        "dense_twin_uncached": flops(lambda: dense.model.sample(obs_t, noise=noise, **goal)),
    }
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    result["params"] = {"mode_total": params(policy.model), "dense_twin_total": params(dense.model)}
    result["onnx_bytes"] = {name: (out / name).stat().st_size for name in ("policy.onnx", "policy_warm.onnx")}
    return result


def rti_check(run: str | None, data: str | None, settings: list[RTISettings], workdir: Path, max_episodes: int) -> dict:
    """Warm starts on held-out episodes of ``data`` for the policy of ``run`` (trained here if None)."""
    from dp.data.sampler import split_episodes
    from dp.data.store import EpisodeStore

    trained_here = run is None
    if trained_here:
        from dp.cli import main as dp_main
        from dp.train.synthetic import make_store

        data = str(make_store(workdir / "synthetic.zarr", episodes=40, length=40, tasks=("reach", "retreat"), seed=1))
        run = str(workdir / "run")
        with contextlib.redirect_stdout(sys.stderr):  # stdout is the JSON report
            rc = dp_main(["train", "--data", data, "--preset", "tiny", "--out", run, "--no-progress", "train.steps=1500", "data.val_fraction=0.2"])
        if rc != 0:
            raise SystemExit(f"training the RTI-check policy failed (exit {rc})")
    policy = Policy.load(run)
    store = EpisodeStore.open(data, mode="r")
    _, held_out = split_episodes(len(store), policy.cfg.data.val_fraction, policy.cfg.train.seed)
    episodes = []
    for i in list(held_out)[:max_episodes]:
        meta = store.episode_meta(int(i))
        instruction = meta.get("instruction") if len(policy.tasks) > 1 else None
        episodes.append((store.get_episode(int(i), keys=[*policy.obs_keys, policy.action_key]), instruction))
    report = evaluate_warm_starts(policy, episodes, settings)
    source = "tiny preset trained here for 1500 steps on a synthetic store (40 episodes, 2 tasks)"
    report.update(policy=source if trained_here else run, data=None if trained_here else data, held_out_episodes=len(episodes))
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="timed chunks per mode (>= 200 for the report)")
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--rti-steps", type=int, default=None, help="RTI steps (default: dp.infer.rti's)")
    parser.add_argument("--rti-sigma", type=float, default=None, help="RTI start sigma (default: dp.infer.rti's)")
    parser.add_argument("--skip-latency", action="store_true", help="only the RTI check")
    parser.add_argument("--skip-rti-check", action="store_true", help="only the latency figures")
    parser.add_argument("--rti-run", default=None, help="trained run for the RTI check (default: train a tiny one here)")
    parser.add_argument("--rti-data", default=None, help="the run's episode store (held-out episodes are used)")
    parser.add_argument("--rti-episodes", type=int, default=8, help="held-out episodes replayed in the RTI check")
    parser.add_argument("--rti-sweep", action="store_true", help="evaluate a grid of RTI steps x start sigmas")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    default = RTISettings()
    rti = RTISettings(args.rti_steps or default.steps, args.rti_sigma or default.sigma_start)
    report: dict = {
        "machine": {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(), "threads": args.threads,
                    "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__},
        "rti": {"steps": rti.steps, "sigma_start": rti.sigma_start, "every": rti.every},
    }
    with tempfile.TemporaryDirectory(prefix="dp-latency-") as tmp:
        work = Path(tmp)
        if not args.skip_latency:
            for name, cameras in (("small_state", False), ("small_two_cameras_84", True)):
                report[name] = latency_section(cameras, args.calls, rti, args.threads, work)
                print(f"{name}: " + json.dumps({k: v for k, v in report[name].items() if k != "flops_per_chunk"}), file=sys.stderr)
            state = report["small_state"]
            report["targets"] = {
                "onnx_rti_median_le_2ms": state["onnx_rti"]["median_ms"] <= 2.0,
                "onnx_rti_10x_faster_than_eager": state["speedup_onnx_rti_vs_eager"] >= 10.0,
            }
        if not args.skip_rti_check:
            if args.rti_sweep:
                grid = [RTISettings(k, s) for k in (1, 2, 3) for s in (0.05, 0.2, 0.5, 1.0, 2.0)]
            else:  # the settings in use, and a three-step tail from the same sigma to show the contraction step by step
                grid = [rti] + ([RTISettings(3, rti.sigma_start)] if rti.steps != 3 else [])
            report["rti_check"] = rti_check(args.rti_run, args.rti_data, grid, work, args.rti_episodes)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Inference latency per chunk (batch 1), export sizes, and the RTI warm-start check; prints JSON.

Latency: the ``small`` preset (random weights time the same as trained ones), state only and with
two 84x84 cameras; median and p99 over ``--calls`` chunks of each mode, the modes interleaved call
by call (a busy machine slows them alike; a chunk after other work costs about twice one called back
to back, and a control loop acts between chunks), the ONNX Runtime modes among themselves and the
torch modes among themselves; ``onnx_rti_back_to_back`` times the warm chunk alone, back to back:

- ``eager_uncached``: the torch Policy, 10-step sampling through the router (``predict_chunk``),
  the reference; ``eager_cached``: the torch Policy with its experts cached (its default);
- ``cached`` / ``cached_rti`` / ``cached_first``: the exported torch graphs (experts cached): full
  sampling, a warm start from a guess (RTI), an episode's first chunk (short sampler);
- ``onnx_full`` / ``onnx_rti`` / ``onnx_first``: ``dp.infer.OnnxPolicy.predict_chunk`` on the exported
  folder (``onnx_first``: the first chunk after ``reset()``, with RTI on);
- ``eager_cached_vote`` / ``onnx_full_vote``: ``--vote K`` (default 5) chunks per plan, the gripper
  set by their majority (``dp eval --vote``): torch samples them in one batch, ONNX Runtime one
  after another (the graphs take one chunk); ``vote_cost`` divides each by its one-chunk mode;
- ``precision``: the same ONNX modes and the export's size for ``--precisions`` (fp16, int8).

Sizes: every file of the export against the checkpoint's float32 weight bytes (``size_ratio``).
Also FLOPs per chunk (torch's flop counter): uncached, cached, cached RTI, and the dense twin (one
expert as wide as all four: equal total parameters). Targets (1 thread, batch 1): ONNX Runtime + RTI
median <= 0.5 ms per chunk (state), <= 2 ms (two cameras); first chunk <= 2 ms (state); export size
<= 1.2x the weights, int8 <= 0.35x.

RTI check (``--rti-run RUN --rti-data STORE``, or by default a tiny policy trained here for a minute
on a synthetic store): on held-out episodes, warm chunks against the demonstrations and against full
sampling, and how an error in the guess shrinks over the warm steps (contractivity). ``--rti-sweep``
evaluates a grid of (steps, start sigma) to choose the defaults.

    PYTHONPATH=. python3 bench/latency.py [--calls 200] [--threads 1] [--precisions fp16,int8] [--vote 5] [--skip-rti-check]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import cpu_model, timed  # noqa: E402
from dp.config import Config, build_config  # noqa: E402
from dp.data.normalize import Normalizer  # noqa: E402
from dp.eval.warm_starts import evaluate_warm_starts  # noqa: E402
from dp.infer.export_format import FIRST_FILE, FULL_FILE, GRAPH_FILES, WARM_FILE, WEIGHTS_FILE  # noqa: E402
from dp.export.graph_inputs import example_inputs  # noqa: E402
from dp.export.onnx_export import build_graphs, export_policy  # noqa: E402
from dp.infer.onnx_policy import OnnxPolicy  # noqa: E402
from dp.infer.policy import Policy  # noqa: E402
from dp.infer.rti import RTISettings  # noqa: E402
from dp.models.diffusion_policy import DiffusionPolicy  # noqa: E402

LOWDIM = {"robot0_eef_pos": [3], "robot0_eef_quat": [4], "robot0_gripper_qpos": [2], "object": [10]}
CAMERAS = ["agentview_image", "robot0_eye_in_hand_image"]


def preset_policy(preset: str, cameras: bool, overrides: list[str] | None = None, seed: int = 0) -> Policy:
    """A torch Policy of ``preset`` for the simulator's lift keys, experts routed (uncached: the
    reference), random weights (routers included), a normaliser over [-1, 1] for every key."""
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
    return Policy(model, Normalizer(stats, {"action": [6]}), cache_experts=False)


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops())


def one_observation(policy: Policy) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    obs = {k: rng.uniform(-1, 1, v).astype(np.float32) for k, v in LOWDIM.items()}
    obs.update({k: rng.integers(0, 256, (84, 84, 3), dtype=np.uint8) for k in policy.image_keys})
    return obs


def first_chunk(policy: OnnxPolicy, obs: dict[str, np.ndarray]) -> np.ndarray:
    """An episode's first chunk: a new episode, then one chunk."""
    policy.reset()
    return policy.predict_chunk(obs)


def export_sizes(folder: Path, weight_bytes: int) -> dict[str, Any]:
    files = {name: (folder / name).stat().st_size for name in (*GRAPH_FILES, WEIGHTS_FILE)}
    return {"files": files, "total": sum(files.values()), "size_ratio": round(sum(files.values()) / weight_bytes, 3)}


def latency_section(cameras: bool, calls: int, rti: RTISettings, threads: int, workdir: Path, precisions: list[str],
                    vote: int) -> dict:
    policy = preset_policy("small", cameras)
    obs = one_observation(policy)
    graphs = build_graphs(policy, None, rti)
    cached_policy = Policy(policy.model, policy.normalizer, cache_experts=True)
    voting_policy = Policy(policy.model, policy.normalizer, cache_experts=True)
    voting_policy.use_discrete_vote(vote)
    full, warm, first = graphs[FULL_FILE], graphs[WARM_FILE], graphs[FIRST_FILE]
    inputs_full = [torch.from_numpy(v) for v in example_inputs(policy, False).values()]
    inputs_warm = [torch.from_numpy(v) for v in example_inputs(policy, True).values()]
    weight_bytes = 4 * sum(p.numel() for p in policy.model.parameters())
    folders, modes = {}, {}
    for precision in ["fp32", *precisions]:
        out = folders[precision] = workdir / ("cameras" if cameras else "state") / precision
        export_policy(policy, out, rti=rti, control_freq=20.0, source="bench: random small preset", precision=precision)
        onnx_full = OnnxPolicy.load(out, rti=False, threads=threads)
        onnx_rti = OnnxPolicy.load(out, rti=True, threads=threads)
        onnx_first = OnnxPolicy.load(out, rti=True, threads=threads, first_chunk="short")
        onnx_rti.predict_chunk(obs)  # the first chunk is short; every later one is warm
        suffix = "" if precision == "fp32" else f"_{precision}"
        modes[f"onnx_full{suffix}"] = lambda p=onnx_full: p.predict_chunk(obs)
        modes[f"onnx_rti{suffix}"] = lambda p=onnx_rti: p.predict_chunk(obs)
        modes[f"onnx_first{suffix}"] = lambda p=onnx_first: first_chunk(p, obs)
        if precision == "fp32":
            onnx_vote = OnnxPolicy.load(out, rti=False, threads=threads)
            onnx_vote.use_discrete_vote(vote)
            modes["onnx_full_vote"] = lambda p=onnx_vote: p.predict_chunk(obs)
    # ONNX Runtime modes are interleaved with each other, torch modes with each other. A chunk after any
    # gap costs about twice one called back to back (measured in one run on the warm graph: 1.16 ms back
    # to back; 2.3 ms after a 17 ms sleep, 2.2 ms after a full-sampling call, 2.1 ms after a 64 MB
    # sweep): a control loop acts between chunks, so the interleaved medians are the figures; the
    # back-to-back one is kept beside them for reference.
    timings = timed(modes, calls)
    timings["onnx_rti_back_to_back"] = timed({"rti": modes["onnx_rti"]}, calls)["rti"]
    with torch.no_grad():
        timings.update(timed({
            "eager_uncached": lambda: policy.predict_chunk(obs),
            "eager_cached": lambda: cached_policy.predict_chunk(obs),
            "eager_cached_vote": lambda: voting_policy.predict_chunk(obs),
            "cached": lambda: full(*inputs_full),
            "cached_rti": lambda: warm(*inputs_warm),
            "cached_first": lambda: first(*inputs_full),
        }, calls))
    result = {k: timings[k] for k in ("eager_uncached", "eager_cached", "eager_cached_vote", "cached", "cached_rti", "cached_first",
                                      "onnx_full", "onnx_full_vote", "onnx_rti", "onnx_rti_back_to_back", "onnx_first")}
    result["vote"] = vote
    result["vote_cost"] = {name: round(result[f"{base}_vote"]["median_ms"] / result[base]["median_ms"], 2)
                           for name, base in (("torch", "eager_cached"), ("onnx", "onnx_full"))}
    result["speedup_onnx_rti_vs_eager"] = round(result["eager_uncached"]["median_ms"] / result["onnx_rti"]["median_ms"], 1)
    result["export"] = export_sizes(folders["fp32"], weight_bytes)
    result["weight_bytes_fp32"] = weight_bytes
    result["precision"] = {
        p: {**{m: timings[f"{m}_{p}"] for m in ("onnx_full", "onnx_rti", "onnx_first")}, "export": export_sizes(folders[p], weight_bytes),
            "max_abs_diff_vs_torch": yaml.safe_load((folders[p] / "policy.yaml").read_text())["check"]["max_abs_diff_vs_torch"]}
        for p in precisions
    }

    dense = preset_policy("small", cameras, ["model.n_experts=1", "model.top_k=1", f"model.expert_hidden={4 * policy.cfg.model.expert_hidden}"])
    obs_t = {k: torch.from_numpy(np.asarray(v)[None, None]) for k, v in obs.items()}
    goal = {"task_id": torch.zeros(1, dtype=torch.long)}
    noise = torch.randn(1, policy.action_horizon, policy.action_dim)
    result["flops_per_chunk"] = {
        "uncached": flops(lambda: policy.model.sample(obs_t, noise=noise, **goal)),
        "cached": flops(lambda: full(*inputs_full)),
        "cached_rti": flops(lambda: warm(*inputs_warm)),
        "cached_first": flops(lambda: first(*inputs_full)),
        "dense_twin_uncached": flops(lambda: dense.model.sample(obs_t, noise=noise, **goal)),
    }
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    result["params"] = {"mode_total": params(policy.model), "dense_twin_total": params(dense.model)}
    result["onnx_bytes"] = result["export"]["files"]
    return result


def rti_check(run: str | None, data: str | None, settings: list[RTISettings], workdir: Path, max_episodes: int) -> dict:
    """Warm starts on held-out episodes of ``data`` for the policy of ``run`` (trained here if None)."""
    from dp.data.store import EpisodeStore
    from dp.data.windows import split_episodes

    trained_here = run is None
    if trained_here:
        from dp.cli import main as dp_main
        from dp.testing.reach_store import make_store

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
    parser.add_argument("--precisions", default="fp16,int8", help="reduced-precision exports to time beside fp32 (comma-separated; '' for none)")
    parser.add_argument("--vote", type=int, default=5, help="chunks per plan timed for `dp eval --vote` (odd; default 5)")
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
    precisions = [p for p in args.precisions.split(",") if p]
    report: dict = {
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "threads": args.threads,
                    "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__},
        "rti": {"steps": rti.steps, "sigma_start": rti.sigma_start, "every": rti.every},
        "first": {"steps": rti.first_steps, "sigma_start": rti.first_sigma},
    }
    with tempfile.TemporaryDirectory(prefix="dp-latency-") as tmp:
        work = Path(tmp)
        if not args.skip_latency:
            for name, cameras in (("small_state", False), ("small_two_cameras_84", True)):
                report[name] = latency_section(cameras, args.calls, rti, args.threads, work, precisions, args.vote)
                print(f"{name}: " + json.dumps({k: v for k, v in report[name].items() if k != "flops_per_chunk"}), file=sys.stderr)
            state, cams = report["small_state"], report["small_two_cameras_84"]
            report["targets"] = {
                "onnx_rti_median_le_0_5ms_state": state["onnx_rti"]["median_ms"] <= 0.5,
                "onnx_rti_median_le_2ms_cameras": cams["onnx_rti"]["median_ms"] <= 2.0,
                "onnx_first_median_le_2ms_state": state["onnx_first"]["median_ms"] <= 2.0,
                "export_le_1_2x_weights": all(r["export"]["size_ratio"] <= 1.2 for r in (state, cams)),
                "int8_le_0_35x_weights": all(r["precision"]["int8"]["export"]["size_ratio"] <= 0.35 for r in (state, cams)) if "int8" in precisions else None,
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

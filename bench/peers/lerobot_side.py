"""LeRobot's side of bench/peers/compare_lerobot.py; runs in LeRobot's venv (setup_lerobot.sh) and
prints one JSON line per call, with the process's peak RSS.

LeRobot's ``DiffusionPolicy`` is built locally from its config class (no hub weights), its
normalisation statistics come from the local dataset (convert_pusht.py), and training mirrors
``lerobot-train``'s ``update_policy``: the policy's preprocessor, forward, backward, gradient clipping
at the optimiser preset's norm (10), Adam + cosine schedule from the policy's presets, batches from
``EpisodeAwareSampler`` (dropping ``drop_n_last_frames``). Data loading runs in the main process
(``num_workers=0``) so that one thread is one thread.

    python lerobot_side.py throughput --root DS --batch 64 --steps 30 [--down-dims 80,160,320]
    python lerobot_side.py latency --root DS --calls 200
    python lerobot_side.py train --root DS --budget-s 1200 --steps-planned N --out RUN
    python lerobot_side.py eval --run RUN --seeds 1,2,3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here talks to a hub

import numpy as np
import torch

REPO_ID = "local/pusht"
STATE_KEYS = ("observation.state", "observation.environment_state")


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def build(root: Path, down_dims: tuple[int, ...] | None, **overrides):
    """(config, policy, preprocessor, postprocessor, metadata) of a state Push-T DiffusionPolicy."""
    from lerobot.configs.types import FeatureType
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from lerobot.datasets.utils import dataset_to_policy_features
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.policies.factory import make_pre_post_processors

    meta = LeRobotDatasetMetadata(REPO_ID, root=root)
    features = dataset_to_policy_features(meta.features)
    outputs = {k: f for k, f in features.items() if f.type is FeatureType.ACTION}
    inputs = {k: f for k, f in features.items() if k in STATE_KEYS}
    if down_dims:
        overrides["down_dims"] = tuple(down_dims)
    cfg = DiffusionConfig(input_features=inputs, output_features=outputs, device="cpu", **overrides)
    policy = DiffusionPolicy(cfg)
    pre, post = make_pre_post_processors(cfg, dataset_stats=meta.stats)
    return cfg, policy, pre, post, meta


def params(policy) -> int:
    return sum(p.numel() for p in policy.parameters())


def loader(cfg, meta, root: Path, batch: int, seed: int):
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.datasets.sampler import EpisodeAwareSampler

    ds = LeRobotDataset(REPO_ID, root=root, delta_timestamps=resolve_delta_timestamps(cfg, meta))
    sampler = EpisodeAwareSampler(meta.episodes["dataset_from_index"], meta.episodes["dataset_to_index"],
                                  drop_n_last_frames=cfg.drop_n_last_frames, shuffle=True)
    torch.manual_seed(seed)
    return torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=0, drop_last=True)


class Stepper:
    """One training step as ``lerobot-train`` does it (without accelerate, which adds nothing on CPU)."""

    def __init__(self, cfg, policy, pre, steps_planned: int):
        self.cfg, self.policy, self.pre = cfg, policy, pre
        self.opt = cfg.get_optimizer_preset().build(policy.get_optim_params())
        self.sched = cfg.get_scheduler_preset().build(self.opt, steps_planned)
        self.clip = cfg.get_optimizer_preset().grad_clip_norm

    def __call__(self, raw: dict) -> float:
        self.policy.train()
        loss, _ = self.policy.forward(self.pre(raw))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.clip)
        self.opt.step()
        self.opt.zero_grad()
        self.sched.step()
        return loss.item()


def cycle(dl):
    while True:
        yield from dl


def cmd_throughput(a) -> dict:
    cfg, policy, pre, _, meta = build(a.root, a.down_dims)
    batches = cycle(loader(cfg, meta, a.root, a.batch, a.seed))
    step = Stepper(cfg, policy, pre, a.steps + a.warmup)
    for _ in range(a.warmup):
        step(next(batches))
    data_s = compute_s = 0.0
    cpu0 = time.process_time()
    for _ in range(a.steps):
        t0 = time.perf_counter()
        raw = next(batches)
        t1 = time.perf_counter()
        step(raw)
        data_s += t1 - t0
        compute_s += time.perf_counter() - t1
    cpu = time.process_time() - cpu0
    total = data_s + compute_s
    return {"samples_per_s": round(a.steps * a.batch / total, 1), "s_per_step": round(total / a.steps, 4),
            "cpu_s_per_step": round(cpu / a.steps, 4), "samples_per_cpu_s": round(a.steps * a.batch / cpu, 1),
            "data_s_per_step": round(data_s / a.steps, 4), "compute_s_per_step": round(compute_s / a.steps, 4),
            "batch_size": a.batch, "steps": a.steps, "warmup": a.warmup, "params": params(policy),
            "down_dims": list(cfg.down_dims), "threads": torch.get_num_threads()}


def observation(meta, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """One observation inside the dataset's range (what the environment would send)."""
    out = {}
    for key in STATE_KEYS:
        lo, hi = np.asarray(meta.stats[key]["min"]), np.asarray(meta.stats[key]["max"])
        out[key] = torch.from_numpy(rng.uniform(lo, hi).astype(np.float32))
    return out


def cmd_latency(a) -> dict:
    cfg, policy, pre, post, meta = build(a.root, a.down_dims)
    policy.eval()
    obs = observation(meta, np.random.default_rng(0))

    def chunk() -> None:  # after reset, select_action samples a whole chunk (the queue is empty)
        policy.reset()
        post(policy.select_action(pre(dict(obs))))

    for _ in range(a.warmup):
        chunk()
    times, cpu0 = [], time.process_time()
    for _ in range(a.calls):
        t0 = time.perf_counter()
        chunk()
        times.append(time.perf_counter() - t0)
    cpu = time.process_time() - cpu0
    ms = np.array(times) * 1e3
    return {"median_ms": round(float(np.median(ms)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "cpu_ms_mean": round(cpu / a.calls * 1e3, 2), "calls": a.calls,
            "sampler_steps": cfg.num_inference_steps or cfg.num_train_timesteps, "scheduler": cfg.noise_scheduler_type,
            "params": params(policy), "down_dims": list(cfg.down_dims), "threads": torch.get_num_threads()}


def cmd_size(a) -> dict:
    """Parameters and the UNet's forward FLOPs per sample and denoising step (torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg, policy, _, _, _ = build(a.root, a.down_dims)
    cond = torch.zeros(1, sum(cfg.input_features[k].shape[0] for k in STATE_KEYS) * cfg.n_obs_steps)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        policy.diffusion.unet(torch.zeros(1, cfg.horizon, 2), torch.tensor([10]), global_cond=cond)
    return {"params": params(policy), "flops_per_sample_step": int(counter.get_total_flops()), "down_dims": list(cfg.down_dims)}


def cmd_train(a) -> dict:
    from safetensors.torch import save_file

    torch.manual_seed(a.seed)
    cfg, policy, pre, _, meta = build(a.root, a.down_dims)
    batches = cycle(loader(cfg, meta, a.root, a.batch, a.seed))
    step = Stepper(cfg, policy, pre, a.steps_planned)
    t0, done, losses = time.perf_counter(), 0, []
    while done < a.steps_planned and time.perf_counter() - t0 < a.budget_s:
        losses.append(step(next(batches)))
        done += 1
    wall = time.perf_counter() - t0
    a.out.mkdir(parents=True, exist_ok=True)
    save_file(policy.state_dict(), str(a.out / "model.safetensors"))
    (a.out / "run.json").write_text(json.dumps({"root": str(a.root), "down_dims": list(cfg.down_dims)}))
    return {"steps": done, "steps_planned": a.steps_planned, "wall_s": round(wall, 1), "batch_size": a.batch,
            "final_loss_mean_50": round(float(np.mean(losses[-50:])), 4), "params": params(policy), "down_dims": list(cfg.down_dims)}


def cmd_eval(a) -> dict:
    """Rollouts through dp's own Push-T task (dp/sim/pusht.py: the same gym-pusht environment, observation
    keys, keypoints and protocol as `dp eval --task pusht`), ``--envs`` episodes at a time batched through
    the policy as ``lerobot-eval`` batches its vectorised environments; an episode ends at success or
    after 300 steps. Starts no new batch of episodes after ``--budget-s`` seconds."""
    from safetensors.torch import load_file

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # dp.sim.pusht needs only numpy + gym-pusht
    from dp.sim.pusht import PushTTask, episode_score

    run = json.loads((a.run / "run.json").read_text())
    cfg, policy, pre, post, _ = build(Path(run["root"]), run["down_dims"])
    policy.load_state_dict(load_file(str(a.run / "model.safetensors")))
    policy.eval()
    task = PushTTask()
    envs = [task.make_env() for _ in range(a.envs)]
    episodes, t0 = [], time.perf_counter()
    for start in range(0, len(a.seeds), a.envs):
        if time.perf_counter() - t0 > a.budget_s:
            break
        seeds = a.seeds[start : start + a.envs]
        obs = [env.reset(seed) for env, seed in zip(envs, seeds)]
        policy.reset()
        torch.manual_seed(seeds[0])
        coverages: list[list[float]] = [[] for _ in seeds]
        done = [False] * len(seeds)
        for _ in range(task.horizon):
            batch = {"observation.state": torch.from_numpy(np.stack([o["agent_pos"] for o in obs])),
                     "observation.environment_state": torch.from_numpy(np.stack([o["keypoint"] for o in obs]))}
            actions = post(policy.select_action(pre(batch))).numpy()
            for k, env in enumerate(envs[: len(seeds)]):
                if not done[k]:  # a finished episode's observation is held; its actions are dropped
                    obs[k], info = env.step(actions[k])
                    coverages[k].append(info["coverage"])
                    done[k] = env.success()
            if all(done):
                break
        for seed, cov in zip(seeds, coverages):
            score, success = episode_score(cov)
            episodes.append({"seed": int(seed), "score": score, "success": success, "steps": len(cov)})
    for env in envs:
        env.close()
    return {"episodes": episodes, "wall_s": round(time.perf_counter() - t0, 1), "envs": a.envs,
            "sampler_steps": cfg.num_inference_steps or cfg.num_train_timesteps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    dims = {"type": lambda s: tuple(int(v) for v in s.split(",")), "default": None, "help": "UNet widths (default: LeRobot's)"}
    for name in ("throughput", "latency", "train", "size"):
        p = sub.add_parser(name)
        p.add_argument("--root", type=Path, required=True, help="the converted LeRobotDataset (state-only)")
        p.add_argument("--down-dims", **dims)
        p.add_argument("--seed", type=int, default=0)
    sub.choices["throughput"].add_argument("--batch", type=int, default=64)
    sub.choices["throughput"].add_argument("--steps", type=int, default=30)
    sub.choices["throughput"].add_argument("--warmup", type=int, default=3)
    sub.choices["latency"].add_argument("--calls", type=int, default=200)
    sub.choices["latency"].add_argument("--warmup", type=int, default=3)
    sub.choices["train"].add_argument("--batch", type=int, default=64)
    sub.choices["train"].add_argument("--budget-s", type=float, required=True)
    sub.choices["train"].add_argument("--steps-planned", type=int, required=True, help="the LR schedule's length")
    sub.choices["train"].add_argument("--out", type=Path, required=True)
    p = sub.add_parser("eval")
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], required=True)
    p.add_argument("--budget-s", type=float, default=float("inf"), help="start no new episodes after this many seconds")
    p.add_argument("--envs", type=int, default=10, help="episodes run at once, batched through the policy")
    a = parser.parse_args()
    torch.set_num_threads(1)
    out = {"throughput": cmd_throughput, "latency": cmd_latency, "train": cmd_train, "eval": cmd_eval, "size": cmd_size}[a.cmd](a)
    out["peak_rss_mb"] = peak_rss_mb()
    out["torch"] = torch.__version__
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""LeRobot's side of bench/peers/compare_lerobot.py; runs in LeRobot's venv (setup_lerobot.sh) and
prints one JSON line per call, with the process's peak RSS.

LeRobot's ``DiffusionPolicy`` is built locally from its config class (no hub weights), its
normalisation statistics come from the local dataset (convert_pusht.py), and training mirrors
``lerobot-train``'s ``update_policy``: the policy's preprocessor, forward, backward, gradient clipping
at the optimiser preset's norm (10), Adam + cosine schedule from the policy's presets, batches from
``EpisodeAwareSampler`` (dropping ``drop_n_last_frames``). Data loading runs in the main process
(``num_workers=0``) so that one thread is one thread.

``--obs state`` (the default) observes ``observation.state`` (agent x, y) and
``observation.environment_state`` (the block's 9 keypoints); ``--obs image`` observes
``observation.image`` (the 96x96 view) and ``observation.state``, encoded by LeRobot's ResNet-18
(``vision_backbone="resnet18"``, ``pretrained_backbone_weights=None``: from scratch, nothing is
downloaded), random 84x84 crops in training and the centre crop at inference (``crop_shape``), group
norm in place of batch norm (``use_group_norm``) and its spatial-softmax keypoints (the default 32), as
LeRobot's Push-T recipe. Evaluation observes what gym-pusht gives (``pixels`` uint8 96x96x3 with
``obs_type="pixels_agent_pos"``, ``agent_pos``; or the keypoints) through LeRobot's own
``preprocess_observation`` (images to float CHW in 0..1), as ``lerobot-eval`` does.

    python lerobot_side.py throughput --root DS --batch 64 --steps 30 [--down-dims 80,160,320] [--obs image]
    python lerobot_side.py latency --root DS --calls 200 [--obs image]
    python lerobot_side.py train --root DS --budget-s 1200 --steps-planned N --out RUN [--obs image]
    python lerobot_side.py eval --run RUN --seeds 1,2,3                # the mode the run was trained in
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
INPUTS = {"state": STATE_KEYS, "image": ("observation.state", "observation.image")}
# The image policy as LeRobot's Push-T recipe (Diffusion Policy's): set explicitly, not left to the
# version's defaults (0.4.4 leaves crop_shape None).
IMAGE_CONFIG = {"vision_backbone": "resnet18", "pretrained_backbone_weights": None, "crop_shape": (84, 84), "crop_is_random": True,
                "use_group_norm": True}


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def build(root: Path, down_dims: tuple[int, ...] | None, obs: str = "state", **overrides):
    """(config, policy, preprocessor, postprocessor, metadata) of a Push-T DiffusionPolicy observing
    ``obs`` ("state" or "image", :data:`INPUTS`)."""
    from lerobot.configs.types import FeatureType
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from lerobot.datasets.utils import dataset_to_policy_features
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.policies.factory import make_pre_post_processors

    meta = LeRobotDatasetMetadata(REPO_ID, root=root)
    features = dataset_to_policy_features(meta.features)
    outputs = {k: f for k, f in features.items() if f.type is FeatureType.ACTION}
    missing = [k for k in INPUTS[obs] if k not in features]
    if missing:
        raise SystemExit(f"error: the dataset at {root} has no {missing} (convert it without --no-images for --obs image)")
    inputs = {k: f for k, f in features.items() if k in INPUTS[obs]}
    if obs == "image":
        overrides = {**IMAGE_CONFIG, **overrides}
    if down_dims:
        overrides["down_dims"] = tuple(down_dims)
    cfg = DiffusionConfig(input_features=inputs, output_features=outputs, device="cpu", **overrides)
    policy = DiffusionPolicy(cfg)
    pre, post = make_pre_post_processors(cfg, dataset_stats=meta.stats)
    return cfg, policy, pre, post, meta


def params(policy) -> int:
    return sum(p.numel() for p in policy.parameters())


def vision(cfg) -> dict:
    """The image encoder's settings (empty for a state policy)."""
    if not cfg.image_features:
        return {}
    keys = ("vision_backbone", "pretrained_backbone_weights", "crop_shape", "crop_is_random", "resize_shape", "use_group_norm",
            "spatial_softmax_num_keypoints", "use_separate_rgb_encoder_per_camera")
    return {"vision": {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(cfg, k)) for k in keys)},
            "inputs": {k: list(f.shape) for k, f in cfg.input_features.items()}}


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
    cfg, policy, pre, _, meta = build(a.root, a.down_dims, a.obs)
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
            "down_dims": list(cfg.down_dims), "threads": torch.get_num_threads(), **vision(cfg)}


def from_env(obs: list[dict[str, np.ndarray]], image: bool) -> dict[str, torch.Tensor]:
    """A batch of Push-T observations (dp.sim.pusht's keys: ``agent_pos``, ``keypoint``, ``img``) as
    LeRobot's policy takes them: gym-pusht's keys (``agent_pos``, ``pixels`` or ``environment_state``)
    through LeRobot's own ``preprocess_observation``, as ``lerobot-eval`` feeds its policies."""
    from lerobot.envs.utils import preprocess_observation

    raw = {"agent_pos": np.stack([o["agent_pos"] for o in obs])}
    if image:
        raw["pixels"] = np.stack([o["img"] for o in obs])  # (B, 96, 96, 3) uint8 -> observation.image (B, 3, 96, 96) in 0..1
    else:
        raw["environment_state"] = np.stack([o["keypoint"] for o in obs])
    return preprocess_observation(raw)


def observation(meta, rng: np.random.Generator, image: bool) -> dict[str, np.ndarray]:
    """One observation as the environment sends it (dp.sim.pusht's keys): positions inside the
    dataset's range, a random uint8 view."""
    out = {}
    for key, env_key in zip(STATE_KEYS, ("agent_pos", "keypoint")):
        lo, hi = np.asarray(meta.stats[key]["min"]), np.asarray(meta.stats[key]["max"])
        out[env_key] = rng.uniform(lo, hi).astype(np.float32)
    if image:
        out["img"] = rng.integers(0, 256, tuple(meta.features["observation.image"]["shape"]), dtype=np.uint8)
    return out


def cmd_latency(a) -> dict:
    cfg, policy, pre, post, meta = build(a.root, a.down_dims, a.obs)
    policy.eval()
    obs = from_env([observation(meta, np.random.default_rng(0), a.obs == "image")], a.obs == "image")

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
            "params": params(policy), "down_dims": list(cfg.down_dims), "threads": torch.get_num_threads(), **vision(cfg)}


def cmd_size(a) -> dict:
    """Parameters and the UNet's forward FLOPs per sample and denoising step (torch's flop counter); an
    image policy also gives the observation encoder's FLOPs per sample (eval mode: the centre crop; once
    per chunk, every observed step) and the encoder's parameters."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg, policy, _, _, _ = build(a.root, a.down_dims, a.obs)
    policy.eval()
    obs = {"observation.state": torch.zeros(1, cfg.n_obs_steps, *cfg.robot_state_feature.shape)}
    if cfg.env_state_feature:
        obs["observation.environment_state"] = torch.zeros(1, cfg.n_obs_steps, *cfg.env_state_feature.shape)
    if cfg.image_features:  # (B, steps, cameras, C, H, W), as DiffusionPolicy stacks them
        obs["observation.images"] = torch.zeros(1, cfg.n_obs_steps, len(cfg.image_features), *next(iter(cfg.image_features.values())).shape)
    with FlopCounterMode(display=False) as encoder, torch.no_grad():
        cond = policy.diffusion._prepare_global_conditioning(obs)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        policy.diffusion.unet(torch.zeros(1, cfg.horizon, 2), torch.tensor([10]), global_cond=cond)
    out = {"params": params(policy), "flops_per_sample_step": int(counter.get_total_flops()), "down_dims": list(cfg.down_dims)}
    if cfg.image_features:
        out.update(encoder_params=params(policy.diffusion.rgb_encoder), encoder_flops_per_sample=int(encoder.get_total_flops()),
                   sampler_steps=cfg.num_inference_steps or cfg.num_train_timesteps, **vision(cfg))
    return out


def cmd_train(a) -> dict:
    from safetensors.torch import save_file

    torch.manual_seed(a.seed)
    cfg, policy, pre, _, meta = build(a.root, a.down_dims, a.obs)
    batches = cycle(loader(cfg, meta, a.root, a.batch, a.seed))
    step = Stepper(cfg, policy, pre, a.steps_planned)
    t0, done, losses = time.perf_counter(), 0, []
    while done < a.steps_planned and time.perf_counter() - t0 < a.budget_s:
        losses.append(step(next(batches)))
        done += 1
    wall = time.perf_counter() - t0
    a.out.mkdir(parents=True, exist_ok=True)
    save_file(policy.state_dict(), str(a.out / "model.safetensors"))
    (a.out / "run.json").write_text(json.dumps({"root": str(a.root), "down_dims": list(cfg.down_dims), "obs": a.obs}))
    return {"steps": done, "steps_planned": a.steps_planned, "wall_s": round(wall, 1), "batch_size": a.batch,
            "final_loss_mean_50": round(float(np.mean(losses[-50:])), 4), "params": params(policy), "down_dims": list(cfg.down_dims),
            **vision(cfg)}


def cmd_eval(a) -> dict:
    """Rollouts through dp's own Push-T task (dp/sim/pusht.py: the same gym-pusht environment, observation
    keys, keypoints and protocol as `dp eval --task pusht`; an image policy gets the task's ``top`` camera,
    gym-pusht's 96x96 ``pixels``), ``--envs`` episodes at a time batched through the policy as
    ``lerobot-eval`` batches its vectorised environments; an episode ends at success or after 300 steps.
    Starts no new batch of episodes after ``--budget-s`` seconds."""
    from safetensors.torch import load_file

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # dp.sim.pusht needs only numpy + gym-pusht
    from dp.sim.pusht import PushTTask, episode_score

    run = json.loads((a.run / "run.json").read_text())
    image = run.get("obs", "state") == "image"
    cfg, policy, pre, post, _ = build(Path(run["root"]), run["down_dims"], run.get("obs", "state"))
    policy.load_state_dict(load_file(str(a.run / "model.safetensors")))
    policy.eval()
    task = PushTTask()
    envs = [task.make_env(["top"] if image else None) for _ in range(a.envs)]
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
            actions = post(policy.select_action(pre(from_env(obs, image)))).numpy()
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
            "sampler_steps": cfg.num_inference_steps or cfg.num_train_timesteps, "obs": run.get("obs", "state")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    dims = {"type": lambda s: tuple(int(v) for v in s.split(",")), "default": None, "help": "UNet widths (default: LeRobot's)"}
    for name in ("throughput", "latency", "train", "size"):
        p = sub.add_parser(name)
        p.add_argument("--root", type=Path, required=True, help="the converted LeRobotDataset (convert_pusht.py)")
        p.add_argument("--obs", choices=sorted(INPUTS), default="state",
                       help="state: agent + block keypoints (default); image: the 96x96 view + agent (ResNet-18, crop 84)")
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

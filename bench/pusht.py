"""Push-T-format data end to end: a Diffusion Policy replay buffer -> `dp import dp-zarr` -> `dp train`
(images + state) -> held-out action error of the trained policy against the mean-action baseline. Prints JSON.

No download is possible here, so the source store is simulated, in Push-T's format and units: a 512 x 512
px workspace, 10 Hz, a round pusher driven towards target positions (the actions) that pushes a square
block onto a fixed target pose; a scripted expert walks around the block to the push side and pushes it
home. Random block / pusher starts per episode. Written as Diffusion Policy's ReplayBuffer writes it
(zarr format 2, Blosc zstd + bitshuffle, FORMATS.md section 1):

    data/img        (T, 96, 96, 3) float32 0..255  rendered with opencv (anti-aliased, slightly blurred,
                                                    so values are not integers and the import must round)
    data/state      (T, 5)  agent xy, block xy, block angle
    data/action     (T, 2)  target agent xy (px)
    data/keypoint   (T, 9, 2), data/n_contacts (T, 1)   (written for fidelity; the card does not import them)
    meta/episode_ends (E,) int64

Then `dp import dp-zarr SRC --card pusht --out STORE` (uint8 images, state, action), `dp train --preset
tiny|small data.images=true` with `data.val_fraction` of the episodes held out (the trainer's own split),
and on windows of exactly those held-out episodes: `dp.infer.Policy.predict_chunk` (EMA weights, fixed
noise) against the demonstrated chunk (edge-padded past the episode end, as training windows are), vs the
mean training action and vs holding the current pusher position. MSE is over every step of the chunk,
in raw action units (px^2) and normalised ([-1, 1] action units, as training sees them).

    python bench/pusht.py --quick                     # about a minute: tiny preset
    python bench/pusht.py [--json-out FILE]           # about 10-15 min on 2 idle cores: small preset
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch (as `dp train` does): spinning threads stall a busy machine

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import emit  # noqa: E402

# ---------------------------------------------------------------------------- the simulated task
WORKSPACE = 512.0  # px, as Push-T
IMAGE_SIZE = 96
AGENT_R = 15.0
BLOCK_HALF = 30.0  # half side of the square block
BLOCK_R = BLOCK_HALF * 1.15  # its contact radius (between the inscribed and the circumscribed circle)
TARGET = np.array([256.0, 256.0])
TARGET_ANGLE = math.pi / 4
MAX_SPEED = 12.0  # px per step the pusher moves towards its target
PUSH_STEP = 10.0
SUCCESS_DIST = 8.0


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else np.zeros_like(v)


def _clip_norm(v: np.ndarray, limit: float) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v * (limit / n) if n > limit else v


def _square(center: np.ndarray, angle: float, half: float = BLOCK_HALF) -> np.ndarray:
    """The 4 corners (4, 2) of a square."""
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    corners = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    return center + corners @ rot.T


def keypoints(center: np.ndarray, angle: float) -> np.ndarray:
    """9 keypoints of the block (corners, edge midpoints, centre), like Push-T's (N, 9, 2)."""
    corners = _square(center, angle)
    mids = (corners + np.roll(corners, -1, axis=0)) / 2
    return np.concatenate([corners, mids, center[None]]).astype(np.float32)


def render(agent: np.ndarray, block: np.ndarray, angle: float, size: int = IMAGE_SIZE) -> np.ndarray:
    """(size, size, 3) float32 0..255: the target pose (light green), the block (slate), the pusher (blue)."""
    import cv2

    shift = 4  # sub-pixel coordinates (fixed point, 1/16 px)
    scale = size / WORKSPACE * (1 << shift)
    img = np.full((size, size, 3), 238, np.uint8)

    def poly(points: np.ndarray) -> np.ndarray:
        return np.round(points * scale).astype(np.int32)[None]

    cv2.fillPoly(img, poly(_square(TARGET, TARGET_ANGLE)), (144, 238, 144), cv2.LINE_AA, shift)
    cv2.fillPoly(img, poly(_square(block, angle)), (119, 136, 153), cv2.LINE_AA, shift)
    centre = tuple(int(v) for v in np.round(agent * scale))
    cv2.circle(img, centre, int(round(AGENT_R * scale)), (65, 105, 225), -1, cv2.LINE_AA, shift)
    out = cv2.GaussianBlur(img.astype(np.float32), (3, 3), 0.6)  # float, not integer-valued: the import rounds
    return np.clip(out, 0.0, 255.0)


def expert_action(agent: np.ndarray, block: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The scripted pusher target: get behind the block (walking around it), then push it to the target."""
    to_goal = TARGET - block
    u = _unit(to_goal)
    behind = block - u * (AGENT_R + BLOCK_R + 3.0)
    rel = agent - behind
    lateral = rel - u * float(rel @ u)
    if np.linalg.norm(rel) < 10.0 or (float((agent - block) @ u) < 0 and np.linalg.norm(lateral) < 6.0):
        # in position: push along u, correcting the lateral offset
        step = u * min(PUSH_STEP, float(np.linalg.norm(to_goal)) + 2.0) - 0.5 * lateral
        goal = agent + step
    else:
        goal = behind
        # if the straight way to `behind` passes through the block, orbit around it towards the push side
        d = behind - agent
        t = float(np.clip((block - agent) @ d / max(float(d @ d), 1e-9), 0.0, 1.0))
        if np.linalg.norm(agent + t * d - block) < AGENT_R + BLOCK_R + 1.0:
            here = math.atan2(agent[1] - block[1], agent[0] - block[0])
            want = math.atan2(-u[1], -u[0])
            turn = (want - here + math.pi) % (2 * math.pi) - math.pi
            ahead = here + math.copysign(math.radians(40), turn)
            goal = block + (AGENT_R + BLOCK_R + 14.0) * np.array([math.cos(ahead), math.sin(ahead)])
        goal = agent + _clip_norm(goal - agent, MAX_SPEED * 1.5)
    goal = goal + rng.normal(0.0, 1.5, size=2)  # a demonstrator is not a machine
    return np.clip(goal, AGENT_R, WORKSPACE - AGENT_R)


def step(agent: np.ndarray, block: np.ndarray, angle: float, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """Move the pusher towards ``action`` (speed-limited); push the block out of contact (rotating it by
    the off-centre part of the push). Returns agent, block, angle, contact."""
    new_agent = agent + _clip_norm(action - agent, MAX_SPEED)
    motion = new_agent - agent
    gap = block - new_agent
    dist = float(np.linalg.norm(gap))
    contact = dist < AGENT_R + BLOCK_R
    if contact:
        n = _unit(gap)
        block = block + n * (AGENT_R + BLOCK_R - dist)
        angle = angle + 0.01 * float(n[0] * motion[1] - n[1] * motion[0])
    block = np.clip(block, BLOCK_R, WORKSPACE - BLOCK_R)
    return new_agent, block, float(angle), contact


def simulate_episode(rng: np.random.Generator, max_steps: int = 200) -> tuple[dict[str, np.ndarray], bool]:
    """One demonstration from a random start (block away from the target, pusher clear of the block)."""
    while True:
        block = rng.uniform(96.0, WORKSPACE - 96.0, size=2)
        if np.linalg.norm(block - TARGET) > 90.0:
            break
    while True:
        agent = rng.uniform(40.0, WORKSPACE - 40.0, size=2)
        if np.linalg.norm(agent - block) > AGENT_R + BLOCK_R + 20.0:
            break
    angle = float(rng.uniform(-math.pi, math.pi))
    rows: dict[str, list] = {"img": [], "state": [], "action": [], "keypoint": [], "n_contacts": []}
    contact, success = False, False
    for _ in range(max_steps):
        action = expert_action(agent, block, rng)
        rows["img"].append(render(agent, block, angle))
        rows["state"].append([agent[0], agent[1], block[0], block[1], angle])
        rows["action"].append(action)
        rows["keypoint"].append(keypoints(block, angle))
        rows["n_contacts"].append([float(contact)])
        agent, block, angle, contact = step(agent, block, angle, action)
        if np.linalg.norm(block - TARGET) < SUCCESS_DIST:
            success = True
            break
    return {k: np.asarray(v, dtype=np.float32) for k, v in rows.items()}, success


def write_pusht_zarr(path: str | Path, episodes: int, seed: int = 0, max_steps: int = 200) -> dict[str, Any]:
    """A Push-T-format replay buffer (zarr format 2) of ``episodes`` expert demonstrations.

    Returns the arrays written (``arrays``), the episode lengths and the expert's success rate."""
    import numcodecs
    import zarr

    rng = np.random.default_rng(seed)
    parts, lengths, successes = [], [], 0
    for _ in range(episodes):
        ep, ok = simulate_episode(rng, max_steps)
        parts.append(ep)
        lengths.append(len(ep["action"]))
        successes += ok
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    data = root.create_group("data")
    codec = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE)
    for key, arr in arrays.items():
        frame_bytes = arr[0].nbytes
        chunk_t = int(max(1, min(len(arr), (2 << 20) // frame_bytes)))  # ~2 MB chunks along time, as Diffusion Policy aims
        data.create_array(key, shape=arr.shape, dtype=arr.dtype, chunks=(chunk_t, *arr.shape[1:]), compressors=codec)[:] = arr
    meta = root.create_group("meta")
    ends = np.cumsum(lengths).astype(np.int64)
    meta.create_array("episode_ends", shape=ends.shape, dtype=np.int64, chunks=ends.shape, compressors=codec)[:] = ends
    return {"arrays": arrays, "episode_lengths": lengths, "expert_success_rate": successes / episodes}


# ---------------------------------------------------------------------------- the dp commands
def _dp(argv: list[str]) -> str:
    """Run `dp ARGV` in this process; its stdout. Raises if the command fails."""
    from dp.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    if rc != 0:
        raise RuntimeError(f"dp {' '.join(argv)} exited with {rc}")
    return out.getvalue()


def import_store(src: Path, out: Path, workers: int = 2) -> dict[str, Any]:
    """`dp import dp-zarr SRC --card pusht --out OUT --json`: its report."""
    text = _dp(["import", "dp-zarr", str(src), "--card", "pusht", "--out", str(out), "--workers", str(workers),
                "--overwrite", "--json", "--no-progress"])
    return json.loads(text)


def train_policy(store: Path, run: Path, preset: str, steps: int, val_fraction: float, overrides: list[str] = ()) -> dict[str, Any]:
    """`dp train --data STORE --preset P data.images=true ...` (the card's keys: img + state): its summary."""
    argv = ["train", "--data", str(store), "--preset", preset, "--out", str(run), "--json", "--no-progress",
            "data.images=true", f"data.val_fraction={val_fraction}", f"train.steps={steps}",
            f"train.ckpt_every={steps}", f"train.val_every={steps}", f"train.log_every={max(1, min(50, steps // 4))}",
            f"train.warmup_steps={max(1, steps // 20)}", *overrides]
    text = _dp(argv)
    return json.loads(text.strip().splitlines()[-1])


def evaluate(run: Path, store: Path, max_windows: int, seed: int = 0) -> dict[str, Any]:
    """Held-out action error of the trained policy vs the mean-action and hold-position baselines.

    The held-out episodes are the trainer's own validation split (``split_episodes`` with the run's
    ``data.val_fraction`` and ``train.seed``); windows are anchored at evenly spaced frames of them."""
    from dp.data.sampler import split_episodes
    from dp.data.store import EpisodeStore
    from dp.infer import Policy

    policy = Policy.load(run, seed=seed)
    cfg = policy.cfg
    To, H = cfg.data.obs_horizon, cfg.data.action_horizon
    akey = cfg.data.action_key
    with EpisodeStore.open(store, "r") as s:
        train_eps, val_eps = split_episodes(len(s), cfg.data.val_fraction, cfg.train.seed)
        bounds = [s.episode_bounds(i) for i in range(len(s))]
        actions = s.array(akey)[:]
        state = s.array("state")[:]
        obs_arrays = {k: s.array(k) for k in policy.obs_keys}
        mean_action = np.concatenate([actions[slice(*bounds[i])] for i in train_eps]).mean(axis=0)
        anchors = [(i, t) for i in val_eps for t in range(bounds[i][0], bounds[i][1])]
        if not anchors:
            raise RuntimeError(f"{store}: no held-out episodes (val_fraction={cfg.data.val_fraction})")
        pick = np.unique(np.linspace(0, len(anchors) - 1, min(max_windows, len(anchors))).round().astype(int))
        rng = np.random.default_rng(seed + 1)
        pred, truth, hold = [], [], []
        t0 = time.perf_counter()
        for j in pick:
            ep, t = anchors[j]
            start, stop = bounds[ep]
            obs_idx = np.clip(np.arange(t - To + 1, t + 1), start, stop - 1)  # edge padding, as training windows
            act_idx = np.clip(np.arange(t, t + H), start, stop - 1)
            frames = [{k: obs_arrays[k][int(f)] for k in policy.obs_keys} for f in obs_idx]
            policy.reset()
            for frame in frames[:-1]:
                policy._push(frame)  # the observation history (obs_horizon > 1)
            pred.append(policy.predict_chunk(frames[-1], noise=rng.standard_normal((H, policy.action_dim)).astype(np.float32)))
            truth.append(actions[act_idx])
            hold.append(np.repeat(state[t, None, :2], H, axis=0))
        infer_s = time.perf_counter() - t0
    pred, truth, hold = np.stack(pred), np.stack(truth), np.stack(hold)
    mean = np.broadcast_to(mean_action, truth.shape)
    norm = policy.normalizer

    def mse(a: np.ndarray, b: np.ndarray, normalised: bool = False) -> float:
        if normalised:
            a, b = norm.normalize(akey, a), norm.normalize(akey, b)
        return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))

    out = {
        "held_out_episodes": int(len(val_eps)), "train_episodes": int(len(train_eps)), "windows": int(len(pick)),
        "action_horizon": H, "obs_horizon": To, "obs_keys": policy.obs_keys,
        "policy_mse": mse(pred, truth), "mean_action_mse": mse(mean, truth), "hold_position_mse": mse(hold, truth),
        "policy_mse_normalised": mse(pred, truth, True), "mean_action_mse_normalised": mse(mean, truth, True),
        "hold_position_mse_normalised": mse(hold, truth, True),
        "policy_first_action_mse": mse(pred[:, 0], truth[:, 0]), "mean_action_first_action_mse": mse(mean[:, 0], truth[:, 0]),
        "ms_per_chunk": round(1000 * infer_s / len(pick), 2),
        "mean_action": [round(float(v), 3) for v in mean_action],
    }
    out["policy_over_mean_ratio"] = out["policy_mse"] / out["mean_action_mse"] if out["mean_action_mse"] > 0 else float("nan")
    out["policy_over_hold_ratio"] = out["policy_mse"] / out["hold_position_mse"] if out["hold_position_mse"] > 0 else float("nan")
    out["beats_mean_baseline"] = bool(out["policy_mse"] < out["mean_action_mse"])
    return out


def check_import(src_arrays: dict[str, np.ndarray], store: Path) -> dict[str, Any]:
    """What the import kept: dtypes, shapes and the largest differences from the source."""
    from dp.data.store import EpisodeStore

    with EpisodeStore.open(store, "r") as s:
        img, st, act = s.array("img")[:], s.array("state")[:], s.array("action")[:]
        out = {
            "roles": s.roles, "episodes": len(s), "zarr_format": s.zarr_format,
            "img": {"dtype": str(img.dtype), "shape": list(img.shape)},
            "state": {"dtype": str(st.dtype), "shape": list(st.shape)},
            "action": {"dtype": str(act.dtype), "shape": list(act.shape)},
            "img_max_abs_diff": float(np.abs(img.astype(np.float32) - src_arrays["img"]).max()),
            "state_max_abs_diff": float(np.abs(st - src_arrays["state"]).max()),
            "action_max_abs_diff": float(np.abs(act - src_arrays["action"]).max()),
        }
    return out


# ---------------------------------------------------------------------------- the benchmark
QUICK = {"preset": "tiny", "episodes": 30, "steps": 300, "eval_windows": 64, "workers": 2}
FULL = {"preset": "small", "episodes": 120, "steps": 1000, "eval_windows": 300, "workers": 2}


def run_bench(work: Path, *, preset: str, episodes: int, steps: int, eval_windows: int, workers: int = 2,
              val_fraction: float = 0.2, seed: int = 0, max_steps: int = 200, overrides: list[str] = ()) -> dict[str, Any]:
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    src, store, run = work / "pusht_source.zarr", work / "pusht.zarr", work / "run"
    t0 = time.perf_counter()
    made = write_pusht_zarr(src, episodes, seed=seed, max_steps=max_steps)
    generate_s = time.perf_counter() - t0
    report = import_store(src, store, workers)
    kept = check_import(made["arrays"], store)
    t0 = time.perf_counter()
    summary = train_policy(store, run, preset, steps, val_fraction, [f"train.seed={seed}", *overrides])
    train_call_s = time.perf_counter() - t0
    result = evaluate(run, store, eval_windows, seed=seed)
    lengths = made["episode_lengths"]
    return {
        "source": {"format": "Diffusion Policy ReplayBuffer, zarr format 2 (simulated Push-T-like pushing task)",
                   "episodes": episodes, "frames": int(sum(lengths)), "episode_len_mean": round(float(np.mean(lengths)), 1),
                   "episode_len_min": int(min(lengths)), "episode_len_max": int(max(lengths)),
                   "expert_success_rate": round(made["expert_success_rate"], 3), "generate_s": round(generate_s, 1)},
        "import": {"frames": report["frames"], "seconds": report["seconds"], "frames_per_s": report["frames_per_s"],
                   "workers": workers, **kept},
        "train": {"preset": preset, "steps": summary["step"], "wall_s": round(summary["wall_s"], 1),
                  "steps_per_s": round(summary["step"] / summary["wall_s"], 3), "call_s": round(train_call_s, 1),
                  "samples_per_s_last": round(summary.get("samples_per_s", float("nan")), 1),
                  "loss_last": summary.get("loss"), "val_loss": summary.get("val_loss"),
                  "val_action_mse_normalised": summary.get("val_action_mse"), "val_fraction": val_fraction,
                  "overrides": list(overrides)},
        "eval": result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"about a minute: {QUICK}")
    parser.add_argument("--preset", help="training preset (default: tiny with --quick, else small)")
    parser.add_argument("--episodes", type=int, help="simulated demonstrations")
    parser.add_argument("--steps", type=int, help="training steps")
    parser.add_argument("--eval-windows", type=int, help="held-out windows to sample chunks on")
    parser.add_argument("--workers", type=int, help="`dp import --workers`")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of episodes held out (default 0.2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (source, store, run)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON here")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="extra `dp train` overrides")
    args = parser.parse_args()
    params = dict(QUICK if args.quick else FULL)
    for key in ("preset", "episodes", "steps", "eval_windows", "workers"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        work = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dp-pusht-bench-")))
        out = {"mode": "quick" if args.quick else "full", "cpu_count": os.cpu_count(),
               **run_bench(work, **params, val_fraction=args.val_fraction, seed=args.seed, overrides=args.overrides)}
    emit(out, t0, args.json_out)


if __name__ == "__main__":
    main()

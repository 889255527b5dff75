"""Diffusion Policy's Push-T replay buffer (zarr format 2) -> a local LeRobotDataset, written with
LeRobot's own dataset API (``LeRobotDataset.create`` / ``add_frame`` / ``save_episode`` / ``finalize``).
Runs in LeRobot's virtualenv (bench/peers/setup_lerobot.sh), not in dp's. Prints JSON.

Features (LeRobot's naming; the hub's Push-T copy has the first, third and fourth):

    observation.state              (2,)  float32  agent x, y (px)           <- data/state[:, 0:2]
    observation.environment_state  (18,) float32  the block's 9 keypoints   <- data/keypoint (Diffusion Policy's low-dim obs)
    observation.image              (96, 96, 3) uint8, dtype "image" (lossless, inside the parquet files) <- data/img
    action                         (2,)  float32  target agent x, y (px)    <- data/action

    ~/.cache/dp-peers/lerobot/bin/python bench/peers/convert_pusht.py SRC.zarr --out DIR [--episodes N] [--no-images]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here talks to a hub

import numpy as np

TASK = "Push the T-shaped block onto the T-shaped target."
REPO_ID = "local/pusht"  # LeRobot wants an id; the dataset only lives under --out
FPS = 10


def features(images: bool) -> dict:
    """The LeRobotDataset feature spec of the converted Push-T data."""
    spec = {
        "observation.state": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
        "observation.environment_state": {"dtype": "float32", "shape": (18,), "names": [f"kp{i // 2}_{'xy'[i % 2]}" for i in range(18)]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
    }
    if images:
        spec["observation.image"] = {"dtype": "image", "shape": (96, 96, 3), "names": ["height", "width", "channels"]}
    return spec


def open_source(src: Path):
    """The replay buffer's arrays and episode ends; SystemExit with one line if it is not one."""
    import zarr

    try:
        root = zarr.open_group(str(src), mode="r")
        arrays = {k: root["data"][k] for k in ("state", "keypoint", "action", "img")}
        ends = np.asarray(root["meta/episode_ends"][:], dtype=np.int64)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise SystemExit(f"error: {src} is not a Push-T replay buffer (needs data/state, keypoint, action, img and "
                         f"meta/episode_ends): {exc}") from None
    return arrays, ends


def convert(src: Path, out: Path, episodes: int | None = None, images: bool = True) -> dict:
    """Write the first ``episodes`` episodes (all if None) of ``src`` as a LeRobotDataset at ``out``."""
    import datasets
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    datasets.disable_progress_bars()  # one bar per episode otherwise
    arrays, ends = open_source(src)
    if out.exists():
        raise SystemExit(f"error: {out} already exists; remove it or choose another --out")
    n_eps = len(ends) if episodes is None else min(episodes, len(ends))
    stop = int(ends[n_eps - 1])
    state = np.asarray(arrays["state"][:stop], np.float32)
    kp = np.asarray(arrays["keypoint"][:stop], np.float32).reshape(stop, 18)
    action = np.asarray(arrays["action"][:stop], np.float32)
    t0 = time.perf_counter()
    ds = LeRobotDataset.create(REPO_ID, fps=FPS, features=features(images), root=out, robot_type="pusht", use_videos=False)
    start = 0
    for ep in range(n_eps):
        end = int(ends[ep])
        img = np.rint(arrays["img"][start:end]).astype(np.uint8) if images else None  # float 0..255, integer-valued
        for t in range(start, end):
            frame = {"observation.state": state[t, :2], "observation.environment_state": kp[t], "action": action[t], "task": TASK}
            if images:
                frame["observation.image"] = img[t - start]
            ds.add_frame(frame)
        ds.save_episode()
        start = end
    ds.finalize()
    return {"root": str(out), "episodes": n_eps, "frames": stop, "images": images,
            "seconds": round(time.perf_counter() - t0, 1), "codebase_version": ds.meta.info["codebase_version"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="Diffusion Policy's pusht_cchi_v7_replay.zarr")
    parser.add_argument("--out", type=Path, required=True, help="the new dataset's folder (must not exist)")
    parser.add_argument("--episodes", type=int, help="convert only the first N episodes")
    parser.add_argument("--no-images", action="store_true", help="leave out observation.image (state-only data)")
    args = parser.parse_args()
    if args.episodes is not None and args.episodes < 1:
        sys.exit("error: --episodes must be >= 1")
    print(json.dumps(convert(args.src, args.out, args.episodes, not args.no_images)))


if __name__ == "__main__":
    main()

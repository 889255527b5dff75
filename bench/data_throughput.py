"""Episode-store throughput: append MB/s, low-dim and image windows/s, and peak RSS as a store grows.

Prints one JSON object. Targets on a 2-core machine: >= 50,000 low-dim windows/s, >= 3,000 image
windows/s (two 84x84x3 cameras, obs horizon 2, action horizon 16, DataLoader with 2 workers), and
RSS flat as the store grows from 10k to 200k frames.

    python bench/data_throughput.py                 # full run (grows a store to 200k frames, ~2 GB on disk)
    python bench/data_throughput.py --sizes 2000,8000 --windows 5000   # a quick run
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from dp.data.store import EpisodeStore
from dp.data.windows import WindowDataset, make_loader

CAMERAS = ("agentview_image", "robot0_eye_in_hand_image")
EPISODE_LEN = 200


def synthetic_episode(rng: np.random.Generator, T: int = EPISODE_LEN, size: int = 84) -> dict[str, np.ndarray]:
    """Camera-like frames (smooth gradients, a moving blob, sensor noise) and smooth low-dim signals."""
    yy, xx = np.mgrid[0:size, 0:size]
    base = (np.stack([xx, yy, (xx + yy) // 2], -1) * (255 / (2 * size))).astype(np.float32)
    t = np.arange(T, dtype=np.float32)[:, None]
    data = {}
    for c, cam in enumerate(CAMERAS):
        cx = size / 2 + size / 3 * np.sin(t[:, 0] / 20 + c)
        blob = np.exp(-((xx[None] - cx[:, None, None]) ** 2 + (yy[None] - size / 2) ** 2) / 60.0)
        frames = base[None] + 120 * blob[..., None] + rng.normal(0, 3, size=(T, size, size, 3))
        data[cam] = np.clip(frames, 0, 255).astype(np.uint8)
    data["robot0_eef_pos"] = np.sin(t / 30 + rng.uniform(0, 6, 3)).astype(np.float32)
    data["robot0_eef_quat"] = np.cos(t / 40 + rng.uniform(0, 6, 4)).astype(np.float32)
    data["robot0_gripper_qpos"] = np.sin(t / 10 + rng.uniform(0, 6, 2)).astype(np.float32) * 0.04
    data["action"] = np.concatenate([np.tanh(np.sin(t / 15 + rng.uniform(0, 6, 6))), np.sign(np.sin(t / 50))], 1).astype(np.float32)
    return data


def rss_mb(process: psutil.Process) -> float:
    """Resident memory of a process and its children (DataLoader workers), in MB."""
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def windows_per_second(ds: WindowDataset, n_windows: int, batch_size: int, workers: int) -> tuple[float, float]:
    """Windows/s through a shuffled DataLoader, and the peak RSS (MB) seen while loading."""
    loader = make_loader(ds, batch_size=batch_size, num_workers=workers, shuffle=True)
    proc = psutil.Process()
    it = iter(loader)
    next(it)  # workers started and warm
    seen, peak, start = 0, 0.0, time.perf_counter()
    while seen < n_windows:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        seen += len(batch["action"])
        peak = max(peak, rss_mb(proc))
    rate = seen / (time.perf_counter() - start)
    del it, loader
    return rate, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,50000,200000", help="store sizes (frames) at which to measure RSS and image windows/s")
    parser.add_argument("--windows", type=int, default=30000, help="image windows to load per measurement")
    parser.add_argument("--lowdim-windows", type=int, default=500000, help="low-dim windows to load")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--dir", type=Path, default=None, help="where to build the store (default: a temp dir)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="dp-bench-"))
    path = workdir / "bench.zarr"
    shutil.rmtree(path, ignore_errors=True)
    rng = np.random.default_rng(0)
    pool = [synthetic_episode(rng) for _ in range(8)]  # appended in rotation: generation is not what we time
    store = EpisodeStore.create(path, control_freq=20.0, robot="panda", discrete_dims={"action": [6]})
    obs_keys = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]
    results: dict = {"episode_length": EPISODE_LEN, "cameras": "2x84x84x3", "obs_horizon": 2, "action_horizon": 16, "workers": args.workers, "by_size": []}
    append_bytes, append_time = 0, 0.0
    for size in sizes:
        while store.n_frames < size:
            ep = pool[len(store) % len(pool)]
            t0 = time.perf_counter()
            store.add_episode(ep, meta={"task": "bench", "seed": len(store)})
            append_time += time.perf_counter() - t0
            append_bytes += sum(v.nbytes for v in ep.values())
        reader = EpisodeStore.open(path, "r")
        img_ds = WindowDataset([reader], [*obs_keys, *CAMERAS], obs_horizon=2, action_horizon=16)
        rate, peak = windows_per_second(img_ds, args.windows, batch_size=256, workers=args.workers)
        results["by_size"].append({"frames": store.n_frames, "image_windows_per_s": round(rate), "peak_rss_mb": round(peak, 1)})
        print(json.dumps(results["by_size"][-1]), flush=True, file=sys.stderr)
    store.close()
    reader = EpisodeStore.open(path, "r")
    low_ds = WindowDataset([reader], obs_keys, obs_horizon=2, action_horizon=16)
    t0 = time.perf_counter()
    n, rng_idx = 0, np.random.default_rng(1)
    while n < args.lowdim_windows:
        low_ds.__getitems__(rng_idx.integers(0, len(low_ds), 1024))
        n += 1024
    results["lowdim_windows_per_s_in_process"] = round(n / (time.perf_counter() - t0))
    results["lowdim_windows_per_s_loader"] = round(windows_per_second(low_ds, args.lowdim_windows, 1024, args.workers)[0])
    results["image_windows_per_s"] = results["by_size"][-1]["image_windows_per_s"]
    results["append_mb_per_s"] = round(append_bytes / 2**20 / append_time, 1)
    rss = [r["peak_rss_mb"] for r in results["by_size"]]
    results["peak_rss_mb_growth"] = round(rss[-1] - rss[0], 1)
    results["store_bytes_on_disk"] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    results["targets"] = {
        "lowdim_windows_per_s>=50000": results["lowdim_windows_per_s_loader"] >= 50000,
        "image_windows_per_s>=3000": results["image_windows_per_s"] >= 3000,
    }
    print(json.dumps(results, indent=2))
    if args.dir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

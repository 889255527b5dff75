"""LeRobot round trip on simulator frames: a store with two cameras -> `dp export-data lerobot` -> `dp import lerobot`. Prints JSON.

Collects scripted `lift` episodes with the agentview and wrist cameras (84x84) in MuJoCo, exports
them at each H.264 quality (`--crf`), imports the folder back, and reports per camera the PSNR of
the frames that came back, whether every low-dim key and all metadata came back exactly, the MP4
bytes against the raw frames, and the export and import rates (frames/s, one process).

    python bench/lerobot_roundtrip.py [--episodes 3] [--crf 18,23,28] [--json-out bench/results/lerobot_roundtrip.json]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit  # noqa: E402
from dp.cli import main as dp_main  # noqa: E402
from dp.data.store import EpisodeStore  # noqa: E402

CAMERAS = "agentview,robot0_eye_in_hand"


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return round(float(10 * np.log10(255.0**2 / mse)), 2) if mse else float("inf")


def _round_trip(src: Path, scratch: Path, crf: int) -> dict[str, Any]:
    out, back = scratch / f"lerobot_crf{crf}", scratch / f"back_crf{crf}.zarr"
    t = time.perf_counter()
    assert dp_main(["export-data", "lerobot", str(src), "--out", str(out), "--crf", str(crf), "--no-progress"]) == 0
    export_s = time.perf_counter() - t
    t = time.perf_counter()
    assert dp_main(["import", "lerobot", str(out), "--out", str(back), "--workers", "0", "--no-progress"]) == 0
    import_s = time.perf_counter() - t
    with EpisodeStore.open(src) as a, EpisodeStore.open(back) as b:
        images = a.roles["image"]
        psnr = {k: _psnr(np.concatenate([a.get_episode(i)[k] for i in range(len(a))]),
                         np.concatenate([b.get_episode(i)[k] for i in range(len(b))])) for k in images}
        exact = all(np.array_equal(a.get_episode(i)[k], b.get_episode(i)[k]) for i in range(len(a)) for k in a.keys if k not in images)
        meta = all(np.array_equal(a.episode_meta(i)[k], b.episode_meta(i)[k]) for i in range(len(a)) for k in a.episode_meta(i))
        raw = sum(a.array(k).nbytes for k in images)
        frames = a.n_frames
    mp4 = sum(p.stat().st_size for p in (out / "videos").rglob("*.mp4"))
    return {"psnr_db": psnr, "lowdim_exact": exact, "metadata_exact": meta, "mp4_bytes": mp4, "raw_image_bytes": raw,
            "export_frames_per_s": round(frames / export_s, 1), "import_frames_per_s": round(frames / import_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--crf", default="18,23,28", help="H.264 qualities to try, comma-separated")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="dp-lerobot-bench-"))
    try:
        src = scratch / "lift.zarr"
        subprocess.run([sys.executable, "-m", "dp", "collect", "--task", "lift", "--episodes", str(args.episodes), "--out", str(src),
                        "--cameras", CAMERAS, "--image-size", "84", "--workers", "1", "--seed", str(args.seed)],
                       check=True, stdout=subprocess.DEVNULL)
        with EpisodeStore.open(src) as store:
            frames = store.n_frames
        out: dict[str, Any] = {"task": "lift", "episodes": args.episodes, "frames": frames, "cameras": CAMERAS, "image_size": 84,
                               "seed": args.seed, "crf": {int(c): _round_trip(src, scratch, int(c)) for c in args.crf.split(",")}}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    emit(out, started, args.json_out)


if __name__ == "__main__":
    main()

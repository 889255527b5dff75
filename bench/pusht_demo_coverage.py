"""How far Push-T episodes in a store push the block, in gym-pusht's own geometry: each frame's block pose
placed in `gym_pusht/PushT-v0`, its coverage of the target as the environment computes it, and the
episode's maximum. On Diffusion Policy's human demonstrations (pusht_cchi_v7_replay, as `dp import`
stores them) this says whether imitation alone can reach the success threshold (coverage 0.95).

The block is placed angle first, then position, so that the stored position is the body's position;
gym-pusht's reset sets them the other way round (its legacy order), which moves a rotated block. The
script checks the placement against the stored frames where the store has them: the rendered view of
the placed state and the recorded view, mean absolute difference per pixel (0-255).

  python bench/pusht_demo_coverage.py --store data/pusht.zarr --json-out bench/results/pusht_demo_coverage.json
  python bench/pusht_demo_coverage.py --store data/pusht.zarr --store data/pusht_self.zarr
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import emit  # noqa: E402
from dp.data.store import EpisodeStore  # noqa: E402
from dp.sim.pusht import SUCCESS_COVERAGE, import_gym_pusht  # noqa: E402


def place(env: Any, state: np.ndarray) -> None:
    """Put the agent and the block at ``state`` (agent x, y, block x, y, angle): angle first."""
    env.agent.position = [float(state[0]), float(state[1])]
    env.block.angle = float(state[4])
    env.block.position = [float(state[2]), float(state[3])]
    env.space.step(env.dt)


def store_coverage(path: Path, env: Any, frames_checked: int, progress: bool) -> dict[str, Any]:
    """Per-episode maximum and final-frame coverage of the store at ``path``, and the placement check."""
    store = EpisodeStore.open(path)
    if "state" not in store.keys:
        raise SystemExit(f"{path}: no `state` key (agent x, y, block x, y, angle): import Push-T with a card that keeps it")
    state = store.array("state")[:]
    best, last, sources = [], [], []
    for i in tqdm(range(len(store)), desc=path.name, disable=not progress):
        a, b = store.episode_bounds(i)
        cov = []
        for s in state[a:b]:
            place(env, s)
            cov.append(env._get_coverage())
        best.append(max(cov))
        last.append(cov[-1])
        sources.append(store.episode_meta(i).get("source"))
    best, last = np.array(best), np.array(last)
    quantiles = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
    out: dict[str, Any] = {
        "store": str(path), "episodes": len(store), "sources": sorted({str(s) for s in sources}),
        "max_coverage_quantiles": dict(zip(map(str, quantiles), np.quantile(best, quantiles).round(4).tolist())),
        "final_coverage_quantiles": dict(zip(map(str, quantiles), np.quantile(last, quantiles).round(4).tolist())),
        "episodes_reaching_success_coverage": int((best >= SUCCESS_COVERAGE).sum()),
        "max_coverage_mean": round(float(best.mean()), 4),
    }
    if "img" in store.keys and frames_checked:
        rng = np.random.default_rng(0)
        picks = np.sort(rng.choice(len(state), size=min(frames_checked, len(state)), replace=False))
        frames = store.array("img")
        diffs = []
        for t in picks:
            place(env, state[t])
            view = env.get_obs()["pixels"].astype(np.float64)
            diffs.append(float(np.abs(view - frames[int(t)]).mean()))
        out["placement_check"] = {"frames": len(picks), "mean_abs_pixel_diff": round(float(np.mean(diffs)), 4),
                                  "max_abs_pixel_diff": round(float(np.max(diffs)), 4)}
    store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, action="append", required=True, help="a Push-T episode store (repeat for several)")
    parser.add_argument("--frames-checked", type=int, default=200, help="stored frames rendered again to check the placement (default 200)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    gym = import_gym_pusht()
    env = gym.make("gym_pusht/PushT-v0", obs_type="pixels_agent_pos", render_mode="rgb_array").unwrapped
    env.reset(seed=0)
    out = {"bench": "pusht_demo_coverage", "success_coverage": SUCCESS_COVERAGE,
           "stores": [store_coverage(p, env, args.frames_checked, not args.no_progress) for p in args.store]}
    env.close()
    emit(out, started, args.json_out)


if __name__ == "__main__":
    main()

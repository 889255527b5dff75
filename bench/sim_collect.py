"""Simulation benchmark: scripted-expert success per task and demonstration-collection throughput.

Prints one JSON object:
- ``experts``: per task, the expert's success over ``--episodes`` seeded episodes (the collector's
  own seeds, failures kept), with the 95% Wilson interval, mean length and strategies drawn.
  Targets: >= 90% on every task, >= 70% on ``square``.
- ``throughput``: frames/s collecting ``lift`` with and without both 84x84 cameras, with 1 and 2
  worker processes (end to end: process start and env creation included), and the time of one
  ``env.step`` in a warm process.

    nice -n 10 python bench/sim_collect.py                       # full run (50 episodes per task)
    nice -n 10 python bench/sim_collect.py --episodes 5 --throughput-episodes 4   # a quick run
    python bench/sim_collect.py --tasks stack --throughput-episodes 0 --update bench/results/sim_collect.json
        # one expert measured again (after a change to it), the rest of the file kept
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from dp.collect.collector import collect  # noqa: E402
from dp.data.store import EpisodeStore  # noqa: E402
from dp.sim.tasks import CAMERAS, TASKS, get_task  # noqa: E402
from dp.stats import wilson_interval  # noqa: E402


def expert_success(task: str, episodes: int, workers: int, root: Path) -> dict:
    out = root / f"{task}.zarr"
    summary = collect(task, episodes, out, workers=workers, keep_failures=True, max_attempts=episodes, progress=False)
    with EpisodeStore.open(out) as store:
        lengths = np.diff(np.concatenate([[0], store.episode_ends]))
        strategies = Counter(store.meta_column("strategy"))
    low, high = wilson_interval(summary.successes, summary.attempts)
    return {
        "episodes": summary.attempts,
        "successes": summary.successes,
        "success_rate": summary.success_rate,
        "success_ci95": [low, high],
        "mean_length": float(lengths.mean()),
        "strategies": dict(sorted(strategies.items())),
        "frames_per_second": summary.frames_per_second,
    }


def throughput(episodes: int, workers: int, cameras: list[str], root: Path) -> dict:
    out = root / f"tp_{workers}_{len(cameras)}.zarr"
    summary = collect("lift", episodes, out, workers=workers, cameras=cameras, keep_failures=True,
                      max_attempts=episodes, progress=False)
    return {"workers": workers, "cameras": cameras, "episodes": summary.attempts, "frames": summary.frames,
            "seconds": summary.seconds, "frames_per_second": summary.frames_per_second}


def step_time(cameras: list[str], steps: int = 200) -> float:
    """Median ms of one env.step of lift in a warm process."""
    env = get_task("lift").make_env(cameras)
    try:
        env.reset(0)
        for _ in range(20):
            env.step(np.zeros(7))
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            env.step(np.zeros(7))
            times.append(time.perf_counter() - start)
        return float(np.median(times) * 1000)
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=50, help="episodes per task for expert success")
    parser.add_argument("--tasks", default=",".join(TASKS), help="tasks to measure")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for the success runs")
    parser.add_argument("--throughput-episodes", type=int, default=12,
                        help="lift episodes per throughput run (0: no throughput or step-time runs)")
    parser.add_argument("--update", type=Path, metavar="JSON",
                        help="an earlier output of this bench: print it with what this run measured replaced")
    args = parser.parse_args()
    result: dict = json.loads(args.update.read_text()) if args.update else {}
    result.setdefault("experts", {})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for task in args.tasks.split(","):
            result["experts"][task] = expert_success(task, args.episodes, args.workers, root)
        if args.throughput_episodes > 0:
            result["throughput"] = [throughput(args.throughput_episodes, workers, cameras, root)
                                    for cameras in ([], list(CAMERAS)) for workers in (1, 2)]
            result["env_step_ms"] = {"state_only": step_time([]), "two_cameras_84": step_time(list(CAMERAS))}
            result["cpu_count"] = os.cpu_count()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

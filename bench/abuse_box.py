"""Hostile command sequences against the workspace box (issue 35): a `dp robot` sim controller on
loopback, driven tick by tick by a client that tries to carry the end effector out of the box.

Attacks (each on a fresh controller, ``--ticks`` control ticks, one command per tick):
- ``pose_far``: ``ee_pose`` targets absurdly far away ((1e6, -1e6, 1e6), (10, -10, 10), ...) with
  flipped orientations (half a turn about a random axis), a new one every 10 ticks;
- ``pose_walls``: ``ee_pose`` targets 0.5 m beyond a random face of the box (near enough to pass
  validation) with flipped orientations, a new one every 5 to 15 ticks;
- ``delta_large``: ``ee_delta`` steps of 1 to 25 times the step limit (up to the largest the controller
  accepts) toward a random wall, turning at up to 10 times the rotation limit, a new one every 3 to 10
  ticks;
- ``pose_walls_tight``, ``joint_outside``, ``delta_outside``: a box whose top is 6 cm below the start
  pose (the arm starts outside, and every wall is within reach): ``pose_walls`` with a new target every
  1 to 3 ticks; random joint targets across the joint range, a new one every 10 ticks; ``ee_delta``
  steps pulling up and away, turning, a new one every 5 ticks.

Prints JSON (and writes ``--out``, default bench/results/abuse_box.json) with, per attack: ticks; for
an arm that starts outside, how far out and the ticks it took to get in (null: never); from its first
tick inside on, the ticks outside the box and the largest distance outside (mm); over the whole run,
the ticks that carried an end effector already outside further out while a command ran; the clamps
and faults reported, and the messages the controller rejected.

  python bench/abuse_box.py                  # 200 ticks per attack
  python bench/abuse_box.py --ticks 100 --attacks pose_far joint_outside
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import emit  # noqa: E402
from dp.deploy.robot_config import load_robot  # noqa: E402
from dp.deploy.safety import Limits, box_distance  # noqa: E402
from dp.link import protocol as P  # noqa: E402
from dp.testing.attacks import beyond_a_wall, flipped  # noqa: E402
from dp.testing.robot_harness import Commander, StateWatcher, start_robot  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TIGHT = "limits.workspace_max=[0.3,0.3,0.95]"  # the top 6 cm below the Panda's start pose
FAR = np.array([[1e6, -1e6, 1e6], [10.0, -10.0, 10.0], [-10.0, 10.0, -10.0], [1e3, 1e3, -1e3]])
AHEAD = 10  # waypoints per command, one per tick
Draw = Callable[[P.State, np.random.Generator, Limits], np.ndarray]


def pose_far(s: P.State, rng: np.random.Generator, limits: Limits) -> np.ndarray:
    return np.concatenate([FAR[rng.integers(len(FAR))], flipped(s.ee_quat, rng)])


def pose_walls(s: P.State, rng: np.random.Generator, limits: Limits) -> np.ndarray:
    return np.concatenate([beyond_a_wall(limits, rng), flipped(s.ee_quat, rng)])


def delta_large(s: P.State, rng: np.random.Generator, limits: Limits) -> np.ndarray:
    toward, turn = beyond_a_wall(limits, rng) - s.ee_pos, rng.normal(size=3)
    return np.concatenate([toward / np.linalg.norm(toward) * limits.step_translation * rng.uniform(1, 25),
                           turn / np.linalg.norm(turn) * limits.step_rotation * rng.uniform(1, 10)])


def joint_outside(s: P.State, rng: np.random.Generator, limits: Limits) -> np.ndarray:
    return rng.uniform(limits.joint_min, limits.joint_max)


def delta_outside(s: P.State, rng: np.random.Generator, limits: Limits) -> np.ndarray:
    away = np.array([rng.normal() * 0.3, rng.normal() * 0.3, 1.0]) * limits.step_translation * 5
    return np.concatenate([away, rng.normal(size=3) * limits.step_rotation])


@dataclass
class Attack:
    """One hostile sequence: a new waypoint from ``draw`` every ``every`` (min, max) ticks."""

    mode: str
    overrides: tuple[str, ...]
    every: tuple[int, int]
    draw: Draw


ATTACKS = {
    "pose_far": Attack(P.MODE_EE_POSE, (), (10, 10), pose_far),
    "pose_walls": Attack(P.MODE_EE_POSE, (), (5, 15), pose_walls),
    "delta_large": Attack(P.MODE_EE_DELTA, (), (3, 10), delta_large),
    "pose_walls_tight": Attack(P.MODE_EE_POSE, (TIGHT,), (1, 3), pose_walls),
    "joint_outside": Attack(P.MODE_JOINT, (TIGHT,), (10, 10), joint_outside),
    "delta_outside": Attack(P.MODE_EE_DELTA, (TIGHT,), (5, 5), delta_outside),
}


def drive(attack: Attack, ticks: int, seed: int, limits: Limits) -> tuple[list[P.State], int]:
    """Start a controller for ``attack`` and drive it for ``ticks`` ticks: its States from the first
    command on, one per tick, and the messages it rejected meanwhile."""
    rng = np.random.default_rng(seed)
    robot, endpoint = start_robot(*attack.overrides)
    watcher = StateWatcher(endpoint)
    try:
        info = watcher.wait_info(120)
        pilot = Commander(endpoint, info.command_port)
        time.sleep(0.5)
        first = s = watcher.wait(lambda x: x.tick > 2, 60)[1]
        start, waypoint, change = len(watcher.states), None, 0
        for k in range(ticks):
            if k >= change:
                waypoint, change = attack.draw(s, rng, limits), k + int(rng.integers(attack.every[0], attack.every[1] + 1))
            times = s.obs_stamp + np.arange(1, AHEAD + 1) / info.control_hz
            pilot.send(P.Command(pilot.sender, pilot.next_seq(), s.boot, s.obs_stamp, attack.mode, times,
                                 np.tile(waypoint, (AHEAD, 1)), np.ones(AHEAD), float(times[-1])))
            s = watcher.wait(lambda x, tick=s.tick: x.tick > tick, 10, after=len(watcher.states) - 1)[1]
        time.sleep(0.3)  # the last commands counted
        pilot.close()
        rejected = watcher.states[-1][1].rejected - first.rejected
    finally:
        watcher.close()
        robot.stop()
    by_tick = {x.tick: x for _, x in watcher.states[start - 1:] if first.tick <= x.tick <= s.tick}
    return [by_tick[t] for t in sorted(by_tick)], rejected


def run_attack(attack: Attack, ticks: int, seed: int) -> dict:
    """Drive ``attack`` and measure each tick's distance outside the box."""
    config = load_robot("robots/panda_sim.yaml", list(attack.overrides))
    limits = Limits.from_config(config.limits, config.rates.control_hz)
    states, rejected = drive(attack, ticks, seed, limits)
    dist = np.array([box_distance(x.ee_pos, limits.box_min, limits.box_max) for x in states])
    commanded = np.array([not x.held for x in states])
    consecutive = np.diff([x.tick for x in states]) == 1
    outward = consecutive & commanded[1:] & (dist[:-1] > 0) & (dist[1:] > dist[:-1] + 1e-6)
    entered = int(np.argmax(dist <= 0)) if (dist <= 0).any() else None
    after = dist[entered:] if entered is not None else dist[:0]
    faults = Counter(f for x in states[1:] for f in x.faults)
    return {
        "mode": attack.mode, "overrides": list(attack.overrides), "ticks": len(states) - 1,
        "started_outside_mm": round(float(dist[0]) * 1e3, 2), "ticks_to_get_inside": entered,
        "ticks_outside": int((after > 0).sum()), "max_outside_mm": round(float(after.max(initial=0.0)) * 1e3, 2),
        "outward_ticks": int(outward.sum()),
        "max_outward_step_mm": round(float(np.where(outward, dist[1:] - dist[:-1], 0.0).max(initial=0.0)) * 1e3, 2),
        "rejected": rejected, "faults": dict(faults.most_common()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=200, help="control ticks per attack (default 200)")
    parser.add_argument("--attacks", nargs="+", choices=list(ATTACKS), help="which attacks (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "abuse_box.json", help="write the JSON here too")
    args = parser.parse_args()
    started = time.perf_counter()
    results = {}
    for i, name in enumerate(args.attacks or list(ATTACKS)):
        print(f"attack {name} ...", file=sys.stderr)
        results[name] = run_attack(ATTACKS[name], args.ticks, args.seed + i)
    config = load_robot("robots/panda_sim.yaml")
    out = {"robot": "robots/panda_sim.yaml", "control_hz": config.rates.control_hz, "attacks": results}
    out["targets"] = {"in_and_no_tick_outside_after": all(r["ticks_to_get_inside"] is not None and r["ticks_outside"] == 0
                                                          for r in results.values()),
                      "never_moved_further_out": all(r["outward_ticks"] == 0 for r in results.values())}
    emit(out, started, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Deploy-path benchmark: a `dp robot` sim controller and a `dp node`, real processes on loopback.

Prints JSON with
- ``obs_to_command_ms``: age of the observation when the command built from it reaches the
  controller (measured by the controller, median / p99), and the node's own cycle and policy times;
- ``jitter``: the node's loop period at the control rate (20 Hz), the controller's tick period, and
  the State stream (100 Hz) as a subscriber receives it;
- ``watchdog``: how long after a command expires, and after the heartbeat timeout runs out when a
  node goes silent, the controller reports hold (and holds at its next tick);
- ``success``: success rate through the deploy path over --episodes episodes, next to `dp eval`'s
  on the same seeds (in process, same policy).

  python bench/deploy.py                          # 50 episodes of expert:lift (several minutes)
  python bench/deploy.py --episodes 10 --policy exported/lift
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_json  # noqa: E402
from dp.deploy.robot_config import load_robot  # noqa: E402
from dp.eval.evaluate import evaluate  # noqa: E402
from dp.infer.load import is_exported, load_policy  # noqa: E402
from dp.link import protocol as P  # noqa: E402
from dp.stats import timing_summary  # noqa: E402
from dp.testing.robot_harness import Commander, StateWatcher, spawn_dp, start_robot  # noqa: E402




def tick_periods(states: list[P.State]) -> list[float]:
    """Intervals (ms) between the moments consecutive ticks' observations went out (the first State
    of each tick is published as soon as the tick is done), within episodes."""
    firsts: dict[tuple[int, int], P.State] = {}
    for s in states:
        firsts.setdefault((s.episode, s.tick), s)
    out = []
    for (ep, tick), s in sorted(firsts.items()):
        prev = firsts.get((ep, tick - 1))
        if prev is not None:
            out.append((s.stamp - prev.stamp) * 1e3)
    return out


def watchdog_trials(watcher: StateWatcher, endpoint: str, info: P.Info, trials: int, heartbeat_timeout: float) -> dict:
    cmd = Commander(endpoint, info.command_port)
    time.sleep(0.3)
    dt = 1.0 / info.control_hz
    expiry, expiry_tick, silence = [], [], []
    for i in range(trials):
        for kind in ("expiry", "heartbeat"):
            _, s = watcher.wait(lambda s: s.mode == P.ROBOT_HOLD, 5, after=len(watcher.states) - 1)
            if kind == "expiry":  # one waypoint, heartbeats keep coming: only the expiry can stop it
                times = np.array([s.obs_stamp + dt])
                expires = float(times[-1] + 0.05)
            else:  # a 1 s chunk and then silence: only the heartbeat watchdog can stop it
                times = s.obs_stamp + dt * np.arange(1, 21)
                expires = float(times[-1])
            n = len(watcher.states)
            sent = time.monotonic()
            cmd.send(P.Command(cmd.sender, cmd.next_seq(), s.boot, s.obs_stamp, "ee_delta", times,
                               np.zeros((len(times), 6)), np.full(len(times), -1.0), expires))
            watcher.wait(lambda s: s.mode == P.ROBOT_TRACK, 2, after=n)
            n = len(watcher.states)  # from here on, a hold is the watchdog's
            while kind == "expiry" and time.monotonic() < expires + 0.2:
                cmd.control(P.Heartbeat, watcher.states[-1][1])
                time.sleep(0.02)
            _, hold = watcher.wait(lambda s: s.mode == P.ROBOT_HOLD, 3, after=n)
            if kind == "expiry":
                expiry.append((hold.stamp - expires) * 1e3)
                _, held = watcher.wait(lambda s, t=hold.tick: s.held and s.tick > t, 3, after=n)
                expiry_tick.append((held.obs_stamp - expires) * 1e3)
            else:
                silence.append((hold.stamp - (sent + heartbeat_timeout)) * 1e3)
    cmd.close()
    return {
        "hold_after_expiry_ms": timing_summary(expiry),
        "held_tick_after_expiry_ms": timing_summary(expiry_tick),
        "hold_after_heartbeat_timeout_ms": timing_summary(silence),
        "heartbeat_timeout_s": heartbeat_timeout,
        "trials": trials,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="expert:lift", help="policy spec for dp node (default expert:lift)")
    parser.add_argument("--task", default="lift", help="sim task (default lift)")
    parser.add_argument("--episodes", type=int, default=50, help="episodes through the deploy path (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the test-split episodes, as dp eval --split test --seed (default 0)")
    parser.add_argument("--watchdog-trials", type=int, default=20, help="trials per watchdog measurement (default 20)")
    parser.add_argument("--skip-eval", action="store_true", help="do not run the in-process dp eval reference")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    rti = is_exported(args.policy)  # an export runs with its RTI warm starts, in the node and in the reference alike

    config = load_robot("robots/panda_sim.yaml")
    result: dict = {"policy": args.policy, "task": args.task, "control_hz": config.rates.control_hz,
                    "state_hz": config.rates.state_hz}
    robot, endpoint = start_robot(f"driver.options.task={args.task}")
    watcher = StateWatcher(endpoint)
    try:
        info = watcher.wait_info(30)
        with TemporaryDirectory() as tmp:
            report_path = Path(tmp) / "node.json"
            n0 = len(watcher.states)
            t0 = time.monotonic()
            node = spawn_dp(["node", "--policy", args.policy, "--robot", endpoint, "--episodes", str(args.episodes),
                             f"--rti={'on' if rti else 'off'}",  # as the in-process evaluation below
                             "--seed", str(args.seed), "--json-out", str(report_path)])
            rc = node.popen.wait(args.episodes * 30 + 120)
            if rc != 0:
                raise SystemExit(f"dp node failed ({rc}):\n{node.output}")
            wall = time.monotonic() - t0
            report = json.loads(report_path.read_text())
        arrivals = [t for t, _ in watcher.states[n0:]]
        states = [s for _, s in watcher.states[n0:]]
        gaps = np.diff(arrivals) * 1e3
        result["obs_to_command_ms"] = report["obs_to_command_ms"]
        result["node_cycle_ms"] = report["cycle_ms"]
        result["policy_ms"] = report["policy_ms"]
        result["first_chunk_ms"] = report["prime_ms"]  # sampled while the robot holds, before the first command
        result["jitter"] = {
            "node_period_ms": report["period_ms"],
            "controller_tick_period_ms": timing_summary(tick_periods(states), 1e3 / config.rates.control_hz),
            "state_rate_hz": float((len(states) - 1) / (states[-1].stamp - states[0].stamp)),
            "state_interarrival_ms": timing_summary(gaps, 1e3 / config.rates.state_hz),
        }
        deploy = {"episodes": report["episodes"], "success_rate": report["success_rate"],
                  "mean_episode_length": report["mean_episode_length"], "wall_seconds": round(wall, 1)}
        result["watchdog"] = watchdog_trials(watcher, endpoint, info, args.watchdog_trials, config.safety.heartbeat_timeout)
    finally:
        watcher.close()
        robot.stop()
    if not args.skip_eval:
        ev = evaluate(load_policy(args.policy, rti=rti, importable=True), args.task, args.episodes, seed=args.seed,
                      split="test", progress=False).as_dict()  # the node's seeds
        deploy["dp_eval_success_rate"] = ev["success_rate"]
        deploy["dp_eval_mean_length"] = ev["mean_length"]
        deploy["difference_points"] = round(100 * (deploy["success_rate"] - ev["success_rate"]), 1)
    result["success"] = deploy
    result["targets"] = {
        "obs_to_command_p99_ms<=10": result["obs_to_command_ms"].get("p99", np.inf) <= 10.0,
        "watchdog_hold_after_expiry_max_ms<=100": result["watchdog"]["hold_after_expiry_ms"]["max"] <= 100.0,
        "state_rate_hz>=100": result["jitter"]["state_rate_hz"] >= 100.0,
    }
    write_json(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

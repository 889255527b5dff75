"""Stop always wins, and nothing recorded replays (issue 35, items 3 and 4), against a real `dp robot`
sim controller on loopback:

- ``stop_with_full_table``: a node drives the arm while 63 fake senders keep the controller's sender
  table full (heartbeats every 50 ms with fresh stamps); an operator's Stop, from a new sender each
  trial, -> the first State reporting ``stopped`` (target <= 100 ms); also `dp stop` itself, once;
- ``reset_after_stop``: Resets from the live node after a Stop, while it keeps commanding: how many
  cleared the Stop (target 0) and how far the arm moved (mm);
- ``replays``: a recorded Reset, Stop, Release and Heartbeat sent again at once (their sender still
  tracked) and after the replay window, once new senders have evicted it: how many were accepted
  (target 0).

  python bench/abuse_stop.py --trials 20
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import emit  # noqa: E402
from dp.deploy.controller import MAX_SENDERS  # noqa: E402
from dp.link import protocol as P  # noqa: E402
from dp.stats import timing_summary  # noqa: E402
from dp.testing.robot_harness import Commander, StateWatcher, spawn_dp, start_robot  # noqa: E402

RESULTS = Path(__file__).parent / "results"
DT = 0.05  # the sim robot file's control period


def latest(watcher: StateWatcher) -> P.State:
    return watcher.states[-1][1]


def after(watcher: StateWatcher, predicate, timeout: float = 5.0) -> tuple[float, P.State]:
    """The first State from now on satisfying ``predicate``: (arrival time, State)."""
    return watcher.wait(predicate, timeout, after=len(watcher.states) - 1)


def drive(node: Commander, s: P.State, steps: int = 40) -> None:
    """Slow motion along y (0.5 mm a tick) from State ``s``."""
    t = s.obs_stamp + DT * np.arange(1, steps + 1)
    node.send(P.Command(node.sender, node.next_seq(), s.boot, s.obs_stamp, "ee_delta", t,
                        np.tile([0.0, 0.0005, 0, 0, 0, 0], (steps, 1)), -np.ones(steps), float(t[-1])))


def beat(watcher: StateWatcher, node: Commander, fakes: Commander, ids: list[int], stop: threading.Event) -> None:
    """Heartbeats every 50 ms from the node and from every fake sender id (one connection for all)."""
    while not stop.wait(0.05):
        s = latest(watcher)
        node.control(P.Heartbeat, s)
        for sender in ids:
            fakes.send(P.Heartbeat(sender, time.monotonic_ns(), s.boot, s.stamp))


def stop_with_full_table(watcher: StateWatcher, endpoint: str, info: P.Info, node: Commander, trials: int) -> dict:
    latencies, refused_newcomers = [], 0
    for _ in range(trials):
        drive(node, latest(watcher))
        after(watcher, lambda s: s.mode == P.ROBOT_TRACK)
        newcomer = Commander(endpoint, info.command_port)
        time.sleep(0.1)  # connected
        rejected = latest(watcher).rejected
        newcomer.control(P.Heartbeat, latest(watcher))  # a new sender that is not a Stop: refused, the table is full
        _, s = after(watcher, lambda s: s.rejected > rejected, 2.0)
        refused_newcomers += 1
        sent = time.monotonic()
        newcomer.control(P.Stop, latest(watcher), "bench: operator")
        _, stopped = after(watcher, lambda s: s.mode == P.ROBOT_STOPPED)
        latencies.append((stopped.stamp - sent) * 1e3)
        newcomer.control(P.Release, latest(watcher), "bench: all clear")
        after(watcher, lambda s: s.mode != P.ROBOT_STOPPED)
        newcomer.close()
    cli = spawn_dp(["stop", "--robot", endpoint, "--reason", "bench"])
    cli.popen.wait(60)
    confirmed = re.search(r"confirmed (\d+) ms", cli.output)
    release = spawn_dp(["stop", "--robot", endpoint, "--release"])
    release.popen.wait(60)
    return {"trials": trials, "senders_tracked": MAX_SENDERS, "newcomers_refused_before_their_stop": refused_newcomers,
            "stop_latency_ms": timing_summary(latencies),
            "dp_stop_confirmed_ms": int(confirmed.group(1)) if confirmed else None, "dp_stop_exit": cli.popen.returncode,
            "dp_stop_release_exit": release.popen.returncode}


def reset_after_stop(watcher: StateWatcher, node: Commander, resets: int) -> dict:
    operator_stop = P.Stop(P.new_id(), 1, latest(watcher).boot, latest(watcher).stamp, "bench: operator")
    node.send_raw(P.encode(operator_stop))
    _, stopped = after(watcher, lambda s: s.mode == P.ROBOT_STOPPED)
    for i in range(resets):
        node.control(P.Reset, latest(watcher), i)
        drive(node, latest(watcher), 4)
        time.sleep(DT)
    time.sleep(0.3)
    now = latest(watcher)
    cleared = int(now.mode != P.ROBOT_STOPPED or now.episode != stopped.episode)
    moved = float(np.linalg.norm(now.ee_pos - stopped.ee_pos) * 1e3)
    node.send(P.Release(node.sender, node.next_seq(), now.boot, now.stamp, "bench"))
    after(watcher, lambda s: s.mode != P.ROBOT_STOPPED)
    return {"resets_sent": resets, "stops_cleared_by_a_reset": cleared, "arm_moved_mm_while_stopped": round(moved, 3)}


def replays(watcher: StateWatcher, endpoint: str, info: P.Info, window: float) -> dict:
    recorder = Commander(endpoint, info.command_port)
    time.sleep(0.2)
    s = latest(watcher)
    recorded = [recorder.control(P.Reset, s, 7)]
    after(watcher, lambda st: st.episode > s.episode, 10)
    recorded.append(recorder.control(P.Stop, latest(watcher), "recorded"))
    after(watcher, lambda st: st.mode == P.ROBOT_STOPPED)
    recorded.append(recorder.control(P.Release, latest(watcher), "recorded"))
    after(watcher, lambda st: st.mode != P.ROBOT_STOPPED)
    recorded.append(recorder.control(P.Heartbeat, latest(watcher)))
    time.sleep(0.2)
    accepted = 0
    for when in ("at once", "after the window and eviction"):
        if when != "at once":
            time.sleep(window + 0.3)
            for _ in range(MAX_SENDERS):  # fresh senders evict the quiet recorder from the table
                recorder.send(P.Heartbeat(P.new_id(), 1, latest(watcher).boot, latest(watcher).stamp))
            time.sleep(0.2)
        for msg in recorded:
            before = latest(watcher)
            recorder.send(msg)
            _, seen = after(watcher, lambda st: st.rejected > before.rejected, 2.0)
            accepted += int(seen.rejected == before.rejected or seen.episode != before.episode)
    recorder.close()
    return {"replayed": 2 * len(recorded), "accepted": accepted, "window_s": window}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="operator Stops with the sender table full (default 20)")
    parser.add_argument("--resets", type=int, default=10, help="Resets sent after a Stop (default 10)")
    parser.add_argument("--out", type=Path, default=RESULTS / "abuse_stop.json", help="write the JSON here too")
    args = parser.parse_args()
    started = time.perf_counter()
    horizon, timeout = 0.5, 0.3  # a short replay window keeps the run short
    robot, endpoint = start_robot(f"safety.max_command_horizon={horizon}", f"safety.heartbeat_timeout={timeout}")
    watcher = StateWatcher(endpoint)
    stop = threading.Event()
    try:
        info = watcher.wait_info(60)
        node, fakes = Commander(endpoint, info.command_port), Commander(endpoint, info.command_port)
        time.sleep(0.3)
        node.control(P.Reset, latest(watcher), 0)
        after(watcher, lambda s: s.episode >= 1, 30)
        threading.Thread(target=beat, args=(watcher, node, fakes, [P.new_id() for _ in range(MAX_SENDERS - 1)], stop),
                         daemon=True).start()
        time.sleep(0.3)
        out = {"stop_with_full_table": stop_with_full_table(watcher, endpoint, info, node, args.trials),
               "reset_after_stop": reset_after_stop(watcher, node, args.resets)}
        stop.set()
        time.sleep(horizon + timeout + 0.3)  # the fake senders fall quiet past the window: room in the table
        out["replays"] = replays(watcher, endpoint, info, horizon + timeout)
    finally:
        stop.set()
        watcher.close()
        robot.stop()
    out["controller_summary"] = next((line for line in reversed(robot.lines) if "replayed or stale" in line), None)
    out["targets"] = {
        "stop_latency_max_ms<=100": out["stop_with_full_table"]["stop_latency_ms"]["max"] <= 100.0,
        "no_reset_clears_a_stop": out["reset_after_stop"]["stops_cleared_by_a_reset"] == 0,
        "no_replay_accepted": out["replays"]["accepted"] == 0,
        "dp_stop_and_release_with_full_table": out["stop_with_full_table"]["dp_stop_exit"] == 0
        and out["stop_with_full_table"]["dp_stop_release_exit"] == 0,
    }
    emit(out, started, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

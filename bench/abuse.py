"""The controller under a flood (issue 15, item 1): a `dp robot` sim controller on loopback while 20
connections push 8 MB junk heartbeats (the issue's frame, 60 per round, round after round) mixed
with small junk frames that pass the size checks and must be unpacked to be refused (``--small``).

Prints JSON (and writes ``--out``, default bench/results/abuse.json) with, during the flood:
- ``tick_period_ms``: the controller's control tick period (the first State of each tick), p99 target
  <= 1.5x the period;
- ``stop_latency_ms``: a Stop sent by a node -> the first State reporting ``stopped`` (target <= 100 ms);
- ``watchdog_hold_ms``: a node that goes silent while commanding -> the State reporting the hold,
  counted from when its heartbeat timeout ran out (target <= 100 ms);
- ``memory_growth_mb``: the controller's resident memory, largest during the flood minus before it
  (target <= 50 MB); and what was sent and what the controller counted as rejected.

  python bench/abuse.py                      # 30 s of flood, 10 Stop and 10 watchdog trials
  python bench/abuse.py --duration 15 --trials 5
  python bench/abuse.py --all                # then every other attack (issue 35), each to its own JSON

The other attacks, each a script of its own that ``--all`` runs after the flood:
``bench/abuse_stop.py`` (an operator's Stop with the sender table full, Resets after a Stop,
replayed recordings), ``bench/abuse_box.py`` (hostile command sequences against the workspace box,
in every mode) and ``bench/abuse_data.py`` (corrupt datasets and stores through the real CLI).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import emit  # noqa: E402
from dp.deploy.robot_config import load_robot  # noqa: E402
from dp.link import protocol as P  # noqa: E402
from dp.stats import timing_summary  # noqa: E402
from dp.testing.robot_harness import Commander, StateWatcher, start_robot  # noqa: E402

RESULTS = Path(__file__).parent / "results"
OTHER_ATTACKS = ("abuse_stop.py", "abuse_box.py", "abuse_data.py")  # what --all runs after the flood


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def flood(endpoint: str, port: int, stop: threading.Event, sent: dict, small_per_round: int) -> None:
    """20 connections: rounds of 60 x 8 MB junk heartbeats, then ``small_per_round`` small junk frames each."""
    big = msgpack.packb({"v": 1, "type": "heartbeat", "sender": 1, "seq": 1, "junk": [[1] * 120] * 65000})
    small = [msgpack.packb({"v": 1, "type": "heartbeat", "sender": 1, "seq": -1, "junk": [[[1] * 3] * 3] * 8}),
             msgpack.packb({"v": 1, "type": "command", "pad": b"\0" * 20_000}),
             msgpack.packb([[[[0] * 30] * 30]] * 30)]
    attackers = [Commander(endpoint, port) for _ in range(20)]
    for a in attackers:
        a.push.setsockopt(zmq.SNDHWM, 64)  # the attacker's own queue: bounded, so a round waits for the last
    try:
        while not stop.is_set():
            for i in range(60):
                attackers[i % 20].send_raw(big)
            sent["big"] += 60
            for a in attackers:
                for j in range(small_per_round):
                    a.send_raw(small[j % 3])
            sent["small"] += 20 * small_per_round
            time.sleep(0.05)
    finally:
        for a in attackers:
            a.close()


def tick_periods(states: list[P.State]) -> list[float]:
    """Intervals (ms) between the first States of consecutive ticks of one episode."""
    firsts: dict[tuple[int, int], P.State] = {}
    for s in states:
        firsts.setdefault((s.episode, s.tick), s)
    return [(s.stamp - firsts[(ep, tick - 1)].stamp) * 1e3 for (ep, tick), s in sorted(firsts.items()) if (ep, tick - 1) in firsts]


def reset(watcher: StateWatcher, pilot: Commander) -> P.State:
    n, episode = len(watcher.states), watcher.states[-1][1].episode
    pilot.control(P.Reset, watcher.states[-1][1], None)
    return watcher.wait(lambda s: s.episode > episode and s.mode == P.ROBOT_HOLD, 10, after=n)[1]


def command(pilot: Commander, s: P.State, dt: float, steps: int) -> None:
    times = s.obs_stamp + dt * np.arange(1, steps + 1)
    pilot.send(P.Command(pilot.sender, pilot.next_seq(), s.boot, s.obs_stamp, "ee_delta", times,
                         np.tile([0.0, 0.0005, 0, 0, 0, 0], (steps, 1)), np.full(steps, -1.0), float(times[-1])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of flood at least (default 30)")
    parser.add_argument("--trials", type=int, default=10, help="Stop and watchdog trials each (default 10)")
    parser.add_argument("--small", type=int, default=50, help="small junk frames per connection per round (default 50)")
    parser.add_argument("--no-flood", action="store_true", help="the same trials without the flood (the machine's baseline)")
    parser.add_argument("--out", type=Path, default=RESULTS / "abuse.json", help="write the JSON here too")
    parser.add_argument("--all", action="store_true", help="then run the other attacks (OTHER_ATTACKS), each writing its own JSON")
    args = parser.parse_args()
    started = time.perf_counter()
    config = load_robot("robots/panda_sim.yaml")
    dt, timeout = 1.0 / config.rates.control_hz, config.safety.heartbeat_timeout
    robot, endpoint = start_robot()
    watcher = StateWatcher(endpoint)
    stop, sent = threading.Event(), {"big": 0, "small": 0}
    try:
        info = watcher.wait_info(60)
        pilot = Commander(endpoint, info.command_port)
        time.sleep(0.5)
        reset(watcher, pilot)
        time.sleep(1.0)
        rss_before, rejected_before = rss_mb(robot.popen.pid), watcher.states[-1][1].rejected
        n0, t0 = len(watcher.states), time.monotonic()
        cpu0, own0 = cpu_seconds(robot.popen.pid), time.process_time()
        attack = threading.Thread(target=flood, args=(endpoint, info.command_port, stop, sent, args.small), daemon=True)
        if not args.no_flood:
            attack.start()
        rss_peak, stops, holds = rss_before, [], []
        while len(stops) < args.trials or len(holds) < args.trials or time.monotonic() - t0 < args.duration:
            rss_peak = max(rss_peak, rss_mb(robot.popen.pid))
            s = reset(watcher, pilot)
            if len(stops) <= len(holds):  # a Stop while tracking: latency to the State that reports it
                n = len(watcher.states)
                command(pilot, s, dt, 40)
                watcher.wait(lambda s: s.mode == P.ROBOT_TRACK, 5, after=n)
                n, t_sent = len(watcher.states), time.monotonic()
                pilot.control(P.Stop, watcher.states[-1][1], "bench")
                stops.append((watcher.wait(lambda s: s.mode == P.ROBOT_STOPPED, 5, after=n)[1].stamp - t_sent) * 1e3)
                pilot.control(P.Release, watcher.states[-1][1], "bench")
            else:  # a node that falls silent while its 2 s chunk runs: only the heartbeat watchdog holds it
                n = len(watcher.states)
                command(pilot, s, dt, 40)
                t_last = time.monotonic()
                _, tracking = watcher.wait(lambda s: s.mode == P.ROBOT_TRACK, 5, after=n)
                _, held = watcher.wait(lambda s: s.mode == P.ROBOT_HOLD and s.stamp > tracking.stamp, 5, after=n)
                holds.append((held.stamp - (t_last + timeout)) * 1e3)
        stop.set()
        if attack.is_alive():
            attack.join(30)
        time.sleep(1.0)
        rss_after = rss_mb(robot.popen.pid)
        flood_states = [s for _, s in watcher.states[n0:]]
        flood_s = time.monotonic() - t0
        cpu = {"controller": (cpu_seconds(robot.popen.pid) - cpu0) / flood_s, "bench_and_attacker": (time.process_time() - own0) / flood_s}
        last = watcher.states[-1][1]
    finally:
        stop.set()
        watcher.close()
        robot.stop()
    period = tick_periods(flood_states)
    out = {
        "control_hz": config.rates.control_hz,
        "flood": {"seconds": round(flood_s, 1), "connections": 0 if args.no_flood else 20, "frames_8mb_sent": sent["big"],
                  "small_junk_frames_sent": sent["small"], "rejected_by_controller": last.rejected - rejected_before,
                  "note": "8 MB frames are dropped by ZeroMQ (MAXMSGSIZE) before the controller sees them"},
        "tick_period_ms": timing_summary(period, 1e3 * dt),
        "stop_latency_ms": timing_summary(stops),
        "watchdog_hold_ms": timing_summary(holds),
        "heartbeat_timeout_s": timeout,
        "cpu_cores_used": {k: round(v, 2) for k, v in cpu.items()},
        "memory_mb": {"before": round(rss_before, 1), "peak": round(rss_peak, 1), "after": round(rss_after, 1),
                      "growth": round(max(rss_peak, rss_after) - rss_before, 1)},
    }
    out["targets"] = {
        "tick_period_p99<=1.5x_period": out["tick_period_ms"]["p99"] <= 1.5e3 * dt,
        "stop_latency_max_ms<=100": out["stop_latency_ms"]["max"] <= 100.0,
        "watchdog_hold_max_ms<=100": out["watchdog_hold_ms"]["max"] <= 100.0,
        "memory_growth_mb<=50": out["memory_mb"]["growth"] <= 50.0,
    }
    emit(out, started, args.out)
    if args.all:
        for script in OTHER_ATTACKS:
            subprocess.run([sys.executable, str(Path(__file__).parent / script)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

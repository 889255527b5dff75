"""Driving a `dp robot` controller tick by tick and checking its box (tests/test_deploy_box.py, the
LeRobot driver's tests): a new episode, commands one waypoint ahead per tick, what was refused, how
far outside the box each tick was."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from dp.deploy.safety import Limits, box_distance
from dp.link import protocol as P
from dp.testing.robot_harness import Commander, StateWatcher

OUTWARD = 1e-5  # metres: a tick that moves an arm outside further out by more than this breaks the rule
AHEAD = 10  # waypoints per command, one per tick
TICK_WAIT = 30.0  # seconds to wait for a tick's State (20 Hz ticks): one full run on 2 busy cores once saw no State
# for 10 s, a stall not seen again alone or beside CPU hogs; the watcher's timeout says what arrived


def new_episode(watcher: StateWatcher, cmd: Commander, seed: int) -> P.State:
    n, episode = len(watcher.states), watcher.states[-1][1].episode
    cmd.control(P.Reset, watcher.states[-1][1], seed)
    return watcher.wait(lambda s: s.episode > episode and s.mode == P.ROBOT_HOLD, 60, after=n)[1]


def drive(watcher: StateWatcher, cmd: Commander, start: P.State, ticks: int,
          command: Callable[[P.State, int], tuple[str, np.ndarray]], hz: float = 20.0) -> list[P.State]:
    """Send ``command(state, k)`` = (mode, one waypoint) for AHEAD ticks ahead at each of ``ticks``
    ticks (waypoints ``1 / hz`` apart); the States of the episode from ``start`` on, one per tick."""
    s, n = start, len(watcher.states)
    for k in range(ticks):
        mode, waypoint = command(s, k)
        times = s.obs_stamp + np.arange(1, AHEAD + 1) / hz
        cmd.send(P.Command(cmd.sender, cmd.next_seq(), s.boot, s.obs_stamp, mode, times, np.tile(waypoint, (AHEAD, 1)),
                           np.ones(AHEAD), float(times[-1])))
        s = watcher.wait(lambda x, tick=s.tick: x.tick > tick, TICK_WAIT, after=len(watcher.states) - 1)[1]
    by_tick = {x.tick: x for _, x in watcher.states[n - 1:] if x.episode == start.episode and x.tick >= start.tick}
    return [by_tick[t] for t in sorted(by_tick)]


def rejected_since(watcher: StateWatcher, before: P.State, expected: int) -> int:
    """The messages the controller rejected since State ``before``, once it counted ``expected`` (or a second passed)."""
    try:
        watcher.wait(lambda s: s.rejected - before.rejected >= expected, 1.0, after=len(watcher.states) - 1)
    except TimeoutError:
        pass
    time.sleep(0.1)  # anything counted beyond
    return watcher.states[-1][1].rejected - before.rejected


def excursions(limits: Limits, states: list[P.State]) -> tuple[np.ndarray, list[int]]:
    """Each tick's distance outside the box (m), and the ticks that ran a command while the end
    effector was outside and left it further out."""
    dist = np.array([box_distance(s.ee_pos, limits.box_min, limits.box_max) for s in states])
    outward = [b.tick for a, b, da, db in zip(states, states[1:], dist, dist[1:])
               if b.tick == a.tick + 1 and not b.held and da > 0 and db > da + OUTWARD]
    return dist, outward

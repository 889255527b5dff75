"""Issue 35: the workspace box holds whatever the command, in every mode, on a real `dp robot` sim
controller over real ZeroMQ on loopback (bench/abuse_box.py runs the same attacks for longer).

Each test drives the controller tick by tick the way the attack that found the holes did, and checks
every tick's State: not one tick outside the box once the end effector is in it, an end effector
outside never carried further out during a tick that ran a command, absurd targets refused and counted.

Literally zero is what the physics allows because of what the controller now does with each target
(dp/deploy/safety.py; measured on this simulated Panda): it keeps it ``wall_margin`` (2 mm) inside
the box and ``coast_steps`` (2) times the last tick's motion back from a wall the arm moves toward (the
arm stopped dead goes on 1.0-1.46 times that), brakes an arm closer than that, and near a wall shortens
a step to what the arm may stray across its path (up to 6% of a step: a full step from rest 3 mm under
the wall carried it 2-3 mm through)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from dp.deploy.robot_config import load_robot
from dp.deploy.safety import Limits
from dp.link import protocol as P
from dp.testing.attacks import beyond_a_wall, flipped
from dp.testing.box_checks import drive, excursions, new_episode, rejected_since
from dp.testing.robot_harness import Commander, StateWatcher, start_robot, watched_robot

pytestmark = pytest.mark.slow  # trains, simulates or runs processes: `pytest -m "not slow"` leaves it out

TIGHT = "limits.workspace_max=[0.3,0.3,0.95]"  # the box's top 6 cm below the Panda's start pose
FAR = np.array([[1e6, -1e6, 1e6], [10.0, -10.0, 10.0]])  # the original attack's targets: now refused


def limits_of(*overrides: str) -> Limits:
    config = load_robot("robots/panda_sim.yaml", list(overrides))
    return Limits.from_config(config.limits, config.rates.control_hz)


@pytest.fixture(scope="module")
def robot():
    yield from watched_robot(info_timeout=120)


@pytest.fixture(scope="module")
def tight_robot():
    """A controller whose box the arm starts 6 cm above."""
    proc, endpoint = start_robot(TIGHT)
    watcher = StateWatcher(endpoint)
    info = watcher.wait_info(120)
    yield proc, endpoint, watcher, info
    watcher.close()
    assert proc.alive(), proc.output
    assert proc.stop() == 0, proc.output


def refused_waypoint(mode: str, k: int, quat: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A waypoint the controller must refuse: a NaN position (``k`` = 1), a quaternion of norm 1.5 or an
    infinite turn (2), else one of the original attack's far targets (absurd)."""
    pos = np.array([np.nan, 0.0, 1.0]) if k == 1 else np.zeros(3) if k == 2 else FAR[k % 2]
    if mode == P.MODE_EE_POSE:
        return np.concatenate([pos, flipped(quat, rng) * (1.5 if k == 2 else 1.0)])
    return np.concatenate([pos, [np.inf if k == 2 else 0.0, 0.0, 0.0]])


@pytest.mark.parametrize("mode", [P.MODE_EE_POSE, P.MODE_EE_DELTA])
def test_hostile_targets_beyond_the_walls_never_carry_the_arm_out(robot, mode):
    """The attack of issue 35: pose targets beyond the walls with flipped orientations, or deltas of up
    to 25 steps toward them turning at up to 10 times the rotation limit, a new one every 5 ticks,
    among them absurd ones (the original (1e6, -1e6, 1e6) and (10, -10, 10)), a quaternion of norm 1.5
    and a NaN. It carried the end effector up to 114 mm outside this robot file's box."""
    proc, endpoint, watcher, info = robot
    limits = limits_of()
    cmd = Commander(endpoint, info.command_port)
    time.sleep(0.3)
    start = new_episode(watcher, cmd, seed=5)
    rng = np.random.default_rng(7)
    aim: dict[str, np.ndarray] = {}
    refused = 0

    def command(s: P.State, k: int) -> tuple[str, np.ndarray]:
        nonlocal refused
        if k % 5 == 0:
            aim["pos"], aim["quat"], aim["size"] = beyond_a_wall(limits, rng), flipped(s.ee_quat, rng), rng.uniform(1, 25)
            aim["turn"] = rng.normal(size=3) * limits.step_rotation * rng.uniform(1, 10) / np.sqrt(3)
        if k % 4 == 3 or k in (1, 2):  # refused: the previous command runs on
            refused += 1
            return mode, refused_waypoint(mode, k, s.ee_quat, rng)
        if mode == P.MODE_EE_POSE:
            return mode, np.concatenate([aim["pos"], aim["quat"]])
        toward = aim["pos"] - s.ee_pos
        return mode, np.concatenate([toward / np.linalg.norm(toward) * limits.step_translation * aim["size"], aim["turn"]])

    states = drive(watcher, cmd, start, 120, command)
    cmd.close()
    dist, outward = excursions(limits, states)
    faults = {f for s in states for f in s.faults}
    assert len(states) >= 120 and "clamped:workspace" in faults, faults  # it was pushed against the walls
    assert dist.max() == 0 and not outward, (dist.max(), outward)
    assert rejected_since(watcher, start, refused) == refused  # every absurd target refused, nothing else


def test_joint_mode_outside_the_box_holds_then_steps_back_in_through_the_kinematics(tight_robot):
    """Joint mode refused all motion once outside (a frozen arm that drifted out with no way back). Held
    without a command, the arm stays out and says so; random joint targets across the joint range (some
    absurdly beyond it: refused) then step it straight back in, never further out, and it stays in."""
    proc, endpoint, watcher, info = tight_robot
    limits = limits_of(TIGHT)
    cmd = Commander(endpoint, info.command_port)
    time.sleep(0.3)
    start = new_episode(watcher, cmd, seed=6)
    _, held = watcher.wait(lambda s: s.tick >= start.tick + 3, 30, after=len(watcher.states) - 1)
    assert held.held and "outside_workspace" in held.faults and limits.outside(held.ee_pos)
    rng = np.random.default_rng(8)
    refused = 0

    def command(s: P.State, k: int) -> tuple[str, np.ndarray]:
        nonlocal refused
        if k % 10 == 9:
            refused += 1
            return P.MODE_JOINT, limits.joint_max + 10.0  # more than a joint range beyond: absurd
        return P.MODE_JOINT, rng.uniform(limits.joint_min, limits.joint_max)

    states = drive(watcher, cmd, held, 70, command)
    cmd.close()
    dist, outward = excursions(limits, states)
    entered = int(np.argmax(dist == 0))
    assert dist[0] > 0.03 and 0 < entered <= 20, dist[:25]  # some 5 cm out, back in within a second
    assert not outward and dist[entered:].max() == 0, (outward, dist[entered:].max())
    assert all("outside_workspace" in s.faults for s in states[1:entered]) and len(states) - entered >= 45
    assert rejected_since(watcher, held, refused) == refused


def test_commands_pulling_away_from_outside_only_ever_move_the_arm_inward(tight_robot):
    """From 6 cm above the box, deltas pulling up and away and turning, then pose targets above the box
    with flipped orientations: the arm is driven straight back in without turning, never further out."""
    proc, endpoint, watcher, info = tight_robot
    limits = limits_of(TIGHT)
    cmd = Commander(endpoint, info.command_port)
    time.sleep(0.3)
    start = new_episode(watcher, cmd, seed=7)
    rng = np.random.default_rng(9)

    def command(s: P.State, k: int) -> tuple[str, np.ndarray]:
        if k < 40:
            away = np.array([rng.normal() * 0.3, rng.normal() * 0.3, 1.0]) * limits.step_translation * 5
            return P.MODE_EE_DELTA, np.concatenate([away, rng.normal(size=3) * limits.step_rotation])
        return P.MODE_EE_POSE, np.concatenate([s.ee_pos + [0.0, 0.0, 1.0], flipped(s.ee_quat, rng)])

    states = drive(watcher, cmd, start, 80, command)
    cmd.close()
    dist, outward = excursions(limits, states)
    entered = int(np.argmax(dist == 0))
    assert dist[0] > 0.03 and 0 < entered <= 15, dist[:20]
    assert not outward and dist[entered:].max() == 0, (outward, dist[entered:].max())
    back = [s for s in states[1:entered] if not s.held]
    assert back and all(s.applied[2] < 0 and not s.applied[3:6].any() for s in back)  # straight down, no turn

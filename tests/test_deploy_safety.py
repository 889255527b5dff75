"""Clamping and waypoint timing, in process: every clamped step is inside the limits; waypoints are
applied on time, once, and never after their command expires."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dp.link import protocol as P
from dp.deploy.robot_config import LimitsConfig, load_robot
from dp.deploy.safety import Limits, rotation_delta
from dp.deploy.trajectory import CommandBuffer
from dp.errors import DpError

HZ = 20.0
DT = 1.0 / HZ


@pytest.fixture
def limits() -> Limits:
    cfg = LimitsConfig(workspace_min=[-0.3, -0.3, 0.8], workspace_max=[0.3, 0.3, 1.2], max_step_translation=0.03,
                       max_step_rotation=0.2, max_speed=0.5, max_angular_speed=10.0,
                       joint_min=[-2.0] * 3, joint_max=[2.0] * 3, max_joint_speed=2.0)
    return Limits.from_config(cfg, HZ)


def inside(limits: Limits, target, pos) -> None:
    end = pos + target.dpos
    assert np.linalg.norm(target.dpos) <= limits.step_translation + 1e-12
    assert np.linalg.norm(target.drot) <= limits.step_rotation + 1e-12
    assert -1.0 <= target.gripper <= 1.0
    assert ((end >= limits.box_min - 1e-12) & (end <= limits.box_max + 1e-12)).all()


def test_speed_limit_tightens_the_step(limits):
    assert limits.step_translation == pytest.approx(0.025)  # 0.5 m/s at 20 Hz < 0.03 per step
    assert limits.step_rotation == pytest.approx(0.2)


def test_adversarial_deltas_are_clamped_inside(limits):
    rng = np.random.default_rng(0)
    for _ in range(5000):
        pos = rng.uniform(limits.box_min, limits.box_max)
        dpos = rng.normal(size=3) * 10 ** rng.uniform(-3, 3)
        drot = rng.normal(size=3) * 10 ** rng.uniform(-3, 3)
        target, clamped = limits.clamp_delta(pos, dpos, drot, float(rng.normal() * 5))
        inside(limits, target, pos)
    small, clamped = limits.clamp_delta(np.array([0.0, 0.0, 1.0]), np.array([0.01, 0, 0]), np.array([0, 0, 0.1]), 1.0)
    assert clamped == [] and small.dpos[0] == 0.01  # within limits: untouched
    target, clamped = limits.clamp_delta(np.array([0.29, 0.0, 1.0]), np.array([0.02, 0, 0]), np.zeros(3), 0.0)
    assert clamped == ["workspace"] and target.dpos[0] == pytest.approx(0.01)
    target, clamped = limits.clamp_delta(np.zeros(3) + [0, 0, 1], np.array([0.0, 0.1, 0.0]), np.array([1.0, 0, 0]), 3.0)
    assert clamped == ["translation", "rotation", "gripper"]
    np.testing.assert_allclose(target.dpos, [0, 0.025, 0])  # direction kept
    np.testing.assert_allclose(target.drot, [0.2, 0, 0])


def test_outside_the_box_goes_straight_back_without_rotating(limits):
    pos = np.array([0.5, 0.0, 1.0])  # 0.2 m outside in x
    target, clamped = limits.clamp_delta(pos, np.array([0.1, 0.05, 0.0]), np.array([0.2, 0, 0]), 0.0)
    assert clamped[0] == "outside" and limits.outside(pos)
    np.testing.assert_allclose(target.dpos, [-0.025, 0, 0])  # back along x at the step limit, the command ignored
    np.testing.assert_allclose(target.drot, 0.0)
    near = np.array([0.295, 0.0, 1.0])  # just outside the box shrunk by the return margin: aims 2 cm inside
    target, clamped = limits.clamp_delta(near + [0.01, 0, 0], np.zeros(3), np.zeros(3), 0.0)
    assert target.dpos[0] == pytest.approx(0.28 - 0.305)


def test_rotation_is_limited_to_what_keeps_its_drift_inside_the_box(limits):
    """A rotation moves the end effector by up to rotation_drift m/rad as the arm executes it:
    near a wall only as much rotation as keeps that reach inside the box."""
    limits.rotation_drift = 0.1
    centre = np.array([0.0, 0.0, 1.0])  # 0.2 m from the nearest wall: the full step
    target, clamped = limits.clamp_delta(centre, np.zeros(3), np.array([0, 0, 0.2]), 0.0)
    assert clamped == [] and target.drot[2] == pytest.approx(0.2)
    wall = np.array([0.29, 0.0, 1.0])  # 1 cm from x max: at most 0.1 rad
    target, clamped = limits.clamp_delta(wall, np.zeros(3), np.array([0, 0, 0.2]), 0.0)
    assert clamped == ["workspace_rotation"] and np.linalg.norm(target.drot) == pytest.approx(0.1)
    target, clamped = limits.clamp_delta(wall, np.array([0.01, 0, 0]), np.array([0, 0, 0.2]), 0.0)
    assert np.linalg.norm(target.drot) == pytest.approx(0.0)  # a step onto the wall leaves no room to rotate
    # drift (motion beyond the commanded one) toward the wall is expected to go on: braked and no rotation
    target, clamped = limits.clamp_delta(np.array([0.27, 0.0, 1.0]), np.zeros(3), np.array([0, 0, 0.2]), 0.0,
                                         drift=np.array([0.02, 0, 0]))
    assert "workspace" in clamped and target.dpos[0] == pytest.approx(0.30 - 0.27 - 0.04)
    assert np.linalg.norm(target.drot) == pytest.approx(0.0)


def test_pose_targets_become_bounded_steps(limits):
    rng = np.random.default_rng(1)
    for _ in range(500):
        pos = rng.uniform(limits.box_min, limits.box_max)
        quat = Rotation.random(random_state=rng).as_quat()
        goal_pos = rng.normal(size=3) * 5
        goal_quat = Rotation.random(random_state=rng).as_quat()
        target, _ = limits.clamp_pose(pos, quat, goal_pos, goal_quat, 0.0)
        inside(limits, target, pos)
        # the rotation step points toward the goal orientation
        full = rotation_delta(quat, goal_quat)
        if np.linalg.norm(full) > 1e-6:
            assert np.dot(full, target.drot) > 0


def test_joint_targets_respect_joint_and_cartesian_limits(limits):
    def fk(q):  # a toy arm: the end effector moves 0.5 m per radian along each axis, yaw = q[2]
        return np.array([0.0, 0.0, 1.0]) + 0.5 * q, Rotation.from_rotvec([0, 0, q[2]]).as_quat()

    rng = np.random.default_rng(2)
    for _ in range(300):
        q = rng.uniform(-0.5, 0.5, size=3) * [0.5, 0.5, 0.3]
        pos, quat = fk(q)
        target, clamped = limits.clamp_joints(q, rng.normal(size=3) * 10, 0.0, pos, quat, fk)
        assert (np.abs(target.joints - q) <= limits.step_joint + 1e-12).all()
        assert ((target.joints >= -2.0) & (target.joints <= 2.0)).all()
        new_pos, new_quat = fk(target.joints)
        np.testing.assert_allclose(pos + target.dpos, new_pos, atol=1e-9)
        inside(limits, target, pos)


def cmd(times, mode="ee_delta", values=None, gripper=None, expires=None, seq=1) -> P.Command:
    times = np.asarray(times, float)
    width = {"ee_delta": 6, "ee_pose": 7, "joint": 3}[mode]
    values = np.asarray(values, float) if values is not None else np.tile(np.arange(len(times))[:, None] + 1.0, (1, width))
    return P.Command(1, seq, 0, 0.0, mode, times, values, np.asarray(gripper if gripper is not None else np.ones(len(times))),
                     float(expires if expires is not None else times[-1] + DT / 2))


def test_delta_waypoints_run_on_their_tick_once():
    buf = CommandBuffer(HZ)
    buf.accept(cmd([1.05, 1.10, 1.15]), now=1.001, start=None, start_gripper=-1, max_horizon=2.0)
    assert buf.setpoint(1.0) is None  # before the first waypoint: hold
    assert buf.setpoint(1.05 + 0.004).value[0] == 1  # nearest within half a period
    assert buf.setpoint(1.054) is None  # the same waypoint is never applied twice
    assert buf.setpoint(1.15).value[0] == 3  # 1.10 was missed (no tick near it): dropped, not replayed late
    assert buf.setpoint(1.20) is None


def test_late_waypoints_are_dropped_and_chunk_absorbs_latency():
    buf = CommandBuffer(HZ)
    dropped = buf.accept(cmd([1.05, 1.10, 1.15, 1.20]), now=1.13, start=None, start_gripper=-1, max_horizon=2.0)
    assert dropped == 2  # 1.05 and 1.10 are more than half a period in the past
    assert buf.setpoint(1.15).value[0] == 3


def test_new_command_splices_after_older_waypoints():
    buf = CommandBuffer(HZ)
    buf.accept(cmd([1.05, 1.10, 1.15, 1.20]), now=1.0, start=None, start_gripper=-1, max_horizon=2.0)
    buf.accept(cmd([1.15, 1.20], values=np.full((2, 6), 9.0), seq=2), now=1.06, start=None, start_gripper=-1, max_horizon=2.0)
    assert buf.setpoint(1.05).value[0] == 1
    assert buf.setpoint(1.10).value[0] == 2  # the old chunk covers the time before the new one starts
    assert buf.setpoint(1.15).value[0] == 9


def test_expiry_and_command_horizon():
    buf = CommandBuffer(HZ)
    buf.accept(cmd([1.05], expires=50.0), now=1.0, start=None, start_gripper=-1, max_horizon=0.5)
    assert buf.expires == pytest.approx(1.5)  # a far expiry is cut to the command horizon
    assert buf.active(1.4) and not buf.active(1.51) and buf.setpoint(1.6) is None


def test_pose_waypoints_interpolate_from_the_current_pose():
    buf = CommandBuffer(HZ)
    start = np.array([0.0, 0.0, 1.0, 0, 0, 0, 1.0])
    goal = np.array([[0.1, 0.0, 1.0, *Rotation.from_rotvec([0, 0, 1.0]).as_quat()]])
    buf.accept(cmd([1.1], "ee_pose", goal, [1.0], expires=2.0), now=1.0, start=start, start_gripper=-1, max_horizon=2.0)
    mid = buf.setpoint(1.05)
    np.testing.assert_allclose(mid.value[:3], [0.05, 0, 1.0])
    np.testing.assert_allclose(Rotation.from_quat(mid.value[3:]).as_rotvec(), [0, 0, 0.5], atol=1e-9)
    np.testing.assert_allclose(buf.setpoint(1.5).value, goal[0])  # past the last waypoint: stay there


def test_robot_file_errors_name_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("limits: {workspace_min: [0, 0, 1], workspace_max: [1, 1, 0.5]}\n")
    with pytest.raises(DpError, match=r"bad.yaml: limits.workspace_min/max"):
        load_robot(bad)
    bad.write_text("rates: {control_hz: fast}\n")
    with pytest.raises(DpError, match=r"bad.yaml: rates.control_hz: expected a number"):
        load_robot(bad)
    cfg = load_robot("panda_sim", ["limits.max_speed=0.5"])
    assert cfg.limits.max_speed == 0.5 and cfg.driver.options["task"] == "lift"

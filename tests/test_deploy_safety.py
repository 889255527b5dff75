"""Clamping and waypoint timing, in process: every clamped step is inside the limits, an arm outside
the box is only ever stepped toward it, absurd targets are refused; waypoints are applied on time,
once, and never after their command expires."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dp.link import protocol as P
from dp.deploy.robot_config import LimitsConfig, load_robot
from dp.deploy.safety import FAR_TARGETS, JOINT_SLACK, Limits, box_distance, rotation_delta
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
    assert clamped == ["workspace"] and target.dpos[0] == pytest.approx(0.01 - limits.wall_margin)
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
    wall = np.array([0.29, 0.0, 1.0])  # 1 cm from x max, less the wall margin: at most 0.08 rad
    target, clamped = limits.clamp_delta(wall, np.zeros(3), np.array([0, 0, 0.2]), 0.0)
    assert clamped == ["workspace_rotation"] and np.linalg.norm(target.drot) == pytest.approx((0.01 - limits.wall_margin) / 0.1)
    target, clamped = limits.clamp_delta(wall, np.array([0.01, 0, 0]), np.array([0, 0, 0.2]), 0.0)
    assert np.linalg.norm(target.drot) == pytest.approx(0.0)  # a step onto the wall leaves no room to rotate
    # motion toward the wall goes on past the target: closer to the wall than twice the last tick's motion,
    # the arm brakes (here at the step limit), without rotating
    target, clamped = limits.clamp_delta(np.array([0.27, 0.0, 1.0]), np.zeros(3), np.array([0, 0, 0.2]), 0.0,
                                         motion=np.array([0.02, 0, 0, 0, 0, 0]))
    assert "workspace" in clamped and target.dpos[0] == pytest.approx(-limits.step_translation)
    assert np.linalg.norm(target.drot) == pytest.approx(0.0)


def test_pose_targets_become_bounded_steps(limits):
    rng = np.random.default_rng(1)
    for _ in range(500):
        pos = rng.uniform(limits.box_min, limits.box_max)
        quat = Rotation.random(random_state=rng).as_quat()
        goal_pos = rng.normal(size=3) * 5
        goal_quat = Rotation.random(random_state=rng).as_quat()
        target, clamped = limits.clamp_pose(pos, quat, goal_pos, goal_quat, 0.0)
        inside(limits, target, pos)
        # the rotation step points toward the goal orientation (unless it has no room: at a wall)
        full = rotation_delta(quat, goal_quat)
        if np.linalg.norm(full) > 1e-6:
            assert np.dot(full, target.drot) > 0 or (not target.drot.any() and "workspace" in clamped)


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


def hostile(limits: Limits, rng: np.random.Generator, pos: np.ndarray, quat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A (dpos, drot) that an attacker would send: far beyond a wall, reversed, or tiny, turning up to half a turn
    toward a flipped orientation."""
    wall = rng.uniform(limits.box_min, limits.box_max)
    axis = rng.integers(3)
    wall[axis] = (limits.box_max if rng.random() < 0.5 else limits.box_min)[axis] + rng.choice([-1, 1]) * 10 ** rng.uniform(-3, 0)
    turn = Rotation.from_rotvec(rng.normal(size=3) * np.pi / np.sqrt(3)) * Rotation.from_quat(quat)
    return (wall - pos) * 10 ** rng.uniform(-1, 1), rotation_delta(quat, turn.as_quat())


def test_the_reach_box_takes_away_where_the_arm_is_heading(limits):
    margin, coast = limits.wall_margin, limits.coast_steps
    assert margin == 0.002 and coast == 2.0  # the robot files' defaults
    np.testing.assert_allclose(limits.reach_box(None)[1], limits.box_max - margin)
    lo, hi = limits.reach_box(np.array([0.01, 0.0, -0.02, 0, 0, 0]))
    np.testing.assert_allclose(hi, limits.box_max - margin - [coast * 0.01, 0, 0])  # ahead of the motion only
    np.testing.assert_allclose(lo, limits.box_min + margin + [0, 0, coast * 0.02])
    lo, hi = limits.reach_box(np.array([0, 0, 0, 0, 0.1, 0]))  # a turn drifts anywhere: every side
    np.testing.assert_allclose(hi - limits.box_max, -margin - coast * limits.rotation_drift * 0.1)
    lo, hi = limits.reach_box(np.array([5.0, 0, 0, 0, 0, 0]))  # never beyond the centre
    assert lo[0] == pytest.approx(-0.3 + margin) and hi[0] == pytest.approx(0.0)


def test_near_a_wall_an_arm_brakes_on_that_axis_alone_and_steps_along_it_only_as_far_as_it_may_stray(limits):
    near = np.array([0.28, 0.0, 1.0])  # 2 cm from x max, 1 cm/tick toward it: inside the box, beyond the reach box
    sideways = np.array([0.0, 0.02, -0.01])
    target, clamped = limits.clamp_delta(near, sideways, np.array([0.1, 0, 0]), 0.0, np.array([0.01, 0, 0, 0, 0, 0]))
    np.testing.assert_allclose(target.dpos, [-limits.step_translation, 0, 0])  # it would coast past the margin: a full step
    assert "workspace" in clamped and not target.drot.any()  # nothing sideways, no turn: that pushed arms through walls
    creeping = np.array([0.2985, 0.0, 1.0])  # 0.5 mm/tick: it would coast half the margin, so half a step back
    target, clamped = limits.clamp_delta(creeping, sideways, np.zeros(3), 0.0, np.array([0.0005, 0, 0, 0, 0, 0]))
    np.testing.assert_allclose(target.dpos, [-limits.step_translation / 2, 0, 0])
    resting = np.array([0.299, 0.0, 1.0])  # inside the wall margin, at rest: just back out of it
    target, clamped = limits.clamp_delta(resting, sideways, np.zeros(3), 0.0, np.zeros(6))
    np.testing.assert_allclose(target.dpos, [limits.box_max[0] - limits.wall_margin - resting[0], 0, 0])
    at_margin = np.array([limits.box_max[0] - limits.wall_margin, 0.0, 1.0])  # then along the wall, as far as may stray
    target, clamped = limits.clamp_delta(at_margin, sideways, np.zeros(3), 0.0, np.zeros(6))
    np.testing.assert_allclose(target.dpos, sideways * limits.wall_margin / (limits.translation_drift * np.linalg.norm(sideways)))
    assert clamped == ["workspace_translation"]


def test_a_pd_arm_under_hostile_commands_never_leaves_the_box(limits):
    """The clamps drive a dynamic arm without throwing it out: a critically damped point mass at 6 rad/s
    (the simulated Panda's translation under OSC_POSE: its speed under a steady step and its coast when
    stopped dead both fit that), 25 physics steps a tick, follows clamped hostile deltas and bursts at
    the step limit straight at the walls; its reach stays inside the box at every physics step."""
    rng = np.random.default_rng(3)
    kp, sub = 36.0, 25
    pos, vel, quat = np.array([0.0, 0.0, 1.0]), np.zeros(3), np.array([0, 0, 0, 1.0])
    before, worst = pos.copy(), 0.0
    for tick in range(1500):
        dpos, drot = hostile(limits, rng, pos, quat)
        if tick % 7 == 0:  # a burst at the step limit straight at a wall: the fastest approach there is
            dpos = np.sign(rng.normal(size=3)) * limits.step_translation
        target, _ = limits.clamp_delta(pos, dpos, drot, 0.0, np.concatenate([pos - before, np.zeros(3)]))
        before, goal = pos.copy(), pos + target.dpos
        for _ in range(sub):
            vel += (kp * (goal - pos) - 2 * np.sqrt(kp) * vel) * DT / sub
            pos = pos + vel * DT / sub
            worst = max(worst, box_distance(pos, limits.box_min, limits.box_max))
    assert worst == 0.0, worst


@pytest.mark.slow
def test_every_step_from_outside_leads_toward_the_box_without_turning(limits):
    rng = np.random.default_rng(4)
    for _ in range(3000):
        pos = rng.uniform(limits.box_min - 0.5, limits.box_max + 0.5)
        if not limits.outside(pos):
            continue
        quat = Rotation.random(random_state=rng).as_quat()
        dpos, drot = hostile(limits, rng, pos, quat)
        motion = np.concatenate([rng.normal(size=3) * 0.02, rng.normal(size=3) * 0.3])  # even moving outward, spinning
        target, clamped = limits.clamp_delta(pos, dpos, drot, 0.0, motion)
        assert clamped[0] == "outside" and np.linalg.norm(target.dpos) <= limits.step_translation + 1e-12
        assert box_distance(pos + target.dpos, limits.box_min, limits.box_max) < box_distance(pos, limits.box_min, limits.box_max)
        np.testing.assert_array_equal(target.drot, 0.0)


def toy_arm(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A six-joint arm: base yaw, shoulder and elbow pitch (links 0.5 m and 0.4 m), a spherical wrist."""
    def link(yaw: float, pitch: float) -> np.ndarray:
        return np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
    pos = np.array([-0.5, 0.0, 1.0]) + 0.5 * link(q[0], q[1]) + 0.4 * link(q[0], q[1] + q[2])
    return pos, (Rotation.from_euler("ZY", [q[0], -(q[1] + q[2])]) * Rotation.from_euler("XYZ", q[3:6])).as_quat()


@pytest.mark.slow
def test_joint_mode_steps_an_arm_outside_back_in_through_the_kinematics(limits):
    """Outside the box (here above it) the joint command is ignored; the joint step the kinematics give
    toward the box never takes the end effector further out, brings it in, and then it stays in."""
    limits = dataclasses.replace(limits, joint_min=np.full(6, -3.0), joint_max=np.full(6, 3.0))
    rng = np.random.default_rng(5)
    for trial in range(20):
        q = np.concatenate([rng.uniform([-0.5, 0.2, -0.3], [0.5, 0.4, 0.3]), rng.uniform(-1, 1, size=3)])
        pos, quat = toy_arm(q)
        start = box_distance(pos, limits.box_min, limits.box_max)
        assert start > 0.02, pos  # starts outside
        inside_at = None
        for step in range(60):
            out = box_distance(pos, limits.box_min, limits.box_max)
            target, clamped = limits.clamp_joints(q, rng.uniform(-3, 3, size=6), 0.0, pos, quat, toy_arm)
            q = target.joints
            pos, quat = toy_arm(q)
            now = box_distance(pos, limits.box_min, limits.box_max)
            assert now == 0 if out == 0 else ("outside" in clamped and now < out), (trial, step, out, now)
            inside_at = step if inside_at is None and now == 0 else inside_at
        # up to 0.18 m out: in within 12 steps (7 at the step limit in a straight line; near the arm's reach
        # the joint step limit allows less), where a frozen arm never got in
        assert inside_at is not None and inside_at <= 12, (trial, start, inside_at)


def test_absurd_targets_are_refused_with_the_reason(limits):
    far = FAR_TARGETS * np.linalg.norm(limits.box_max - limits.box_min)
    pose = np.array([[0.0, 0.0, 1.0, 0, 0, 0, 1.0]] * 2)
    limits.refuse_absurd("ee_pose", pose)
    pose[1, :3] = [0.3 + far * 0.9, 0.0, 1.0]  # far beyond a wall, but not absurdly: clamped, not refused
    limits.refuse_absurd("ee_pose", pose)
    limits.refuse_absurd("ee_delta", np.array([[far * 0.9, 0, 0, 0, 0, 10.0]]))
    joints = np.full((1, 3), 2.0 + 4.0 * JOINT_SLACK * 0.9)  # joint limits +-2: a range of 4
    limits.refuse_absurd("joint", joints)
    dataclasses.replace(limits, joint_min=np.zeros(0), joint_max=np.zeros(0)).refuse_absurd("joint", joints * 100)
    pose[1, :3] = [1e6, -1e6, 1e6]
    for mode, waypoints, reason in [("ee_pose", pose, "box diagonals"), ("ee_delta", np.array([[0, -far * 1.1, 0, 0, 0, 0]]), "translation"),
                                    ("joint", joints + 4.0 * JOINT_SLACK * 0.2, "beyond its limit")]:
        with pytest.raises(P.ProtocolError, match=reason) as err:
            limits.refuse_absurd(mode, waypoints)
        assert err.value.field == "command.waypoints"


@pytest.mark.parametrize("quat", [[0, 0, 0, 0], [0, 0, 0, 1.01], [0.0, 0, np.nan, 1], [np.inf, 0, 0, 1]])
def test_the_codec_refuses_quaternions_off_unit_norm_and_non_finite_targets(quat):
    wps = np.array([[0.0, 0.0, 1.0, *quat]])
    command = P.Command(1, 1, 2, 1.0, "ee_pose", np.array([1.05]), wps, np.ones(1), 1.1)
    with pytest.raises(P.ProtocolError) as err:
        P.decode(P.encode(command), accept=P.CONTROL_TYPES)
    assert err.value.field == "command.waypoints"


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
    with pytest.raises(DpError, match=r"limits.wall_margin: must be > 0 with translation_drift > 0"):
        load_robot("panda_sim", ["limits.wall_margin=0"])  # a target on a wall would leave no room to move along it
    assert load_robot("panda_sim", ["limits.wall_margin=0", "limits.translation_drift=0"]).limits.wall_margin == 0

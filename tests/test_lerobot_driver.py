"""The LeRobot driver (dp/deploy/drivers/lerobot.py) on robots/so101.yaml, without LeRobot and without
an arm: tests/fake_lerobot is LeRobot 0.4.4's import surface as the driver uses it, with an SO-101
follower whose servos lag behind their goals and coast a little past them, read back in degrees at
their resolution. In process: the kinematics against MuJoCo's reading of the URDF, units, the
gripper, hold and stop, and every refusal before anything moves; as a real `dp robot` process over
ZeroMQ (the fake on its PYTHONPATH): the workspace box and the joint limits under hostile joint
commands, the watchdog, and a latching Stop, as on the simulated Panda (tests/test_deploy_box.py,
tests/test_deploy_stop.py)."""

from __future__ import annotations

import os
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from dp.deploy.drivers import ArmTarget, make_driver
from dp.deploy.drivers.urdf_kinematics import UrdfChain
from dp.deploy.robot_config import REPO_ROOT, load_robot
from dp.deploy.safety import Limits
from dp.errors import DpError
from dp.link import protocol as P
from dp.testing.box_checks import drive, excursions, new_episode, rejected_since
from dp.testing.robot_harness import Commander, StateWatcher, spawn_dp, watched_robot

FAKE = Path(__file__).parent / "fake_lerobot"
ROBOT = "robots/so101.yaml"
URDF = REPO_ROOT / "robots" / "so101" / "so101_new_calib.urdf"
# the fake opens any port that exists; one small camera
ON_FAKE = ("driver.options.robot.port=/dev/null",
           "driver.options.robot.cameras={front: {type: opencv, index_or_path: 0, width: 32, height: 24, fps: 30}}")
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(FAKE), os.environ.get("PYTHONPATH")]))}
START_DEG = np.array([0.0, -30.0, 30.0, 60.0, 0.0])  # the fake's start pose (its START), arm joints
FAST = ("limits.max_joint_speed=1.5", "limits.max_speed=0.45", "limits.max_step_translation=0.015")
COAST = 0.01  # radians: how far the fake's servos may go on past a joint limit they are sent to (coast, a servo step)
ROLL = 100  # ticks of the wrist rolling toward its limit (some 0.03 rad a tick: 0.05 from where the lagging servo is)
WALL = 45  # ticks of the arm stretching toward the box's far wall
STRETCHED = np.radians(START_DEG) + [0.0, 0.8, -0.6, -0.7, 0.0]  # the end effector at (0.39, 0, 0.11): 5 cm beyond it


@pytest.fixture
def fake_lerobot(monkeypatch):
    """The fake LeRobot importable in this process, forgotten afterwards."""
    monkeypatch.syspath_prepend(str(FAKE))
    yield
    for name in [m for m in sys.modules if m == "draccus" or m.split(".")[0] == "lerobot"]:
        del sys.modules[name]


def so101(*overrides: str):
    return make_driver(load_robot(ROBOT, [*ON_FAKE, *overrides]))


def limits_of(*overrides: str) -> Limits:
    config = load_robot(ROBOT, list(overrides))
    return Limits.from_config(config.limits, config.rates.control_hz)


def fake_robot():
    from lerobot.robots.so_follower import SOFollower
    return SOFollower.instances[-1]


def test_forward_kinematics_is_the_urdf_chain_as_mujoco_reads_it():
    """The URDF's chain to gripper_frame_link, against MuJoCo's own URDF parser (fixed frames kept);
    the robot file's joint limits are the URDF's; the Jacobian the controller takes is finite and of
    full rank at the start pose."""
    import mujoco

    joints = load_robot(ROBOT).driver.options["joints"]
    chain = UrdfChain(URDF, "gripper_frame_link", joints)
    text = URDF.read_text().replace('<robot name="so101_new_calib">', '<robot name="so101_new_calib"><mujoco>'
                                    '<compiler fusestatic="false" discardvisual="true"/></mujoco>')
    model = mujoco.MjModel.from_xml_string(text)
    data = mujoco.MjData(model)
    limits = limits_of()
    for q in np.random.default_rng(0).uniform(limits.joint_min, limits.joint_max, size=(200, 5)):
        data.qpos[[model.joint(name).qposadr[0] for name in joints]] = q
        mujoco.mj_kinematics(model, data)
        pos, quat = chain.pose(q)
        body = model.body("gripper_frame_link").id
        np.testing.assert_allclose(pos, data.xpos[body], atol=1e-12)
        expected = np.roll(data.xquat[body], -1)
        np.testing.assert_allclose(quat, expected if expected[3] >= 0 else -expected, atol=1e-12)
    urdf = {j.get("name"): j.find("limit") for j in ET.parse(URDF).getroot().findall("joint")}
    np.testing.assert_array_equal(limits.joint_min, [float(urdf[name].get("lower")) for name in joints])
    np.testing.assert_array_equal(limits.joint_max, [float(urdf[name].get("upper")) for name in joints])
    q0 = np.radians(START_DEG)
    jac = np.array([(chain.pose(q0 + 1e-4 * e)[0] - chain.pose(q0)[0]) / 1e-4 for e in np.eye(5)]).T
    assert np.isfinite(jac).all() and np.linalg.matrix_rank(jac) == 3
    assert not limits.outside(chain.pose(q0)[0])  # the fake starts inside the box


def test_the_driver_speaks_radians_to_dp_and_degrees_to_lerobot(fake_lerobot):
    driver = so101()
    info = driver.connect()
    assert info.n_joints == 5 and info.modes == [P.MODE_JOINT] and info.cameras == ["front"]
    assert info.state_key == P.StateKey("state", 180 / np.pi, 100.0, 0.0)  # policies see LeRobot's degrees and gripper
    assert so101("driver.options.state_key=joint_state").state_key.key == "joint_state"  # a store that names it otherwise
    r = driver.read_state()
    np.testing.assert_allclose(r.q, np.radians(START_DEG), atol=np.radians(360 / 4096))
    np.testing.assert_allclose(r.ee_pos, driver.chain.pose(r.q)[0])
    assert r.images["front"].shape == (24, 32, 3) and r.images["front"].dtype == np.uint8
    assert r.gripper == pytest.approx([0.0], abs=0.01)  # the fake starts at 50: half way between open and closed
    robot = fake_robot()
    driver.hold()  # no goal yet: the measured position
    sent = robot.calls[-1][1]
    np.testing.assert_allclose([sent[f"{j}.pos"] for j in driver.joints], START_DEG, atol=360 / 4096)
    goal = r.q + [0.01, -0.01, 0.02, 0.0, 0.03]
    for gripper, value in ((-1.0, 100.0), (1.0, 0.0), (0.0, 50.0)):  # dp's -1 open, +1 closed
        driver.apply(ArmTarget(np.zeros(3), np.zeros(3), gripper, joints=goal))
        sent = robot.calls[-1][1]
        np.testing.assert_allclose([sent[f"{j}.pos"] for j in driver.joints], np.degrees(goal))
        assert sent["gripper.pos"] == value
    before = driver.read_state().q
    driver.hold()  # the last goal again
    assert robot.calls[-1][1] == robot.calls[-2][1]
    after = driver.read_state()
    np.testing.assert_allclose(after.dq, (after.q - before) * 30.0)  # over one control period
    driver.stop()  # the present position for the arm; the gripper keeps its goal
    sent = robot.calls[-1][1]
    np.testing.assert_allclose([sent[f"{j}.pos"] for j in driver.joints], np.degrees(after.q), atol=360 / 4096)
    assert sent["gripper.pos"] == 50.0
    driver.disconnect()
    assert not robot.is_connected and robot.calls[-1] == ("disconnect",)
    driver.stop()  # safe after disconnect, and again
    driver.disconnect()


@pytest.mark.parametrize("overrides, message", [
    (["driver.options.robot_type=so102_follower"], r"LeRobot has no robot 'so102_follower' \(known: .*'so101_follower'"),
    (["driver.options.robot.motors=[shoulder_pan,shoulder_lift,elbow_flex,wrist_flex,gripper]"],
     r"so101_follower has no action feature \['wrist_roll.pos'\] \(it offers \['elbow_flex.pos', 'gripper.pos'"),
    (["driver.options.robot.use_degrees=false"], r"driver.options.robot.use_degrees: must be true"),
    (["driver.options.robot.calibrated=false"], r"so101_follower 'my_so101' is not calibrated .* calibrate it with LeRobot "
                                                r"first: lerobot-calibrate --robot.type=so101_follower --robot.port=/dev/null --robot.id=my_so101"),
    (["driver.options.robot.port=/dev/no-such-arm"], r"so101_follower on /dev/no-such-arm: LeRobot could not connect .*lerobot-find-port"),
    (["driver.options.robot.baud=9600"], r"driver.options.robot: not a so101_follower config .*baud.* its fields: \['id'"),
])
def test_a_bad_setup_is_refused_before_anything_moves(fake_lerobot, overrides, message):
    driver = so101(*overrides)
    with pytest.raises(DpError, match=message):
        driver.connect()
    from lerobot.robots.so_follower import SOFollower
    assert not any(call[0] == "send_action" for robot in SOFollower.instances for call in robot.calls)
    assert not any(robot.is_connected for robot in SOFollower.instances)  # an uncalibrated arm is let go again
    assert all(("connect", True) not in robot.calls for robot in SOFollower.instances)  # never LeRobot's calibration


def test_robot_file_mistakes_name_the_key_and_lerobot_is_imported_only_to_connect(monkeypatch):
    for overrides, message in [
        (["driver.options.jionts=[a]"], r"unknown key\(s\) \['jionts'\] for the lerobot driver"),
        (["driver.options.gripper=null"], r"the lerobot driver needs \['gripper'\]"),
        (["driver.options.gripper={name: gripper, open: 1, closed: 1}"], r"driver.options.gripper: expected \{name, open, closed\}"),
        (["driver.options.kinematics.frame=tool0"], r"so101_new_calib.urdf: no link 'tool0'"),
        (["driver.options.kinematics.joints=[a,b,c,d,e]"], r"moves joints \['shoulder_pan', .*; the driver names \['a'"),
    ]:
        with pytest.raises(DpError, match=message):
            make_driver(load_robot(ROBOT, overrides))
    monkeypatch.setitem(sys.modules, "lerobot", None)  # not importable
    driver = make_driver(load_robot(ROBOT))
    with pytest.raises(DpError, match=r"cannot import LeRobot .*install dp there \(pip install -e /path/to/dp\)"):
        driver.connect()


def test_dp_robot_says_what_is_missing_without_a_traceback():
    """The shipped robot file as it is: without LeRobot, then with the fake and no arm on its port."""
    for env, message in ((None, "cannot import LeRobot"), (ENV, "so101_follower on /dev/ttyACM0: LeRobot could not connect")):
        proc = spawn_dp(["robot", "--robot", ROBOT, "--bind", "tcp://127.0.0.1:0", "--command-port", "0"], env)
        assert proc.popen.wait(60) == 1, proc.output
        assert "dp robot: error: " in proc.output and message in proc.output and "Traceback" not in proc.output, proc.output


@pytest.fixture(scope="module")
def robot():
    """The fake SO-101 under `dp robot`, three times as fast as the robot file allows (a harder case for the box)."""
    yield from watched_robot(ROBOT, 60.0, (*ON_FAKE, *FAST), env=ENV)


@pytest.fixture
def commanders(robot):
    """Commanders for ``robot`` (``commanders(n)``), closed after the test however it ends."""
    made: list[Commander] = []

    def make(n: int = 1) -> list[Commander]:
        made.extend(Commander(robot[1], robot[3].command_port) for _ in range(n))
        time.sleep(0.3)  # connected before the first message
        return made[-n:]
    yield make
    for cmd in made:
        cmd.close()


@pytest.mark.slow
def test_hostile_joint_commands_never_carry_the_arm_out_of_the_box_or_its_joint_limits(robot, commanders):
    """The wrist rolled past its limit, the arm stretched out 5 cm beyond the box's far wall, then joint
    targets beyond the joint limits, at them and at the URDF's zero (the arm stretched out and up), a
    new one every 10 ticks; among them refused ones (NaN, infinite, absurdly far). The end effector the fake's servos
    reach (lag, coast, 4096 steps a turn) never leaves the box, the joints stay inside their limits
    but for the servos' coast, and every refused command is counted."""
    proc, endpoint, watcher, info = robot
    limits = limits_of(*FAST)
    span = limits.joint_max - limits.joint_min
    cmd, = commanders()
    start = new_episode(watcher, cmd, seed=1)
    assert info.cameras == ["front"] and start.images["front"].pixels.shape == (24, 32, 3)
    rng = np.random.default_rng(3)
    aim: dict[str, np.ndarray] = {}
    refused = 0

    def command(s: P.State, k: int) -> tuple[str, np.ndarray]:
        nonlocal refused
        if k == 0:  # the wrist rolled past its limit, the rest where it is: the end effector hardly moves
            aim["q"] = np.concatenate([s.q[:4], limits.joint_max[4:] + 0.5 * span[4:]])
        elif k == ROLL:  # the arm stretched out beyond the box's far wall, the wrist left rolled
            aim["q"] = np.concatenate([STRETCHED[:4], s.q[4:]])
        elif k >= ROLL + WALL and k % 10 == 0:
            aim["q"] = [rng.uniform(limits.joint_min - 0.5 * span, limits.joint_max + 0.5 * span), limits.joint_max,
                        limits.joint_min, np.zeros(5)][(k // 10) % 4]
        if k % 4 == 3 or k in (1, 2):
            refused += 1
            return P.MODE_JOINT, np.full(5, np.nan) if k == 1 else np.full(5, np.inf) if k == 2 else limits.joint_max + 2 * span
        return P.MODE_JOINT, aim["q"]

    states = drive(watcher, cmd, start, ROLL + WALL + 80, command)
    dist, outward = excursions(limits, states)
    faults = {f for s in states for f in s.faults}
    q = np.array([s.q for s in states])
    wall = limits.box_max[0] - np.array([s.ee_pos[0] for s in states[ROLL:ROLL + WALL]])
    assert len(states) >= ROLL + WALL + 80 and {"clamped:joint_cartesian", "clamped:joint_limits"} <= faults, faults
    assert dist.max() == 0 and not outward, (dist.max(), outward)
    assert (q >= limits.joint_min - COAST).all() and (q <= limits.joint_max + COAST).all(), (q.min(0), q.max(0))
    assert q[:ROLL, 4].max() > limits.joint_max[4] - 0.02  # the wrist reached its limit
    assert wall.min() < 0.012, wall.min()  # pushed against the far wall (the margin and its coast keep it 1 cm off)
    assert np.ptp(q[ROLL + WALL:], axis=0).max() > 0.3  # and moved about the box
    assert rejected_since(watcher, start, refused) == refused


def toward(cmd: Commander, s: P.State, q: np.ndarray, seconds: float) -> None:
    """A joint command from State ``s`` to ``q`` over ``seconds``, one waypoint per tick (30 Hz), sent."""
    n = int(seconds * 30)
    times = s.obs_stamp + np.arange(1, n + 1) / 30
    waypoints = s.q + (q - s.q) * np.arange(1, n + 1)[:, None] / n
    cmd.send(P.Command(cmd.sender, cmd.next_seq(), s.boot, s.obs_stamp, P.MODE_JOINT, times, waypoints, -np.ones(n), float(times[-1])))


def beat_until(cmd: Commander, watcher: StateWatcher, predicate, timeout: float = 5.0) -> P.State:
    """Heartbeats from ``cmd`` every 30 ms (a live node) until the latest State satisfies ``predicate``."""
    deadline = time.monotonic() + timeout
    while not predicate(s := watcher.states[-1][1]):
        assert time.monotonic() < deadline, s
        cmd.control(P.Heartbeat, s)
        time.sleep(0.03)
    return s


def settles(watcher: StateWatcher, first: P.State, ticks: int = 12) -> P.State:
    """The State ``ticks`` ticks after ``first``, where the end effector has moved less than 0.5 mm
    in each of the last three ticks (the fake's servos have caught up with their goal)."""
    since = next(i for i, (_, s) in enumerate(watcher.states) if s is first)
    _, last = watcher.wait(lambda s: s.tick >= first.tick + ticks, 10, after=since)
    by_tick = {s.tick: s.ee_pos for _, s in watcher.states[since:] if s.tick <= last.tick}
    path = np.array([by_tick[t] for t in sorted(by_tick)])
    assert (np.linalg.norm(np.diff(path[-4:], axis=0), axis=1) < 5e-4).all(), np.diff(path, axis=0)
    return last


def test_the_watchdog_holds_the_arm_when_the_command_expires_or_the_node_goes_quiet(robot, commanders):
    proc, endpoint, watcher, info = robot
    cmd, = commanders()
    s = new_episode(watcher, cmd, seed=2)
    home = s.q.copy()
    # a command shorter than the heartbeat timeout (0.2 s), then nothing; a long one without heartbeats
    for target, seconds, reason in ((home + [0.3, 0, 0, 0, 0], 0.15, "command_expired"),
                                    (home + [-0.3, 0, 0, 0, 0], 1.0, "heartbeat_timeout")):
        n = len(watcher.states)
        toward(cmd, watcher.states[-1][1], target, seconds)
        watcher.wait(lambda st: st.mode == P.ROBOT_TRACK, 5, after=n)
        _, told = watcher.wait(lambda st: reason in st.faults, 5, after=n)  # at once, the next tick holds
        _, held = watcher.wait(lambda st: st.tick > told.tick, 5, after=n)
        assert held.held and held.mode == P.ROBOT_HOLD
        still = settles(watcher, held)
        assert still.held and still.mode == P.ROBOT_HOLD and np.abs(still.q - held.q).max() < 0.05


def test_a_stop_stops_the_arm_where_it_is_and_latches_until_a_release(robot, commanders):
    proc, endpoint, watcher, info = robot
    node, operator = commanders(2)
    s = new_episode(watcher, node, seed=3)
    n = len(watcher.states)
    toward(node, s, s.q + [0.6, 0, 0, 0, 0], 1.0)
    beat_until(node, watcher, lambda st: st.mode == P.ROBOT_TRACK and st.q[0] > s.q[0] + 0.1)  # moving
    operator.control(P.Stop, watcher.states[-1][1], "test")
    _, stopped = watcher.wait(lambda st: st.mode == P.ROBOT_STOPPED, 2, after=n)
    node.control(P.Reset, watcher.states[-1][1], 9)  # a Reset never clears a Stop, nor do the node's commands move it
    toward(node, watcher.states[-1][1], s.q + [-0.4, 0, 0, 0, 0], 1.0)
    still = settles(watcher, stopped, ticks=15)
    assert still.mode == P.ROBOT_STOPPED and still.held and still.episode == stopped.episode
    assert np.linalg.norm(still.ee_pos - stopped.ee_pos) < 3e-3  # where it stopped, less its servos' coast
    assert not limits_of().outside(still.ee_pos)
    operator.control(P.Release, watcher.states[-1][1], "all clear")
    _, released = watcher.wait(lambda st: st.mode == P.ROBOT_HOLD, 2, after=len(watcher.states) - 1)
    toward(node, released, released.q + [-0.2, 0, 0, 0, 0], 0.6)
    beat_until(node, watcher, lambda st: st.mode == P.ROBOT_TRACK and st.q[0] < released.q[0] - 0.05)  # it moves again

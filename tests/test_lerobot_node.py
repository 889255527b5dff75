"""`dp node` driving a LeRobot arm with a policy trained on LeRobot's data, in LeRobot's units.

The robot announces in its Info how its State reads as the policies' ``state`` key (arm joints in
degrees, the gripper on LeRobot's 0..100) and the node converts observations in and joint + gripper
actions out with it. In process: the Info field on the wire, the conversions, the command modes and
the refusals. As real processes over ZeroMQ (the fake LeRobot of tests/fake_lerobot on the
controller's PYTHONPATH, every goal it is sent recorded to a file): a tiny policy trained by `dp
train` on a LeRobot dataset written by `dp export-data lerobot` and read back by `dp import
lerobot` as LeRobot's own would be (no dp record), exported to ONNX, drives the arm, and each
action reaches the fake in degrees and LeRobot's gripper value, exactly; a policy's out-of-range or
NaN gripper never reaches the arm; a policy of another width is refused before anything moves.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import msgpack
import numpy as np
import pytest

from dp.deploy.node import check_policy, command_mode, joint_waypoints
from dp.errors import DpError
from dp.link import protocol as P
from dp.testing.robot_harness import spawn_dp, watched_robot

TESTS = Path(__file__).resolve().parent
ROBOT = "robots/so101.yaml"
FAKE_ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS / "fake_lerobot"), os.environ.get("PYTHONPATH")]))}
NODE_ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH")]))}
ON_FAKE = ("driver.options.robot.port=/dev/null",
           "driver.options.robot.cameras={front: {type: opencv, index_or_path: 0, width: 32, height: 24, fps: 30}}")
# no clamp between a policy's target and the servos: each tick's goal is the waypoint itself
LOOSE = ("limits.workspace_min=[-2,-2,-2]", "limits.workspace_max=[2,2,2]", "limits.max_step_translation=10",
         "limits.max_speed=1000", "limits.max_step_rotation=10", "limits.max_angular_speed=1000", "limits.max_joint_speed=1000")
START = np.array([0.0, -30.0, 30.0, 60.0, 0.0, 50.0])  # the fake's start, LeRobot's units (arm degrees, gripper 0..100)
SWING = np.array([8.0, 6.0, 6.0, 8.0, 10.0, 30.0])  # the recording's amplitude about START
DEG = 180.0 / np.pi
SO101 = P.StateKey("state", DEG, 100.0, 0.0)  # robots/so101.yaml's gripper: 100 open, 0 closed


def so101_info(**fields) -> P.Info:
    return P.Info(boot=1, robot="so101_follower", control_hz=30.0, state_hz=100.0, n_joints=5, modes=["joint"],
                  action_scale=(0.05, 0.5), command_port=5556, cameras=["front"], **{"state_key": SO101, **fields})


# --------------------------------------------------------------------------- test policies (run inside `dp node`)
class WildGripper:
    """Holds the arm where it is (its own observed degrees back) and asks for a gripper beyond open,
    beyond closed, the observed one, and NaN, in turn."""

    action_dim, obs_keys, shapes = 6, ["state", "front_image"], {"state": [6], "front_image": [24, 32, 3]}
    GRIPPER = (250.0, -80.0, None, np.nan)

    def __init__(self):
        self.k = 0

    def reset(self, instruction=None):
        self.k = 0

    def select_action(self, obs):
        assert obs["front_image"].shape == (24, 32, 3)
        grip = self.GRIPPER[self.k % 4]
        self.k += 1
        return np.append(obs["state"][:5], obs["state"][5] if grip is None else grip)


class SevenWide:
    """ee_delta-shaped actions: the SO-101 has no ee_delta mode and 5 joints."""

    action_dim, obs_keys, shapes = 7, ["state"], {"state": [6]}

    def reset(self, instruction=None):
        pass

    def select_action(self, obs):
        return np.zeros(7)


class NarrowState(SevenWide):
    """Trained on a 5-value state (no gripper): not what the arm's state key gives."""

    action_dim, obs_keys, shapes = 6, ["state"], {"state": [5]}


# --------------------------------------------------------------------------- in process
def test_the_info_carries_the_state_key_checked_on_decode():
    info = so101_info()
    back = P.decode(P.encode(info))
    assert back.state_key == SO101 and back == info
    assert "state" in back.observation_keys() and "state (5 joints x 57.3, then the gripper: open 100, closed 0)" in back.offers()
    wire = msgpack.unpackb(P.encode(info), raw=False)
    for bad, field in [({**wire["state_key"], "joint_scale": 0}, "info.state_key.joint_scale"),
                       ({**wire["state_key"], "joint_scale": float("nan")}, "info.state_key.joint_scale"),
                       ({**wire["state_key"], "gripper": [50, 50]}, "info.state_key.gripper"),
                       ({**wire["state_key"], "gripper": [0, float("inf")]}, "info.state_key.gripper"),
                       ({**wire["state_key"], "key": ""}, "info.state_key.key"),
                       ({**wire["state_key"], "key": "front_image"}, "info.state_key.key"),
                       ({**wire["state_key"], "key": "robot0_joint_pos"}, "info.state_key.key"),
                       ([1, 2], "info.state_key")]:
        with pytest.raises(P.ProtocolError, match=rf"^{field}:"):
            P.decode(msgpack.packb({**wire, "state_key": bad}, use_bin_type=True))
    for absent in ({k: v for k, v in wire.items() if k != "state_key"}, {**wire, "state_key": None}):  # an older controller
        assert P.decode(msgpack.packb(absent, use_bin_type=True)).state_key is None


def test_the_node_sees_lerobot_units_and_sends_radians_and_dps_gripper():
    info = so101_info()
    q = np.radians(START[:5]) + 0.1
    state = P.State(1, 1, 0.0, 0.0, 1, 0, P.ROBOT_HOLD, q, np.zeros(5), np.zeros(3), np.array([0, 0, 0, 1.0]),
                    np.array([0.5]), np.zeros(7))
    obs = P.observation_from_state(state, info.camera_keys, info.state_key)
    np.testing.assert_allclose(obs["state"], [*np.degrees(q), 25.0], rtol=1e-6)  # +0.5 on dp's scale: a quarter open
    assert obs["state"].dtype == np.float32
    assert command_mode(info, 6) == command_mode(info, 5) == P.MODE_JOINT
    chunk = np.array([[*START[:5], 100.0], [10.0, -20.0, 25.0, 50.0, -5.0, 0.0], [0, 0, 0, 0, 0, 250.0]])
    joints, gripper = joint_waypoints(chunk, info)
    np.testing.assert_allclose(joints, np.radians(chunk[:, :5]), rtol=1e-14)
    np.testing.assert_array_equal(gripper, [-1.0, 1.0, -4.0])  # open, closed, and far beyond open: the controller clamps
    joints, gripper = joint_waypoints(chunk[:, :5], info)
    np.testing.assert_array_equal(gripper, -np.ones(3))  # no gripper column: it stays open
    bare = so101_info(state_key=None)  # a robot in its own units (Push-T: pixels)
    joints, gripper = joint_waypoints(chunk, bare)
    np.testing.assert_array_equal(joints, chunk[:, :5])
    np.testing.assert_array_equal(gripper, chunk[:, 5])


def test_what_the_arm_cannot_take_is_refused_naming_both_sides():
    info = so101_info()
    with pytest.raises(DpError, match=r"cannot take this policy's 7-value actions: ee_delta takes 7, joint one per joint \(5\) "
                                      r"or the joints and then the gripper \(6\)"):
        command_mode(info, 7)
    with pytest.raises(DpError, match=r"observes 'state' as 5 values; controller so101_follower gives 6: state \(5 joints"):
        check_policy(info, NarrowState())
    with pytest.raises(DpError, match=r"observes \['wrist_image'\], which controller so101_follower does not publish "
                                      r"\(its cameras: front \(as front_image\); .*its state key: state"):
        check_policy(info, type("Wrist", (), {"obs_keys": ["state", "wrist_image"], "shapes": {"state": [6]}})())
    check_policy(info, WildGripper())
    with pytest.raises(DpError, match=r"observes \['state'\], which .* its state key: none"):
        check_policy(so101_info(state_key=None), WildGripper())


# --------------------------------------------------------------------------- real processes
@pytest.fixture(scope="module")
def lerobot_policy(tmp_path_factory):
    """A tiny policy trained on an SO-101 recording in LeRobot's units: three episodes of the arm
    swinging about the fake's start pose (degrees) with the gripper between 20 and 80, the action the
    next frame's joints, a 32x24 front camera; written as a LeRobot dataset by `dp export-data
    lerobot`, its dp record removed (as LeRobot writes it), imported by `dp import lerobot` (keys
    state, action, front_image), trained with the tiny preset for 4 steps, exported to ONNX."""
    from dp.cli import main
    from dp.data.store import EpisodeStore

    root = tmp_path_factory.mktemp("lerobot_policy")
    recording = EpisodeStore.create(root / "recording.zarr", control_freq=30.0, robot="so101_follower",
                                    roles={"lowdim": ["joints"], "image": ["front_image"], "action": ["action"]})
    with recording:
        for i in range(3):
            t = np.arange(41)[:, None] / 40
            q = START + SWING * np.sin(2 * np.pi * (t + i / 3 + np.arange(6) / 6))
            frames = np.broadcast_to(np.arange(40, dtype=np.uint8)[:, None, None, None], (40, 24, 32, 3)).copy()
            recording.add_episode({"joints": q[:-1].astype(np.float32), "action": q[1:].astype(np.float32), "front_image": frames},
                                  {"task": "pick", "instruction": "pick up the cube"})
    assert main(["export-data", "lerobot", str(root / "recording.zarr"), "--out", str(root / "lerobot"), "--no-progress"]) == 0
    (root / "lerobot" / "meta" / "dp.json").unlink()
    store, run, out = root / "so101.zarr", root / "run", root / "onnx"
    assert main(["import", "lerobot", str(root / "lerobot"), "--out", str(store), "--workers", "0", "--no-progress"]) == 0
    with EpisodeStore.open(store) as imported:
        assert sorted(imported.keys) == ["action", "front_image", "state"] and imported.control_freq == 30.0
    assert main(["train", "--data", str(store), "--preset", "tiny", "--out", str(run), "--no-progress", "data.images=true",
                 "train.steps=4", "train.batch_size=8", "train.val_every=4", "train.ckpt_every=4", "train.num_workers=0"]) == 0
    assert main(["export", str(run), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def robot(tmp_path_factory):
    """The fake SO-101 under `dp robot` with no clamp short of the joint limits, recording its goals."""
    goals = tmp_path_factory.mktemp("so101") / "goals.jsonl"
    for proc, endpoint, watcher, info in watched_robot(ROBOT, 60.0, (*ON_FAKE, *LOOSE, f"driver.options.robot.record={goals}"),
                                                       env=FAKE_ENV):
        yield proc, endpoint, watcher, info, goals


def goals_since(path: Path, start: int) -> tuple[np.ndarray, int]:
    """The goals the fake was sent after the first ``start`` (rows: 5 arm joints, gripper), and how many it was sent."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    keys = [f"{m}.pos" for m in ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")]
    return np.array([[row[k] for k in keys] for row in rows[start:]]).reshape(-1, 6), len(rows)


def run_node(policy: str, endpoint: str, tmp_path: Path, steps: int = 60) -> tuple[int, dict, list[dict], str]:
    """`dp node POLICY` for one episode of ``steps`` ticks: (exit code, report, timings lines, output)."""
    report, timings = tmp_path / "node.json", tmp_path / "timings.jsonl"
    node = spawn_dp(["node", policy, "--robot", endpoint, "--episodes", "1", "--max-steps", str(steps), "--json-out", str(report),
                     "--timings", str(timings), "--connect-timeout", "60"], env=NODE_ENV)
    code = node.popen.wait(180)
    lines = [json.loads(line) for line in timings.read_text().splitlines()] if timings.exists() else []
    return code, json.loads(report.read_text()) if report.exists() else {}, lines, node.output


@pytest.mark.slow
def test_a_policy_trained_on_lerobot_data_drives_the_arm_in_its_units(robot, lerobot_policy, tmp_path):
    """Every action the node's policy chose (its timings, in the data's units) that the controller ran
    reached the fake exactly as LeRobot's values: the arm joints in degrees, the gripper on 0..100."""
    _, endpoint, watcher, info, goals = robot
    assert info.state_key == SO101 and info.cameras == ["front"]
    _, before = goals_since(goals, 0)
    first = len(watcher.states)
    code, report, cycles, output = run_node(str(lerobot_policy), endpoint, tmp_path)
    assert code == 0 and report["episodes"] == 1 and report["policy_errors"] == 0 and report["rejected_states"] == 0, output
    sent, _ = goals_since(goals, before)
    actions = np.array([c["action"] for c in cycles])
    assert actions.shape[1] == 6 and len(actions) >= 50, output
    assert (np.abs(actions - START) < 2 * SWING).all(), (actions.min(0), actions.max(0))  # its data's units: degrees, 0..100
    gap = np.abs(sent[None, :, :] - actions[:, None, :]).max(axis=2).min(axis=1)  # each action to its nearest goal
    reached = gap < 1e-6
    print(f"{reached.sum()} of {len(actions)} actions reached the fake exactly; largest gaps {np.sort(gap)[-5:]}")
    assert reached.mean() > 0.8, (reached.mean(), np.sort(gap)[-5:])
    assert any(s.mode == P.ROBOT_TRACK for _, s in watcher.states[first:])
    assert not any(f.startswith("clamped") for _, s in watcher.states[first:] for f in s.faults)


@pytest.mark.slow
def test_a_gripper_beyond_its_range_is_clamped_and_nan_never_sent(robot, tmp_path):
    """The policy's 250 (beyond open, 100) and -80 (beyond closed, 0) reach the fake as 100 and 0, a
    NaN is refused by the node (nothing sent that tick), and the arm holds still: the joints it is
    sent are the degrees it observes."""
    _, endpoint, watcher, _, goals = robot
    _, before = goals_since(goals, 0)
    first, (_, now) = len(watcher.states), watcher.states[-1]
    code, report, _, output = run_node("test_lerobot_node:WildGripper", endpoint, tmp_path, steps=40)
    assert code == 0 and report["episodes"] == 1, output
    assert report["policy_errors"] >= 5 and watcher.states[-1][1].rejected == now.rejected, report  # NaN: not sent at all
    sent, _ = goals_since(goals, before)
    assert np.isfinite(sent).all() and sent[:, 5].min() == 0.0 and sent[:, 5].max() == 100.0, sent[:, 5]
    tracked = [s for _, s in watcher.states[first:] if s.mode == P.ROBOT_TRACK and s.episode > now.episode]  # the node's episode
    assert len(tracked) > 20 and sum("clamped:gripper" in s.faults for s in tracked) >= 10
    q = np.degrees(np.array([s.q for s in tracked]))
    assert np.ptp(q, axis=0).max() < 0.5, np.ptp(q, axis=0)  # held where it was, in degrees: not moved to radians-as-degrees


@pytest.mark.slow
@pytest.mark.parametrize("policy, message", [
    ("SevenWide", (r"cannot take this policy's 7-value actions: ee_delta takes 7, joint one per joint \(5\) or the "
                   r"joints and then the gripper \(6\)")),
    ("NarrowState", (r"observes 'state' as 5 values; controller so101_follower gives 6: state \(5 joints x 57.3, then the "
                     r"gripper: open 100, closed 0\)")),
])
def test_a_policy_the_arm_cannot_take_is_refused_before_anything_moves(robot, tmp_path, policy, message):
    _, endpoint, watcher, _, _ = robot
    first, episode = len(watcher.states), watcher.states[-1][1].episode
    code, _, cycles, output = run_node(f"test_lerobot_node:{policy}", endpoint, tmp_path)
    assert code == 1 and "dp node: error: " in output and "Traceback" not in output and re.search(message, output), output
    later = [s for _, s in watcher.states[first:]]
    assert not cycles and not any(s.mode == P.ROBOT_TRACK or s.episode != episode for s in later)  # no command, no Reset

"""The 2-D Push-T controller (`dp robot --robot robots/pusht_sim.yaml`) over the real controller
protocol: joint mode is the agent's target position in pixels, clamped to the arena like any arm."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gym_pusht", reason='the Push-T controller needs the optional extra: pip install -e ".[pusht]"')

from dp.deploy.node import command_mode  # noqa: E402
from dp.errors import DpError  # noqa: E402
from dp.infer.chunked_runtime import ChunkedRuntime  # noqa: E402
from dp.link import protocol as P  # noqa: E402
from dp.sim.rollout import seed_for  # noqa: E402
from dp.testing.robot_harness import Commander, StateWatcher, spawn_dp, watched_robot  # noqa: E402

pytestmark = pytest.mark.slow  # trains, simulates or runs processes: `pytest -m "not slow"` leaves it out

TESTS = Path(__file__).resolve().parent
NODE_ENV = {"PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")])}


class Nudge:
    """A 2-D policy run inside `dp node`: the agent's target is always 20 px right of where it is."""

    action_dim = 2

    def reset(self, instruction=None):
        assert instruction is None  # Push-T has one task, no language goal

    def select_action(self, obs):
        return obs["agent_pos"] + np.array([20.0, 0.0])


class SlowPlanner(ChunkedRuntime):
    """A chunked 2-D policy whose every plan takes 250 ms, longer than the one action its chunk holds past
    its re-planning point covers at Push-T's 0.1 s control period: a chunk of 9 agent targets circling
    the agent's position slowly, a new one every 8 steps."""

    PLAN_SECONDS = 0.25

    def __init__(self):
        self.lowdim_keys, self.image_keys, self.obs_keys = ["agent_pos"], [], ["agent_pos"]
        self.shapes, self.pad_lowdim, self.obs_horizon = {"agent_pos": [2]}, False, 1
        self.action_horizon, self.action_dim, self.action_key, self.discrete_dims = 9, 2, "action", []
        self.goal_kind, self.tasks, self.instructions, self.goals, self.lang_encoder, self.rti = "none", [], {}, {}, None, False
        self._start(None, 0, own=8)  # its own interval: a new chunk every 8 steps

    def _sample_chunks(self, noise, window, goal, guess):
        time.sleep(self.PLAN_SECONDS)
        k = np.arange(self.action_horizon)
        return (window["agent_pos"][0, -1] + 15.0 * np.stack([np.cos(k / 4), np.sin(k / 4)], 1))[None].astype(np.float32)

    def _goal_input(self, goal):
        return goal

    @property
    def lang_dim(self) -> int:
        return 0


@pytest.fixture(scope="module")
def robot():
    yield from watched_robot(robot="robots/pusht_sim.yaml")


def _move(cmd: Commander, watcher: StateWatcher, targets: np.ndarray) -> P.State:
    """Send ``targets`` (n, 2) as joint waypoints one control period apart; the State after them."""
    s = watcher.states[-1][1]
    times = s.obs_stamp + 0.1 * np.arange(1, len(targets) + 1)
    cmd.send(P.Command(cmd.sender, cmd.next_seq(), s.boot, s.obs_stamp, P.MODE_JOINT, times, targets,
                       -np.ones(len(targets)), float(times[-1] + 0.05)))
    _, last = watcher.wait(lambda st: st.tick >= s.tick + len(targets) + 3, 20, after=len(watcher.states) - 1)
    return last


def test_controller_offers_a_2d_position_mode_with_the_task_observation(robot):
    proc, endpoint, watcher, info = robot
    assert (info.modes, info.n_joints, info.control_hz, info.task, info.horizon) == (["joint"], 2, 10.0, "pusht", 300)
    assert info.extra == {"agent_pos": 2, "keypoint": 18, "state": 5, "score": 1}
    assert info.cameras == ["top"] and info.camera_keys == {"top": "img"}  # the image policies' view, under the stores' key
    _, s = watcher.wait(lambda st: st.tick > 2, 20)
    obs = P.observation_from_state(s, info.camera_keys)
    assert obs["agent_pos"].shape == (2,) and obs["keypoint"].shape == (18,) and 0.0 <= obs["score"][0] <= 1.0
    assert obs["img"].shape == (96, 96, 3) and obs["img"].dtype == np.uint8 and obs["img"].std() > 10  # a rendered scene
    np.testing.assert_allclose(s.q, obs["agent_pos"], atol=1e-4)


def test_joint_waypoints_move_the_agent_and_are_clamped_to_the_arena(robot):
    proc, endpoint, watcher, info = robot
    cmd = Commander(endpoint, info.command_port)
    time.sleep(0.5)  # connect
    try:
        now = watcher.states[-1][1]
        start, block = now.q.copy(), now.extra["state"][2:4]
        away = (start - block) / np.linalg.norm(start - block)  # a free path: away from the T
        goal = np.clip(start + 40.0 * away, 60, 450)
        s = _move(cmd, watcher, np.concatenate([np.linspace(start, goal, 4)[1:], [goal] * 3]))
        assert np.abs(s.q - goal).max() < 5.0  # the agent reached the target position (PD control)
        first = len(watcher.states)
        s = _move(cmd, watcher, np.array([[900.0, -50.0]] * 6))  # outside the arena
        faults = {f for _, st in watcher.states[first:] for f in st.faults}
        assert any(f.startswith("clamped:joint") for f in faults), faults
        assert (s.q >= 0).all() and (s.q <= 512).all() and s.q[0] > 400 and s.q[1] < 40
    finally:
        cmd.control(P.Stop, watcher.states[-1][1], "test over")
        cmd.control(P.Release, watcher.states[-1][1], "the next test drives it")
        cmd.close()


def test_node_sends_a_2d_policy_as_joint_targets_and_reports_the_score(robot, tmp_path):
    proc, endpoint, watcher, info = robot
    report = tmp_path / "node.json"
    first = len(watcher.states)
    node = spawn_dp(["node", "--policy", "test_pusht_deploy:Nudge", "--robot", endpoint, "--episodes", "1", "--max-steps", "15",
                     "--json-out", str(report)], env=NODE_ENV)
    assert node.popen.wait(120) == 0, node.output
    figures = json.loads(report.read_text())
    assert figures["episodes"] == 1 and figures["policy_errors"] == 0 and figures["rejected_states"] == 0, figures
    episode = figures["per_episode"][0]
    assert episode["steps"] == 15 and 0.0 <= episode["score"] <= 1.0 and figures["mean_score"] == episode["score"]
    tracked = [s for _, s in watcher.states[first:] if s.mode == P.ROBOT_TRACK]
    assert len(tracked) > 50 and tracked[-1].q[0] > tracked[0].q[0] + 50  # pushed right, 20 px a step, by position targets


def test_a_policy_the_controller_cannot_take_is_refused_by_name():
    info = P.Info(boot=1, robot="pusht_sim", control_hz=10.0, state_hz=100.0, n_joints=2, modes=["joint"],
                  action_scale=(0.05, 0.5), command_port=1)
    assert command_mode(info, 2) == "joint"
    with pytest.raises(DpError, match=r"cannot take this policy's 7-value actions: ee_delta takes 7, joint one per joint"):
        command_mode(info, 7)


@pytest.mark.parametrize("plan_ahead", ["off", "auto"])
def test_plan_ahead_keeps_a_slow_policy_from_holding_at_chunk_boundaries(robot, tmp_path, plan_ahead):
    """Issue 35, item 1: a node that samples the next chunk only when its queue runs out lets the last
    waypoint expire while a plan longer than half a period runs: a hold at every chunk boundary.
    Planning ahead (lead chosen from the measured plan time, re-planning every 5 steps to make room for
    it in the chunk) leaves none."""
    proc, endpoint, watcher, info = robot
    report = tmp_path / "node.json"
    node = spawn_dp(["node", "--policy", "test_pusht_deploy:SlowPlanner", "--robot", endpoint, "--episodes", "2",
                     "--max-steps", "40", "--plan-ahead", plan_ahead, "--json-out", str(report)], env=NODE_ENV)
    assert node.popen.wait(180) == 0, node.output
    figures = json.loads(report.read_text())
    assert figures["episodes"] == 2 and figures["policy_errors"] == 0, figures
    expired = figures["holds"].get("command_expired", 0)
    if plan_ahead == "off":
        assert expired >= 4 and figures["plan_ahead"] is None, figures  # about one per chunk boundary: 4 per episode
    else:
        lead = figures["plan_ahead"]
        assert lead == {"min": 4, "max": 4} and figures["replan_every"] == {"min": 5, "max": 5}, figures  # 1.5 x 250 ms
        assert expired == 0 and figures["held_ticks"] == 0 and figures["late_plans"] == 0, figures


def test_node_drives_an_exported_image_policy_from_the_controllers_camera(robot, pusht_image_run, tmp_path):
    """Issue 36, item 4: the controller publishes the 96x96 view as camera ``top`` (observation key ``img``),
    so `dp node` runs an image Push-T policy's ONNX export (full sampling: the default) as it runs a state
    policy; ``--first-episode`` starts it at that episode of `dp eval --split test --seed`'s seeds."""
    from dp.cli import main

    proc, endpoint, watcher, info = robot
    assert main(["export", str(pusht_image_run), "--out", str(tmp_path / "onnx")]) == 0
    report = tmp_path / "node.json"
    node = spawn_dp(["node", "--policy", str(tmp_path / "onnx"), "--robot", endpoint, "--episodes", "2", "--max-steps", "15",
                     "--seed", "5", "--first-episode", "3", "--json-out", str(report)], env=NODE_ENV)
    assert node.popen.wait(180) == 0, node.output
    figures = json.loads(report.read_text())
    assert figures["episodes"] == 2 and figures["policy_errors"] == 0 and figures["rejected_states"] == 0, figures
    assert [e["steps"] for e in figures["per_episode"]] == [15, 15], figures
    assert [e["seed"] for e in figures["per_episode"]] == [seed_for(5, 3, "test"), seed_for(5, 4, "test")], figures


def test_a_negative_first_episode_is_refused_by_name(capsys):
    from dp.cli import main

    with pytest.raises(SystemExit):
        main(["node", "expert:lift", "--episodes", "1", "--first-episode", "-1"])
    assert "--first-episode: expected the index of an episode, 0 or more, got '-1'" in capsys.readouterr().err

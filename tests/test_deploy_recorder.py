"""The recorder (`dp collect --from`): a sim controller driven by the scripted expert through
`dp node`, recorded into an episode store that holds what the expert did; camera frames on the wire."""

from __future__ import annotations

import pytest

import numpy as np

from dp.cli import main
from dp.collect.recorder import Frame, stored_observation, frames_to_episode
from dp.data.store import EpisodeStore
from dp.testing.robot_harness import StateWatcher, spawn_dp, start_robot

pytestmark = pytest.mark.slow  # trains, simulates or runs processes: `pytest -m "not slow"` leaves it out


def test_frames_pair_each_observation_with_the_action_that_followed():
    def frame(i: int, held: bool) -> Frame:
        return Frame({"x": np.array([i], np.float32)}, np.array([0.05 * i, 0, 0, 0, 0, 0.5, 1 if i % 2 else -1]), held)

    frames = [frame(0, True), frame(1, True), frame(2, False), frame(3, False), frame(4, True), frame(5, True)]
    data = frames_to_episode(frames, (0.05, 0.5))
    # leading holds dropped except the observation just before the first commanded tick; trailing holds dropped
    np.testing.assert_array_equal(data["x"][:, 0], [1, 2])
    np.testing.assert_allclose(data["action"][:, 0], [2, 3])
    np.testing.assert_allclose(data["action"][:, 5], [1, 1])
    np.testing.assert_array_equal(data["action"][:, 6], [-1, 1])
    assert frames_to_episode([frame(0, True), frame(1, True)], (0.05, 0.5)) is None


def test_dp_collect_from_records_driven_episodes_into_a_store(tmp_path, capsys):
    robot, endpoint = start_robot()
    node = spawn_dp(["node", "--policy", "expert:lift", "--robot", endpoint, "--episodes", "2"])
    try:
        code = main(["collect", "--from", endpoint, "--episodes", "2", "--out", str(tmp_path / "rec.zarr")])
        assert node.popen.wait(60) == 0, node.output
    finally:
        node.stop()
        assert robot.stop() == 0, robot.output
    report = capsys.readouterr().out
    assert code == 0, report
    assert "recorded 2 episodes" in report and "2 successes" in report and "missed ticks 0," in report, report
    with EpisodeStore.open(tmp_path / "rec.zarr") as store:
        assert len(store) == 2 and store.control_freq == 20.0 and store.robot == "panda_sim"
        assert set(store.keys) == {"robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object", "action"}
        assert store.roles["lowdim"] == ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object"]
        assert store.discrete_dims == {"action": [6]}
        ep = store.get_episode(0)
        meta = store.episode_meta(0)
        assert meta["task"] == "lift" and meta["success"] is True and meta["source"] == "recorder"
        T = len(ep["action"])
        assert 30 < T < 200 and all(len(v) == T for v in ep.values())
        a = ep["action"]
        assert np.isin(a[:, 6], [-1.0, 1.0]).all() and (a[:, 6] == 1.0).any()  # the gripper closed on the cube
        assert np.abs(a[:, :6]).max() <= 1.0 + 1e-5  # expert actions, in OSC_POSE units
        # the recorded actions explain the motion: the end effector moves along the commanded x deltas
        moved = np.diff(ep["robot0_eef_pos"][:, 0])
        assert np.corrcoef(moved, a[:-1, 0])[0, 1] > 0.8
        assert ep["object"][-1, 2] > ep["object"][0, 2] + 0.002  # the cube is leaving the table (success at +4 cm)


def test_camera_frames_cross_as_jpeg_and_become_image_keys():
    robot, endpoint = start_robot("driver.options.cameras=[agentview]", "driver.options.image_size=32")
    watcher = StateWatcher(endpoint)
    try:
        info = watcher.wait_info(30)
        _, first = watcher.wait(lambda s: True, 10)
        _, later = watcher.wait(lambda s: s.tick >= first.tick + 3, 10)
    finally:
        watcher.close()
        assert robot.stop() == 0, robot.output
    assert info.cameras == ["agentview"]
    frame = later.images["agentview"]
    assert frame.encoding == "jpeg" and frame.pixels.shape == (32, 32, 3) and frame.pixels.std() > 5
    frames = [Frame(stored_observation(s), s.applied, held) for s, held in ((first, True), (later, False), (later, False))]
    data = frames_to_episode(frames, info.action_scale)
    assert data["agentview_image"].dtype == np.uint8 and data["agentview_image"].shape == (2, 32, 32, 3)

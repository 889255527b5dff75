"""The Push-T task (gym-pusht): observations, the protocol's score, seeds, evaluation and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("gym_pusht", reason='Push-T tests need the optional extra: pip install -e ".[pusht]"')

from dp.cli import main  # noqa: E402
from dp.data.store import EpisodeStore  # noqa: E402
from dp.errors import DpError  # noqa: E402
from dp.eval.evaluate import evaluate  # noqa: E402
from dp.sim.pusht import KEYPOINTS, episode_score, keypoints  # noqa: E402
from dp.sim.rollout import seed_for  # noqa: E402
from dp.sim.tasks import get_task  # noqa: E402
from dp.stats import mean_interval  # noqa: E402

pytestmark = pytest.mark.slow  # trains, simulates or runs processes: `pytest -m "not slow"` leaves it out

GOAL_POSE = (256.0, 256.0, np.pi / 4)  # gym-pusht's target pose of the block


class Follow:
    """A stand-in policy that moves the agent by a fixed offset each step (no learning involved)."""

    action_dim, lowdim_keys, image_keys = 2, ["agent_pos", "keypoint"], []

    def __init__(self, offset=(4.0, -3.0)):
        self.offset, self.instructions, self.seen = np.array(offset), [], set()

    def reset(self, instruction=None):
        self.instructions.append(instruction)

    def select_action(self, obs):
        self.seen.add(tuple(sorted((k, v.shape) for k, v in obs.items())))
        return obs["agent_pos"] + self.offset


def test_protocol_score_and_success_follow_diffusion_policy():
    assert episode_score([0.1, 0.475, 0.3]) == (pytest.approx(0.5), False)
    assert episode_score([0.2, 0.96, 0.5]) == (1.0, True)  # score capped at 1, success once 0.95 is reached
    assert episode_score([0.949]) == (pytest.approx(0.949 / 0.95), False)
    assert episode_score([]) == (0.0, False)
    low, high = mean_interval([0.5, 0.7, 0.9, 1.0])
    assert low == pytest.approx(0.7750 - 3.182446 * np.std([0.5, 0.7, 0.9, 1.0], ddof=1) / 2, abs=1e-4) and high == 1.0


def test_observations_are_the_store_keys_and_a_seed_fixes_the_start():
    task = get_task("pusht")
    assert (task.action_dim, task.horizon, task.control_freq) == (2, 300, 10.0)
    env = task.make_env(["top"])
    try:
        first = env.reset(7)
        assert {k: v.shape for k, v in first.items()} == {"agent_pos": (2,), "keypoint": (18,), "state": (5,), "img": (96, 96, 3)}
        assert first["img"].dtype == np.uint8 and first["keypoint"].dtype == np.float32
        np.testing.assert_allclose(first["keypoint"].reshape(9, 2), keypoints(first["state"][2:]), atol=1e-3)
        assert 0 <= first["state"][4] < 2 * np.pi
        again = env.reset(7)
        assert all(np.array_equal(first[k], again[k]) for k in first)
        assert not np.array_equal(env.reset(8)["state"], first["state"])
        env.reset(7)
        target = first["agent_pos"] + np.array([-30.0, 0.0])
        for _ in range(5):
            obs, info = env.step(target)
        assert abs(obs["agent_pos"][0] - target[0]) < 5.0  # the PD controller reached the target position
        assert 0.0 <= info["coverage"] <= 1.0 and env.score() == pytest.approx(min(info["coverage"] / 0.95, 1.0))
        assert env.render("top", 128).shape == (128, 128, 3)
        with pytest.raises(DpError, match=r"shape \(2,\)"):
            env.step(np.zeros(7))
        with pytest.raises(DpError, match="NaN"):
            env.step(np.array([np.nan, 1.0]))
    finally:
        env.close()


def test_a_block_on_the_target_is_a_success_with_score_one():
    env = get_task("pusht").make_env()
    try:
        env.reset(0)
        block = env.env.block  # put the T on its target pose (angle first: pymunk turns a body about its centre of gravity)
        block.angle, block.position = GOAL_POSE[2], GOAL_POSE[:2]
        obs, info = env.step(env.observation()["agent_pos"])
        assert info["coverage"] > 0.99 and env.success() and env.score() == 1.0
        np.testing.assert_allclose(obs["keypoint"].reshape(9, 2), keypoints(np.array(GOAL_POSE)), atol=0.5)
    finally:
        env.close()


def test_keypoints_are_a_rigid_function_of_the_block_pose():
    pts = keypoints(np.array([100.0, 200.0, 1.0]))
    dist = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    np.testing.assert_allclose(dist, np.linalg.norm(KEYPOINTS[:, None] - KEYPOINTS[None], axis=-1), atol=1e-9)
    np.testing.assert_allclose(keypoints(np.array([0.0, 0.0, 0.0])), KEYPOINTS)
    np.testing.assert_allclose(keypoints(np.array([5.0, 6.0, 2 * np.pi + 0.3])), keypoints(np.array([5.0, 6.0, 0.3])), atol=1e-9)


def test_evaluate_reports_score_and_success_on_validation_seeds_apart_from_test_seeds():
    policy = Follow()
    result = evaluate(policy, "pusht", 2, seed=4, split="val", progress=False)
    figures = result.as_dict()
    assert figures["split"] == "val" and figures["seeds"] == [seed_for(4, i, "val") for i in range(2)]
    assert figures["lengths"] == [300, 300]  # no success: the protocol's 300 steps
    assert len(figures["scores"]) == 2 and all(0.0 <= s <= 1.0 for s in figures["scores"])
    assert figures["mean_score"] == pytest.approx(np.mean(figures["scores"]), abs=1e-6)
    assert policy.instructions == [None, None]  # one task, no language goal
    assert policy.seen == {(("agent_pos", (2,)), ("keypoint", (18,)), ("state", (5,)))}  # no image rendered for it
    val = {seed_for(0, i, "val") for i in range(1000)}
    assert not val & {seed_for(0, i, "test") for i in range(1000)}
    assert not val & {seed_for(0, i, "collect") for i in range(1000)}
    assert seed_for(0, 5, "test") == seed_for(0, 5, "eval")  # "eval" is the test stream's older name


class Noisy(Follow):
    """A stand-in whose offset is drawn from the noise stream the evaluation seeds, and which keeps its first observation."""

    def seed(self, seed):
        self.rng = np.random.default_rng(seed)

    def reset(self, instruction=None):
        super().reset(instruction)
        self.first = None

    def select_action(self, obs):
        step = self.rng.normal(0, 20, 2)
        if self.first is None:
            self.first = (obs["keypoint"].copy(), step)
        return obs["agent_pos"] + step


def test_a_noise_seed_keeps_the_episode_start_and_draws_other_noise():
    def run(noise_seed):
        policy = Noisy()
        seeds = evaluate(policy, "pusht", 1, seed=3, split="val", progress=False, noise_seed=noise_seed).as_dict()["seeds"]
        return (*policy.first, seeds)

    start, draw, seeds = run(None)
    start7, draw7, seeds7 = run(7)
    assert seeds == seeds7 == [seed_for(3, 0, "val")]  # the episode keeps its seed
    np.testing.assert_array_equal(start, start7)  # and its start
    assert not np.allclose(draw, draw7)  # another draw of the noise
    np.testing.assert_array_equal(draw7, run(7)[1])  # reproducible
    np.testing.assert_array_equal(draw, run(None)[1])  # without it, the noise follows the episode's seed as before


def test_policies_that_do_not_fit_the_task_are_refused_before_any_episode():
    class SevenWide(Follow):
        action_dim = 7

    with pytest.raises(DpError, match="7 values but task 'pusht' takes 2"):
        evaluate(SevenWide(), "pusht", 1, progress=False)
    with pytest.raises(DpError, match="2 values but task 'lift' takes 7"):
        evaluate(Follow(), "lift", 1, progress=False)

    class Camera(Follow):
        image_keys = ["agentview_image"]

    with pytest.raises(DpError, match=r"image key\(s\) \['agentview_image'\]; task 'pusht' renders only \['img'\]"):
        evaluate(Camera(), "pusht", 1, progress=False)

    class Privileged(Follow):
        lowdim_keys = ["agent_pos", "n_contacts"]

    with pytest.raises(DpError, match=r"\['n_contacts'\], which task 'pusht' does not give"):
        evaluate(Privileged(), "pusht", 1, progress=False)


def _pusht_store(path, episodes=4, seed=0):
    """A small store with the keys of datasets/pusht_keypoints.yaml (agent_pos, keypoint, action)."""
    rng = np.random.default_rng(seed)
    store = EpisodeStore.create(path, control_freq=10.0, robot="pusht")
    for i in range(episodes):
        T = 30
        agent = rng.uniform(100, 400, size=(T, 2)).astype(np.float32)
        pose = np.array([rng.uniform(150, 350), rng.uniform(150, 350), rng.uniform(0, 6)])
        kp = np.repeat(keypoints(pose).reshape(1, 18), T, axis=0).astype(np.float32)
        store.add_episode({"agent_pos": agent, "keypoint": kp, "action": agent + 5.0}, meta={"task": "pusht", "source": "test"})
    store.close()


def test_dp_eval_runs_a_trained_pusht_policy_and_refuses_it_on_lift(tmp_path, capsys):
    _pusht_store(tmp_path / "s.zarr")
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "s.zarr"), "--preset", "tiny", "--out", str(run), "--no-progress",
                 "train.steps=4", "train.batch_size=8", "train.val_every=4", "train.ckpt_every=4",
                 "data.obs_keys=[agent_pos,keypoint]", "data.obs_horizon=2", "data.action_horizon=16"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--task", "pusht", "--episodes", "1", "--seed", "2", "--split", "val", "--json",
                 "--schedule", "fitted", "--replan-every", "4"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["sampling"] == {"solver": "ddim", "schedule": "fitted", "steps": 10, "replan_every": 4, "rti": False}
    assert "noise_seed" not in figures  # recorded only where it was set
    assert main(["eval", str(run), "--task", "pusht", "--episodes", "1", "--seed", "2", "--split", "val", "--json", "--noise-seed", "5"]) == 0
    noisy = json.loads(capsys.readouterr().out)
    assert noisy["noise_seed"] == 5 and noisy["seeds"] == figures["seeds"]  # the same start, the stream recorded
    assert figures["task"] == "pusht" and figures["split"] == "val" and figures["episodes"] == 1
    assert figures["seeds"] == [seed_for(2, 0, "val")] and len(figures["scores"]) == 1
    assert 0.0 <= figures["mean_score"] <= 1.0 and figures["latency_ms"]["calls"] == figures["lengths"][0]
    assert main(["eval", str(run), "--task", "lift", "--episodes", "1"]) != 0
    assert "the policy's actions have 2 values but task 'lift' takes 7" in capsys.readouterr().err


@pytest.mark.parametrize("preset, missing", [("pusht", "['keypoint']"), ("pusht-image", "['img', 'keypoint']")])  # the image preset's privileged keypoints too
def test_a_store_without_the_keys_of_the_preset_is_refused_by_name(tmp_path, capsys, preset, missing):
    store = EpisodeStore.create(tmp_path / "agent.zarr", control_freq=10.0, robot="pusht")
    store.add_episode({"agent_pos": np.zeros((12, 2), np.float32), "action": np.zeros((12, 2), np.float32)}, meta={"task": "pusht"})
    store.close()
    assert main(["train", "--data", str(tmp_path / "agent.zarr"), "--preset", preset, "--out", str(tmp_path / "run"), "--no-progress"]) != 0
    assert f"no key(s) {missing}" in capsys.readouterr().err

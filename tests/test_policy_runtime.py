"""The torch Policy runtime: loading, observation history, action queue, reproducibility, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from dp.cli import main as dp_main
from dp.data.store import EpisodeStore
from dp.errors import DpError
from dp.infer import Policy
from dp.infer.rti_guess import medoid_chunk, vote_discrete
from dp.infer.load import load_policy
from dp.testing.reach_store import make_store


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A tiny two-camera policy with an observation history of 2 (trained briefly: mechanics, not skill)."""
    root = tmp_path_factory.mktemp("policy")
    store = make_store(root / "img.zarr", episodes=3, length=12, cameras=2, image_size=24)
    run = root / "run"
    assert dp_main(["train", "--data", str(store), "--preset", "tiny", "--out", str(run), "--no-progress", "data.images=true",
                    "data.obs_horizon=2", "data.n_action_steps=4", "train.steps=10", "train.batch_size=16"]) == 0
    episode = EpisodeStore.open(store).get_episode(0)
    frames = [{k: v[t] for k, v in episode.items() if k != "action"} for t in range(len(episode["action"]))]
    return run, frames


def test_loads_run_or_checkpoint_folder(image_run):
    run, frames = image_run
    policy = Policy.load(run)
    assert policy.image_keys == ["cam0_image", "cam1_image"] and policy.obs_horizon == 2
    assert policy.lowdim_keys == ["robot0_eef_pos", "robot0_gripper_qpos", "object"]
    assert policy.predict_chunk(frames[0]).shape == (10, 7)
    same = Policy.load(run / "checkpoints" / "step_0000010")
    noise = np.random.default_rng(0).normal(size=(10, 7))
    policy.reset()
    np.testing.assert_array_equal(policy.predict_chunk(frames[0], noise=noise), same.predict_chunk(frames[0], noise=noise))
    with pytest.raises(DpError, match="no model.safetensors"):
        Policy.load(run / "checkpoints")


def test_history_is_padded_with_the_first_observation(image_run):
    run, frames = image_run
    policy = Policy.load(run)
    policy.reset()
    policy._push(frames[0])
    first = policy.model.observation_batch(policy._window())
    np.testing.assert_array_equal(first["cam0_image"][0, 0].numpy(), frames[0]["cam0_image"])
    np.testing.assert_array_equal(first["cam0_image"][0, 1].numpy(), frames[0]["cam0_image"])
    policy._push(frames[1])
    second = policy.model.observation_batch(policy._window())
    np.testing.assert_array_equal(second["cam1_image"][0, 0].numpy(), frames[0]["cam1_image"])
    np.testing.assert_array_equal(second["cam1_image"][0, 1].numpy(), frames[1]["cam1_image"])
    policy.reset()
    assert not policy._history


def test_action_queue_refills_every_n_action_steps(image_run):
    run, frames = image_run
    policy = Policy.load(run, seed=3)
    calls = []
    sample = policy.model.sample_encoded
    policy.model.sample_encoded = lambda *a, **k: (calls.append(1), sample(*a, **k))[1]
    actions = [policy.select_action(frames[t]) for t in range(9)]
    assert len(calls) == 3  # 4 actions per chunk: steps 0, 4, 8
    assert all(a.shape == (7,) and a[6] in (-1.0, 1.0) for a in actions)  # the gripper is snapped to +-1
    # select_action's first action is the first action of the chunk predict_chunk returns
    twin = Policy.load(run, seed=3)
    np.testing.assert_allclose(twin.predict_chunk(frames[0])[:4], np.stack(actions[:4]), rtol=0, atol=1e-6)
    policy.reset()
    policy.select_action(frames[0])
    assert len(calls) == 4  # reset empties the queue
    # prime: the first chunk sampled ahead (a robot holding still), then served without sampling
    primed = Policy.load(run, seed=3)
    primed.prime(frames[0])
    primed.model.sample_encoded = lambda *a, **k: (calls.append(1), sample(*a, **k))[1]
    served = [primed.select_action(frames[0]) for _ in range(4)]
    assert len(calls) == 4
    np.testing.assert_allclose(np.stack(served), np.stack(actions[:4]), rtol=0, atol=1e-6)
    assert Policy.load(run, n_action_steps=10).n_action_steps == 10
    with pytest.raises(DpError, match="n_action_steps"):
        Policy.load(run, n_action_steps=11)


def test_vote_sets_each_discrete_dimension_to_the_majority():
    rng = np.random.default_rng(0)
    chunks = rng.normal(size=(5, 10, 7)).astype(np.float32)
    chunks[..., 6] = np.sign(chunks[..., 6])
    chunks[:, 3, 6] = [-1, 1, 1, -1, 1]  # the first chunk opens at step 3, the majority closes
    voted = vote_discrete(chunks, [6])
    np.testing.assert_array_equal(voted[:, :6], chunks[0, :, :6])  # the arm: the first chunk
    np.testing.assert_array_equal(voted[:, 6], np.where(chunks[..., 6].sum(0) > 0, 1.0, -1.0))
    assert voted[3, 6] == 1.0 and chunks[0, 3, 6] == -1.0
    np.testing.assert_array_equal(vote_discrete(chunks[:1], [6]), chunks[0])  # one chunk: itself


def test_discrete_vote_takes_the_majority_of_chunks_from_the_noise_stream(image_run):
    run, frames = image_run
    policy = Policy.load(run, seed=9)
    policy.use_discrete_vote(5)
    action = policy.select_action(frames[0])
    # the same five noise draws, one chunk at a time in a twin: the batch gives the same chunks
    noise = np.random.default_rng(9).standard_normal((5, 10, 7), dtype=np.float32)
    twin = Policy.load(run)
    voters = np.stack([twin.predict_chunk(frames[0], noise=row) for row in noise])
    voted = vote_discrete(voters, [6])
    np.testing.assert_allclose(action, voted[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(policy.pending_actions(), voted[1:4], rtol=0, atol=1e-5)
    np.testing.assert_allclose(policy._previous, voted, rtol=0, atol=1e-5)  # RTI warm-starts from the acted chunk
    assert (voters[..., 6] != voters[:1, :, 6]).any()  # the voters disagree somewhere: the vote decides
    policy.use_discrete_vote(1)
    policy.seed(9)
    policy.reset()
    np.testing.assert_allclose(policy.select_action(frames[0]), voters[0][0], rtol=0, atol=1e-5)  # one: the plain draw
    for bad in (0, 2, 2.5, -3):
        with pytest.raises(DpError, match="must be odd"):
            policy.use_discrete_vote(bad)
    assert load_policy(str(run), vote=3)._voters == 3
    with pytest.raises(DpError, match="samples no chunks: the discrete vote"):
        load_policy("expert:lift", vote=3)


def test_medoid_is_the_chunk_nearest_the_others_over_the_executed_actions():
    chunks = np.zeros((4, 10, 7), np.float32)
    chunks[:, :4, 0] = np.array([0.0, 1.0, 1.2, 5.0])[:, None]  # executed: squared distances to the rest per action 27.44, 17.04, 15.92, 55.44
    chunks[2, 4:, 0] = 9.0  # what is not executed does not count
    chunks[..., 6] = 0.4  # a gripper command between the levels is snapped
    picked = medoid_chunk(chunks, 4, [6])
    np.testing.assert_array_equal(picked[:, :6], chunks[2, :, :6])
    np.testing.assert_array_equal(picked[:, 6], 1.0)
    np.testing.assert_array_equal(medoid_chunk(chunks[2:3], 4, []), chunks[2])  # one chunk: itself


def test_chunk_medoid_acts_the_medoid_of_chunks_from_the_noise_stream(image_run):
    run, frames = image_run
    policy = Policy.load(run, seed=9)
    policy.use_chunk_medoid(4)
    action = policy.select_action(frames[0])
    noise = np.random.default_rng(9).standard_normal((4, 10, 7), dtype=np.float32)  # the same four draws, one at a time
    twin = Policy.load(run)
    chunks = np.stack([twin.predict_chunk(frames[0], noise=row) for row in noise])
    picked = medoid_chunk(chunks, policy.n_action_steps, [6])
    np.testing.assert_allclose(action, picked[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(policy._previous, picked, rtol=0, atol=1e-5)  # RTI warm-starts from the acted chunk
    assert policy.sampling()["medoid"] == 4 and "vote" not in policy.sampling()
    with pytest.raises(DpError, match="do not combine"):
        policy.use_discrete_vote(3)
    for bad in (0, 2.5, -1):
        with pytest.raises(DpError, match="whole number >= 1"):
            policy.use_chunk_medoid(bad)
    policy.use_discrete_vote(1)  # one chunk per plan: the medoid is off too
    assert "medoid" not in policy.sampling() and "vote" not in policy.sampling()
    policy.use_chunk_medoid(4)
    policy.use_chunk_medoid(1)  # off
    policy.use_discrete_vote(3)
    with pytest.raises(DpError, match="do not combine"):
        policy.use_chunk_medoid(3)
    assert load_policy(str(run), medoid=3).sampling()["medoid"] == 3
    with pytest.raises(DpError, match="samples no chunks: the chunk medoid"):
        load_policy("expert:lift", medoid=3)


def test_temporal_ensemble_acts_the_weighted_mean_of_overlapping_chunks(image_run):
    run, frames = image_run
    decay = 0.5
    policy = Policy.load(run, n_action_steps=2, seed=5)
    policy.use_temporal_ensemble(decay)
    actions = [policy.select_action(frames[t]) for t in range(9)]
    # the same chunks, from a twin with the same noise stream: one is sampled at steps 0, 2, 4, ...
    twin = Policy.load(run, n_action_steps=2, seed=5)
    chunks = {}
    for t in range(9):
        twin._push(frames[t])
        if t % 2 == 0:
            chunks[t] = twin._sample(None)
    for t, action in enumerate(actions):
        live = [start for start in sorted(chunks) if start <= t < start + 10]  # oldest first
        weights = np.exp(-decay * np.arange(len(live)))
        expected = weights @ np.stack([chunks[s][t - s] for s in live]) / weights.sum()
        np.testing.assert_allclose(action[:6], expected[:6], rtol=0, atol=1e-5)
        assert action[6] == (1.0 if expected[6] >= 0 else -1.0)  # the gripper is snapped after averaging
    assert not np.allclose(actions[2], chunks[2][0])  # step 2 mixes chunk 0's third action into chunk 2's first
    # the look-ahead (what dp node sends a driver) is the ensemble up to the next re-plan, the action to come
    pending = policy.pending_actions()
    assert pending.shape == (1, 7)  # the chunk of step 8 is re-planned at step 10: step 9 is pending
    np.testing.assert_allclose(pending[0], policy.select_action(frames[9]), rtol=0, atol=1e-6)
    assert not np.allclose(pending[0], chunks[8][1])  # not the newest chunk's raw action
    # a chunk of 10 re-planned every 10 steps never overlaps: the ensemble is the plain queue
    plain, ensembled = Policy.load(run, n_action_steps=10, seed=7), Policy.load(run, n_action_steps=10, seed=7)
    ensembled.use_temporal_ensemble(0.01)
    for t in range(12):
        np.testing.assert_allclose(ensembled.select_action(frames[t]), plain.select_action(frames[t]), rtol=0, atol=1e-6)
    with pytest.raises(DpError, match="finite"):
        policy.use_temporal_ensemble(float("nan"))
    with pytest.raises(DpError, match="samples no chunks"):
        load_policy("expert:lift", ensemble=0.01)


def test_bad_observations_are_refused(image_run):
    run, frames = image_run
    policy = Policy.load(run)
    good = frames[0]
    cases = {
        "no key 'object'": {k: v for k, v in good.items() if k != "object"},
        "expected shape": {**good, "robot0_eef_pos": np.zeros(4, dtype=np.float32)},
        "NaN": {**good, "object": np.array([0.0, np.nan, 0.0], dtype=np.float32)},
        "expected a uint8 image": {**good, "cam0_image": good["cam0_image"].astype(np.float32)},
        "uint8 image": {**good, "cam1_image": good["cam1_image"][:12]},
    }
    for message, obs in cases.items():
        with pytest.raises(DpError, match=message):
            policy.select_action(obs)
    assert policy.select_action({**good, "extra_key": np.zeros(2)}).shape == (7,)  # extra keys are ignored
    with pytest.raises(DpError, match="unknown instruction"):
        policy.reset("stack the cubes")
    policy.reset("reach the target")  # the instruction of the only task
    policy.reset("reach")

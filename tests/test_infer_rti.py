"""RTI warm starts on a briefly trained policy, and `dp export` end to end on its run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from dp.cli import main as dp_main
from dp.data.store import EpisodeStore
from dp.data.windows import split_episodes
from dp.errors import DpError
from dp.eval.warm_starts import evaluate_warm_starts
from dp.infer import OnnxPolicy, Policy
from dp.infer.rti import RTISettings
from dp.infer.rti_guess import shift_guess
from dp.testing.reach_store import make_store

pytestmark = pytest.mark.slow  # trains, simulates or runs processes: `pytest -m "not slow"` leaves it out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("rti")
    store = make_store(root / "reach.zarr", episodes=16, length=30, tasks=("reach", "retreat"), seed=2)
    run = root / "run"
    rc = dp_main(["train", "--data", str(store), "--preset", "tiny", "--out", str(run), "--no-progress",
                  "train.steps=500", "data.val_fraction=0.25", "train.val_every=1000"])
    assert rc == 0
    return store, run


def held_out(store_path, policy: Policy) -> list[tuple[dict, str]]:
    store = EpisodeStore.open(store_path)
    _, val = split_episodes(len(store), policy.cfg.data.val_fraction, policy.cfg.train.seed)
    return [(store.get_episode(int(i)), store.episode_meta(int(i))["instruction"]) for i in val]


def test_shift_guess_advances_repeats_and_snaps():
    previous = np.arange(12, dtype=np.float32).reshape(4, 3) - 5
    guess = shift_guess(previous, 3, discrete_dims=[2])
    assert np.array_equal(guess[:, :2], previous[[3, 3, 3, 3], :2])
    assert np.array_equal(guess[:, 2], [1, 1, 1, 1])
    assert np.array_equal(shift_guess(previous, 0, [2])[:, 2], [-1, 1, 1, 1])  # column 2 holds -3, 0, 3, 6


def test_warm_chunks_stay_close_to_full_sampling_on_held_out_windows(trained):
    store, run = trained
    policy = Policy.load(run)
    report = evaluate_warm_starts(policy, held_out(store, policy), [RTISettings()])
    (warm,) = report["settings"]
    assert report["chunks"] >= 12
    assert warm["warm_error"] <= 1.2 * report["full_error"] + 0.01, report
    assert warm["warm_vs_full"] <= 0.1, report  # raw action units; actions span [-1, 1]
    assert warm["gripper_agreement"] >= 0.9, report
    profile = warm["contraction"]  # an error in the guess shrinks at every step
    assert len(profile) == RTISettings().steps + 1
    assert all(b < a for a, b in zip(profile, profile[1:])) and profile[-1] < 0.3, profile


def test_torch_policy_rti_option(trained):
    store, run = trained
    episode, instruction = held_out(store, Policy.load(run))[0]
    warm, plain = Policy.load(run, rti=True), Policy.load(run)
    obs = {k: episode[k][0] for k in warm.obs_keys}
    noise = np.random.default_rng(0).standard_normal((10, 7)).astype(np.float32)
    for p in (warm, plain):
        p.reset(instruction)
    first = warm.predict_chunk(obs, noise=noise)
    assert np.array_equal(first, plain.predict_chunk(obs, noise=noise))
    assert not np.array_equal(warm.predict_chunk(obs, noise=noise), first)
    warm.reset(instruction)
    assert np.array_equal(warm.predict_chunk(obs, noise=noise), first)
    with pytest.raises(DpError, match="RTI steps"):
        Policy.load(run, rti=RTISettings(steps=0))
    with pytest.raises(DpError, match="RTI start sigma"):
        Policy.load(run, rti=RTISettings(sigma_start=500.0))
    with pytest.raises(DpError, match="RTI guess"):
        Policy.load(run, rti=RTISettings(guess="noise"))


def test_a_zero_guess_ignores_the_previous_chunk_and_the_shifted_guess_does_not(trained):
    """The measurement of what the warm start buys (issue 37): with ``guess="zero"`` the second chunk
    does not depend on the first; with the shifted guess it does."""
    store, run = trained
    episode, instruction = held_out(store, Policy.load(run))[0]
    obs = {k: episode[k][0] for k in Policy.load(run).obs_keys}
    rng = np.random.default_rng(1)
    firsts, noise = [rng.standard_normal((10, 7)).astype(np.float32) for _ in range(2)], rng.standard_normal((10, 7)).astype(np.float32)
    seconds = {}
    for guess in ("zero", "shift"):
        policy = Policy.load(run, rti=RTISettings(guess=guess))
        seconds[guess] = []
        for first in firsts:
            policy.reset(instruction)
            policy.predict_chunk(obs, noise=first)
            seconds[guess].append(policy.predict_chunk(obs, noise=noise))
    assert np.array_equal(*seconds["zero"])
    assert not np.array_equal(*seconds["shift"])


def test_dp_export_command_and_onnx_policy_on_a_trained_run(trained, tmp_path, capsys):
    store, run = trained
    out = tmp_path / "exported"
    assert dp_main(["export", str(run), "--out", str(out), "--sampler-steps", "6", "--rti-steps", "3", "--rti-sigma", "2.0", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["sampler_steps"] == 6 and summary["rti"] == {"steps": 3, "sigma_start": 2.0} and summary["control_freq"] == 20.0
    assert summary["precision"] == "fp32" and set(summary["files"]) == {"policy.onnx", "policy_warm.onnx", "policy_first.onnx", "policy.weights"}
    spec = yaml.safe_load((out / "policy.yaml").read_text())
    assert spec["goal"]["tasks"] == ["reach", "retreat"] and spec["action"]["discrete_dims"] == [6]
    assert len(spec["sampler"]["sigmas"]) == 7 and len(spec["rti"]["sigmas"]) == 4

    torch_policy = Policy.load(run, steps=6, rti=RTISettings(3, 2.0))
    onnx_policy = OnnxPolicy.load(out, rti=True, first_chunk="full")  # as the torch Policy starts an episode
    episode, instruction = held_out(store, torch_policy)[0]
    rng = np.random.default_rng(1)
    for p in (torch_policy, onnx_policy):
        p.reset(instruction)
    for t in (0, 8, 16):
        obs = {k: episode[k][t] for k in onnx_policy.obs_keys}
        noise = rng.standard_normal((10, 7)).astype(np.float32)
        assert np.abs(onnx_policy.predict_chunk(obs, noise=noise) - torch_policy.predict_chunk(obs, noise=noise)).max() < 1e-4
    actions = [onnx_policy.select_action({k: episode[k][t] for k in onnx_policy.obs_keys}) for t in range(10)]
    assert np.isfinite(actions).all()

    # `dp eval --rti-steps/--rti-sigma`: chosen per run; an export has them fixed
    from dp.infer.load import load_policy

    assert load_policy(str(run), rti_steps=3, rti_sigma=2.0).rti == RTISettings(3, 2.0)
    with pytest.raises(DpError, match="fixed at export"):
        load_policy(str(out), rti_steps=3)
    # `dp eval --replan-every/--first-chunk`: full sampling at RTI's interval; the first chunk's sampler
    assert load_policy(str(run), replan_every=4).n_action_steps == 4
    assert load_policy(str(out), rti=True, replan_every=4, first_chunk="full").n_action_steps == 4
    with pytest.raises(DpError, match="applies to --rti"):
        load_policy(str(out), first_chunk="full")
    with pytest.raises(DpError, match="exported folder"):
        load_policy(str(run), first_chunk="full")
    # `dp eval --sampler-steps`: a run's full-sampling steps; an export's are fixed
    assert load_policy(str(run), sampler_steps=3).steps == 3
    with pytest.raises(DpError, match="fixed at export"):
        load_policy(str(out), sampler_steps=3)
    with pytest.raises(DpError, match="must be >= 1"):
        load_policy(str(run), sampler_steps=0)

    assert dp_main(["export", str(run), "--out", str(out)]) == 0  # a previous export is replaced
    assert yaml.safe_load((out / "policy.yaml").read_text())["sampler"]["steps"] == 10
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert dp_main(["export", str(run), "--out", str(tmp_path / "busy")]) == 1
    assert dp_main(["export", str(run), "--out", str(tmp_path / "x"), "--rti-sigma", "0"]) == 1
    assert dp_main(["export", str(run), "--out", str(tmp_path / "x"), "--first-steps", "0"]) == 1
    with pytest.raises(SystemExit):  # argparse: not one of fp32, fp16, int8
        dp_main(["export", str(run), "--out", str(tmp_path / "x"), "--precision", "int4"])
    err = capsys.readouterr().err
    assert "holds other files (notes.txt)" in err and "RTI start sigma" in err and "first chunk: RTI steps must be >= 1" in err
    assert not (tmp_path / "x").exists()

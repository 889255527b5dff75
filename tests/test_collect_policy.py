"""`dp collect --policy`: a trained policy's roll-outs in gym-pusht become a store that trains beside the
human demonstrations (self-improvement by filtered behaviour cloning)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml

from dp.cli import main
from dp.data.store import EpisodeStore
from dp.infer.load import load_policy
from dp.sim.rollout import run_episode, seed_for
from dp.sim.tasks import get_task

pytestmark = pytest.mark.slow  # trains and simulates


@pytest.fixture(scope="module")
def rollouts(pusht_image_run, tmp_path_factory, one_torch_thread):
    """Two roll-outs of the tiny image policy on collect seeds, failures kept (it solves nothing)."""
    out = tmp_path_factory.mktemp("self") / "self.zarr"
    assert main(["collect", "--task", "pusht", "--policy", str(pusht_image_run), "--episodes", "2", "--out", str(out),
                 "--keep-failures", "--seed", "3"]) == 0
    return out


def test_the_store_holds_the_policys_own_roll_outs_in_the_human_stores_layout(rollouts, pusht_image_run, capsys):
    store = EpisodeStore.open(rollouts)
    human = EpisodeStore.open(pusht_image_run.parent / "pusht_img.zarr")
    assert len(store) == 2 and sorted(store.keys) == sorted(human.keys)  # the camera the policy observes, recorded
    assert store.robot == "pusht" and store.discrete_dims.get("action", []) == []  # Push-T's actions are positions
    ep = store.get_episode(0)
    assert ep["img"].shape == (300, 96, 96, 3) and ep["action"].shape == (300, 2)  # the task's 96-pixel view, 300 steps
    meta = store.episode_meta(0)
    assert meta["source"] == "policy" and meta["policy"] == str(pusht_image_run) and meta["success"] is False
    assert "instruction" not in meta  # Push-T has none, as its imported demonstrations
    # the recorded actions are what the policy does from that start with the sampler noise of that seed
    policy, spec = load_policy(str(pusht_image_run)), get_task("pusht")
    env = spec.make_env(["top"])
    try:
        again = run_episode(env, policy, seed_for(3, 0, "collect"))
    finally:
        env.close()
    np.testing.assert_allclose(again.data["action"], ep["action"], atol=1e-5)
    np.testing.assert_array_equal(again.data["img"][:5], ep["img"][:5])
    capsys.readouterr()
    assert main(["info", str(rollouts)]) == 0
    assert f"policy {pusht_image_run} (2)" in capsys.readouterr().out


def test_training_resumes_on_the_human_store_and_the_roll_outs_together(rollouts, pusht_image_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(pusht_image_run, run, symlinks=True)  # the tiny run ended at step 4
    human = pusht_image_run.parent / "pusht_img.zarr"
    assert main(["train", "--out", str(run), "--resume", "--data", f"{human},{rollouts}", "--no-progress", "train.steps=8"]) == 0
    assert (run / "checkpoints" / "step_0000008").is_dir()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert [p.rsplit("/", 1)[-1] for p in config["data"]["stores"]] == ["pusht_img.zarr", "self.zarr"]
    assert config["vocab"]["tasks"] == ["pusht"]  # one task, not a multitask policy


def test_bad_combinations_are_clear_errors(rollouts, pusht_image_run, pusht_image_export, capsys):
    capsys.readouterr()
    assert main(["collect", "--task", "pusht", "--policy", str(pusht_image_run), "--teleop", "keyboard",
                 "--episodes", "1", "--out", str(rollouts)]) == 1
    assert "--policy and --teleop both name who acts" in capsys.readouterr().err
    assert main(["collect", "--task", "pusht", "--policy", str(pusht_image_run), "--expert-labels", "intended",
                 "--episodes", "1", "--out", str(rollouts)]) == 1
    assert "--expert-labels: options of the scripted expert, which does not act with --policy" in capsys.readouterr().err
    # another policy's roll-outs into the same store: refused before any episode runs
    assert main(["collect", "--task", "pusht", "--policy", str(pusht_image_export), "--episodes", "3", "--keep-failures",
                 "--out", str(rollouts)]) == 1
    err = capsys.readouterr().err
    assert f"collected with policy={pusht_image_run}" in err and len(EpisodeStore.open(rollouts)) == 2
    assert main(["collect", "--task", "lift", "--policy", str(pusht_image_run), "--episodes", "1",
                 "--out", str(rollouts.parent / "lift.zarr")]) == 1
    assert "the policy's actions have 2 values but task 'lift' takes 7" in capsys.readouterr().err

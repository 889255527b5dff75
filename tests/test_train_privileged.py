"""Privileged keys (data.privileged_keys): state the policy does not observe, predicted from its cameras'
features as a training loss; the policy still observes only its own keys."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dp.cli import main as dp_main
from dp.config import load_config
from dp.data.store import EpisodeStore
from dp.infer import Policy
from dp.models.diffusion_policy import DiffusionPolicy
from dp.testing.reach_store import make_store
from dp.train.data import build_data, resolve

pytestmark = pytest.mark.slow  # trains: `pytest -m "not slow"` leaves it out

# the reach store's camera 0 draws the target (key "object") in x and y; the policy observes the camera and the point
OBSERVED = ["data.obs_keys=[robot0_eef_pos,cam0_image]", "data.obs_horizon=2", "model.aug_shift=0"]


@pytest.fixture(scope="module")
def privileged_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("privileged")
    store = make_store(root / "reach.zarr", episodes=6, length=20, cameras=1, image_size=32)
    run = root / "run"
    assert dp_main(["train", "--data", str(store), "--preset", "tiny", "--out", str(run), "--no-progress", *OBSERVED,
                    "data.privileged_keys=[object]", "data.val_fraction=0", "train.steps=200", "train.batch_size=32"]) == 0
    return store, run


def test_the_cameras_learn_to_predict_the_privileged_state(privileged_run):
    _, run = privileged_run
    losses = [r["privileged_loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["event"] == "train"]
    assert len(losses) == 20 and np.mean(losses[-3:]) < 0.5 * np.mean(losses[:2])
    cfg = load_config(run / "config.yaml")
    assert cfg.data.privileged_keys == ["object"] and cfg.data.shapes["object"] == [3] and "object" not in cfg.data.lowdim_keys


def test_the_privileged_loss_trains_the_cameras_and_its_head_only(privileged_run):
    store, run = privileged_run
    cfg = load_config(run / "config.yaml")
    data = build_data(cfg, [EpisodeStore.open(store)])
    model = DiffusionPolicy(cfg).train()
    batch = data.train.__getitems__(list(range(8)))
    assert batch["obs"]["object"].shape == (8, 2, 3)  # normalised targets for both observation steps
    _, parts = model.compute_loss(batch)
    assert torch.isfinite(parts["privileged_loss"]) and parts["privileged_loss"] > 0
    _, predicted = model.encode(batch["obs"], batch["task_id"], privileged=True)
    torch.nn.functional.mse_loss(predicted, batch["obs"]["object"]).backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert grads["net.privileged.weight"].abs().sum() > 0
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("net.cameras.cam0_image.stem"))
    assert all(g is None for n, g in grads.items() if n.startswith(("net.state.", "net.blocks.", "net.head.")))


def test_the_policy_observes_only_its_own_keys(privileged_run):
    store, run = privileged_run
    episode = EpisodeStore.open(store).get_episode(0)
    frame = {k: episode[k][0] for k in ("robot0_eef_pos", "cam0_image")}  # no "object"
    policy = Policy.load(run)
    assert policy.lowdim_keys == ["robot0_eef_pos"] and policy.image_keys == ["cam0_image"]
    assert policy.predict_chunk(frame).shape == (10, 7)


@pytest.mark.parametrize("overrides, message", [
    (["data.privileged_keys=[robot0_eef_pos]"], "also observation keys"),
    (["data.privileged_keys=[cam1_image]"], "not low-dim keys"),
    (["data.privileged_keys=[joints]"], "no key(s) ['joints']"),
    (["data.obs_keys=[robot0_eef_pos]", "data.privileged_keys=[object]"], "observes no camera"),
])
def test_bad_privileged_keys_are_refused_by_name(tmp_path, capsys, overrides, message):
    store = make_store(tmp_path / "s.zarr", episodes=2, length=10, cameras=2, image_size=16)
    rc = dp_main(["train", "--data", str(store), "--preset", "tiny", "--out", str(tmp_path / "run"), *OBSERVED, *overrides])
    err = capsys.readouterr().err
    assert rc == 1 and message in err, err
    assert not (Path(tmp_path / "run") / "checkpoints").exists()


def test_resolve_records_the_privileged_shapes(tmp_path):
    store = make_store(tmp_path / "s.zarr", episodes=2, length=10, cameras=1, image_size=16)
    from dp.config import build_config

    cfg, _ = resolve(build_config("tiny", [*OBSERVED, "data.privileged_keys=[object,robot0_gripper_qpos]"]), [str(store)])
    assert cfg.data.shapes["object"] == [3] and cfg.data.shapes["robot0_gripper_qpos"] == [2]
    assert DiffusionPolicy(cfg).net.privileged.out_features == 5

"""The normalizer (stats, [-1, 1], discrete dims, persistence) and `dp info`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from dp.data.normalize import Normalizer, compute_stats
from dp.data.store import EpisodeStore
from dp.errors import DpError


def test_stats_match_numpy_and_are_cached_in_the_store(make_store):
    store = make_store(3)
    all_pos = store.read("robot0_eef_pos", 0, store.n_frames).astype(np.float64)
    st = compute_stats(store, "robot0_eef_pos", chunk_frames=7)  # several chunks
    np.testing.assert_allclose(st["min"], all_pos.min(0))
    np.testing.assert_allclose(st["max"], all_pos.max(0))
    np.testing.assert_allclose(st["mean"], all_pos.mean(0))
    np.testing.assert_allclose(st["std"], all_pos.std(0), rtol=1e-6)
    Normalizer.fit([store], ["robot0_eef_pos", "action"])
    cached = store.attrs["stats"]
    assert cached["n_frames"] == store.n_frames and set(cached["keys"]) == {"robot0_eef_pos", "action"}


def test_actions_map_to_unit_box_and_back(make_store):
    store = make_store(3)
    norm = Normalizer.fit([store], ["action"])
    assert norm.discrete_dims == {"action": [6]}  # taken from the store
    act = store.read("action", 0, store.n_frames)
    z = norm.normalize("action", act)
    np.testing.assert_allclose(z[:, :6].min(0), -1, atol=1e-6)
    np.testing.assert_allclose(z[:, :6].max(0), 1, atol=1e-6)
    np.testing.assert_array_equal(z[:, 6], act[:, 6])
    np.testing.assert_allclose(norm.unnormalize("action", z), act, atol=1e-6)
    zt = norm.normalize("action", torch.from_numpy(act))
    assert isinstance(zt, torch.Tensor)
    np.testing.assert_allclose(zt.numpy(), z, atol=1e-6)


def test_constant_dimension_is_centred_not_blown_up():
    norm = Normalizer({"x": {"min": np.array([2.0, 0.0]), "max": np.array([2.0, 4.0])}})
    out = norm.normalize("x", np.array([[2.0, 4.0]]))
    np.testing.assert_allclose(out, [[0.0, 1.0]])


def test_merged_stats_over_stores_equal_stats_of_all_frames(make_store):
    a, b = make_store(2, name="a.zarr"), make_store(3, name="b.zarr")
    both = np.concatenate([s.read("robot0_eef_pos", 0, s.n_frames) for s in (a, b)]).astype(np.float64)
    norm = Normalizer.fit([a, b], ["robot0_eef_pos"])
    np.testing.assert_allclose(norm.stats["robot0_eef_pos"]["mean"], both.mean(0))
    np.testing.assert_allclose(norm.stats["robot0_eef_pos"]["std"], both.std(0), rtol=1e-6)
    np.testing.assert_allclose(norm.stats["robot0_eef_pos"]["min"], both.min(0))


def test_safetensors_round_trip(make_store, tmp_path):
    norm = Normalizer.fit([make_store(2)], ["robot0_eef_pos", "action"])
    norm.save(tmp_path / "normalizer.safetensors")
    back = Normalizer.load(tmp_path / "normalizer.safetensors")
    assert back.keys == norm.keys and back.discrete_dims == norm.discrete_dims
    x = np.random.default_rng(0).normal(size=(4, 7)).astype(np.float32)
    np.testing.assert_allclose(back.normalize("action", x), norm.normalize("action", x))
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(DpError, match="not a readable safetensors normalizer"):
        Normalizer.load(tmp_path / "bad.safetensors")
    with pytest.raises(DpError, match="no statistics for key 'wrist'"):
        norm.normalize("wrist", x)


def test_dp_info_text_and_json(make_store):
    store = make_store(3)
    path = store.path
    store.close()
    out = subprocess.run([sys.executable, "-m", "dp", "info", str(path), "--json"], capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    assert info["episodes"] == 3 and info["zarr_format"] == 3
    assert info["keys"]["agentview_image"]["role"] == "image" and info["keys"]["agentview_image"]["shards"]
    assert info["keys"]["action"]["codec"] == "blosc zstd/3"
    assert info["meta"]["tasks"] == {"can": 1, "lift": 2}
    assert info["meta"]["success_rate"] == pytest.approx(2 / 3)
    assert info["bytes_on_disk"] > 0 and info["compression_ratio"] > 0
    text = subprocess.run([sys.executable, "-m", "dp", "info", str(path)], capture_output=True, text=True, check=True).stdout
    assert "episodes: 3" in text and "tasks: can (1), lift (2)" in text and "success rate: 66.7%" in text


def test_dp_info_on_a_format2_store_and_bad_path(tmp_path):
    from test_store import _write_dp_format2_store

    rng = np.random.default_rng(0)
    eps = [{"img": rng.uniform(0, 255, (5, 8, 8, 3)).astype(np.float32), "state": rng.normal(size=(5, 5)).astype(np.float32), "action": rng.normal(size=(5, 2)).astype(np.float32)}]
    _write_dp_format2_store(tmp_path / "pusht.zarr", eps)
    out = subprocess.run([sys.executable, "-m", "dp", "info", str(tmp_path / "pusht.zarr")], capture_output=True, text=True, check=True).stdout
    assert "zarr format 2" in out and "episodes: 1" in out and "img" in out
    bad = subprocess.run([sys.executable, "-m", "dp", "info", str(tmp_path / "nope.zarr")], capture_output=True, text=True)
    assert bad.returncode == 1 and "no episode store there" in bad.stderr and "Traceback" not in bad.stderr
    assert isinstance(EpisodeStore.open(tmp_path / "pusht.zarr").roles, dict)


def _gripper_store(tmp_path, name: str, levels: tuple[float, ...]) -> EpisodeStore:
    """A store whose action dimension 6 (declared discrete) cycles through ``levels``."""
    store = EpisodeStore.create(tmp_path / name, control_freq=20.0, robot="panda", discrete_dims={"action": [6]})
    rng = np.random.default_rng(0)
    for _ in range(2):
        action = rng.uniform(-1, 1, size=(12, 7)).astype(np.float32)
        action[:, 6] = np.resize(np.array(levels, np.float32), 12)
        store.add_episode({"action": action, "robot0_eef_pos": rng.normal(size=(12, 3)).astype(np.float32)}, meta={"task": "lift"})
    return store


def test_a_0_1_gripper_is_trained_at_minus_one_plus_one_and_snapped_back_to_0_1(tmp_path):
    from dp.infer.rti_guess import snap_discrete, vote_discrete

    store = _gripper_store(tmp_path, "g.zarr", (0.0, 1.0))
    norm = Normalizer.fit([store], ["action"])
    act = store.read("action", 0, store.n_frames)
    z = norm.normalize("action", act)
    np.testing.assert_array_equal(np.unique(z[:, 6]), [-1.0, 1.0])  # the model sees -1/+1
    np.testing.assert_allclose(norm.unnormalize("action", z), act, atol=1e-6)
    levels = norm.discrete_levels("action")
    assert levels[0].tolist() == [0.0] and levels[1].tolist() == [1.0]
    raw = norm.unnormalize("action", np.array([[0, 0, 0, 0, 0, 0, 0.1], [0, 0, 0, 0, 0, 0, -0.1]], np.float32))
    np.testing.assert_array_equal(snap_discrete(raw, [6], levels)[:, 6], [1.0, 0.0])  # 0.55 -> 1, 0.45 -> 0 (not +-1)
    chunks = np.zeros((3, 2, 7), np.float32)
    chunks[:2, :, 6] = 1.0  # two of three vote closed
    np.testing.assert_array_equal(vote_discrete(chunks, [6], levels)[:, 6], [1.0, 1.0])
    # a -1/+1 gripper passes through unchanged, as before
    pm = Normalizer.fit([_gripper_store(tmp_path, "pm.zarr", (-1.0, 1.0))], ["action"])
    assert pm.affine("action")[0][6] == 1.0 and pm.affine("action")[1][6] == 0.0


def test_a_discrete_dimension_with_more_than_two_levels_is_refused_by_name(tmp_path):
    with pytest.raises(DpError, match=r"'action' dimension 6 is declared discrete .* holds 0, 0\.5, 1"):
        Normalizer.fit([_gripper_store(tmp_path, "three.zarr", (0.0, 0.5, 1.0))], ["action"])
    stores = [_gripper_store(tmp_path, "a.zarr", (0.0, 1.0)), _gripper_store(tmp_path, "b.zarr", (-1.0, 1.0))]
    with pytest.raises(DpError, match="dimension 6 is declared discrete .* holds -1, 0, 1"):  # two stores, three levels together
        Normalizer.fit(stores, ["action"])

"""LIBERO / robomimic HDF5 import and export on small spec-faithful files (dp.testing.format_fixtures)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from dp.cli import main
from dp.data.formats import libero_import
from dp.data.formats.pipeline import run_import
from dp.data.store import EpisodeStore
from dp.errors import DpError
from dp.testing.format_fixtures import make_libero_file, make_sim_store
from dp.testing.store_checks import assert_same_store

TASK_A = "KITCHEN_SCENE3_turn_on_the_stove"
TASK_B = "LIVING_ROOM_SCENE1_put_the_bowl_in_the_basket"


def _import(paths, out, workers=0, skip_bad=False, **kw):
    skipped: list[str] = []
    card, items = libero_import.plan_import(paths, skip_bad=skip_bad, skipped=skipped, **kw)
    return run_import(items, out, card, workers=workers, skip_bad=skip_bad, skipped=skipped, progress=False)


def _assert_episode(store, i, expected):
    ep = store.get_episode(i)
    assert set(ep) == set(expected)
    for key, want in expected.items():
        assert ep[key].dtype == want.dtype, key
        np.testing.assert_array_equal(ep[key], want, err_msg=key)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_two_task_files_make_one_multitask_store(tmp_path, dtype):
    suite = tmp_path / "libero_10"
    exp_a = make_libero_file(suite / f"{TASK_A}_demo.hdf5", instruction="turn on the stove", dtype=dtype, image_size=32)
    exp_b = make_libero_file(suite / f"{TASK_B}_demo.hdf5", instruction="put the bowl in the basket", dtype=dtype,
                             image_size=32, demo_lens=(7,), seed=1)
    report = _import([suite], tmp_path / "s.zarr", workers=2)
    assert report.added == 3 and report.frames == 12 + 9 + 7
    with EpisodeStore.open(tmp_path / "s.zarr") as store:
        assert store.control_freq == 20.0 and store.discrete_dims == {"action": [6]}
        assert store.roles["image"] == ["agentview_image", "robot0_eye_in_hand_image"]
        for i, want in enumerate(exp_a + exp_b):  # images come out upright (the files hold them upside down)
            _assert_episode(store, i, want)
        metas = [store.episode_meta(i) for i in range(3)]
        assert [m["task"] for m in metas] == [TASK_A, TASK_A, TASK_B]
        assert [m["instruction"] for m in metas] == ["turn on the stove"] * 2 + ["put the bowl in the basket"]
        assert all(m["success"] and m["source"] == "libero" for m in metas)
        assert [(m["source_file"], m["source_index"]) for m in metas] == [
            (f"libero_10/{TASK_A}_demo.hdf5", 0), (f"libero_10/{TASK_A}_demo.hdf5", 1), (f"libero_10/{TASK_B}_demo.hdf5", 0)]


def test_robomimic_file_with_mask_and_image_size(tmp_path):
    expected = make_libero_file(tmp_path / "lift" / "image.hdf5", robomimic=True, demo_lens=(5, 6, 4), image_size=24)
    _import([tmp_path / "lift" / "image.hdf5"], tmp_path / "s.zarr", filter_key="train")
    with EpisodeStore.open(tmp_path / "s.zarr") as store:
        assert len(store) == 2  # mask/train lists demos 0 and 1
        assert "object" in store.roles["lowdim"]
        for i in range(2):
            _assert_episode(store, i, expected[i])
            assert store.episode_meta(i)["task"] == "Lift" and store.episode_meta(i)["source"] == "robomimic"
    _import([tmp_path / "lift" / "image.hdf5"], tmp_path / "small.zarr", image_size=12, cameras=["agentview"])
    with EpisodeStore.open(tmp_path / "small.zarr") as store:
        assert store.array("agentview_image").shape[1:] == (12, 12, 3) and "robot0_eye_in_hand_image" not in store.keys
    with pytest.raises(DpError, match="no mask/test"):
        libero_import.plan_import([tmp_path / "lift" / "image.hdf5"], filter_key="test")


def test_opencv_convention_is_not_flipped(tmp_path):
    path = tmp_path / f"{TASK_A}_demo.hdf5"
    expected = make_libero_file(path, image_size=16, demo_lens=(4,))
    with h5py.File(path, "r+") as f:
        f["data"].attrs["macros_image_convention"] = "opencv"
    _import([path], tmp_path / "s.zarr")
    with EpisodeStore.open(tmp_path / "s.zarr") as store:
        np.testing.assert_array_equal(store.get_episode(0)["agentview_image"], expected[0]["agentview_image"][:, ::-1])


def _broken(tmp_path, name, edit):
    path = tmp_path / "bad" / f"{name}_demo.hdf5"
    make_libero_file(path, image_size=16, demo_lens=(5, 4))
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


@pytest.mark.parametrize(
    "name, edit, message",
    [
        ("no_actions", lambda f: f.__delitem__("data/demo_1/actions"), r"data/demo_1: missing 'actions'"),
        ("no_image", lambda f: f.__delitem__("data/demo_0/obs/agentview_rgb"), r"data/demo_0: missing 'obs/agentview_rgb' or 'obs/agentview_image'"),
        ("short_obs", lambda f: _shorten(f, "data/demo_1/obs/ee_pos"),
         r"data/demo_1: lengths disagree: .*obs/ee_pos 3"),
        ("bad_samples", lambda f: f["data/demo_0"].attrs.__setitem__("num_samples", 9), r"data/demo_0: lengths disagree: .*attrs.num_samples 9"),
    ],
)
def test_bad_demo_is_named(tmp_path, name, edit, message):
    path = _broken(tmp_path, name, edit)
    with pytest.raises(DpError, match=f"{path}: {message}"):
        _import([path], tmp_path / "s.zarr")


def _shorten(f, name):
    data = f[name][()]
    del f[name]
    f[name] = data[:3]


def test_truncated_file_and_skip_bad(tmp_path):
    good = tmp_path / "in" / f"{TASK_A}_demo.hdf5"
    make_libero_file(good, image_size=16, demo_lens=(5, 4))
    truncated = tmp_path / "in" / f"{TASK_B}_demo.hdf5"
    make_libero_file(truncated, image_size=16)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    no_actions = _broken(tmp_path, "partly_bad", lambda f: f.__delitem__("data/demo_0/actions"))
    with pytest.raises(DpError, match=f"{truncated}: cannot open as HDF5 \\(truncated"):
        _import([tmp_path / "in"], tmp_path / "a.zarr")
    report = _import([tmp_path / "in", no_actions], tmp_path / "b.zarr", skip_bad=True)
    assert report.added == 3  # two demos of the good file, demo_1 of the partly bad one
    assert len(report.skipped) == 2
    assert str(truncated) in report.skipped[0] and "data/demo_0" in report.skipped[1] and "'actions'" in report.skipped[1]
    with pytest.raises(DpError, match="no such file or directory"):
        libero_import.plan_import([tmp_path / "missing.hdf5"])


def test_libero_store_libero_round_trip(tmp_path):
    src = tmp_path / "orig" / f"{TASK_A}_demo.hdf5"
    make_libero_file(src, image_size=16, instruction="turn on the stove")
    _import([src], tmp_path / "s.zarr")
    assert main(["export-data", "libero", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "exp"), "--no-progress"]) == 0
    out = tmp_path / "exp" / f"{TASK_A}_demo.hdf5"
    with h5py.File(src, "r") as a, h5py.File(out, "r") as b:
        attrs = b["data"].attrs
        for name in ("env_name", "problem_info", "macros_image_convention", "bddl_file_name", "bddl_file_content",
                     "env_args", "num_demos", "total"):
            assert name in attrs, name
        assert json.loads(attrs["problem_info"])["language_instruction"] == "turn on the stove"
        assert json.loads(attrs["env_args"])["type"] == 1
        assert attrs["macros_image_convention"] == "opengl" and attrs["num_demos"] == 2 and attrs["total"] == 21
        for demo in ("demo_0", "demo_1"):
            da, db = a["data"][demo], b["data"][demo]
            for name in ("num_samples", "model_file", "init_state"):
                assert name in db.attrs
            for name in ("obs/agentview_rgb", "obs/eye_in_hand_rgb"):  # back in the OpenGL convention, byte-equal
                np.testing.assert_array_equal(db[name][()], da[name][()])
            for name in ("obs/gripper_states", "obs/joint_states", "obs/ee_pos", "actions"):
                np.testing.assert_allclose(db[name][()], da[name][()], rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(db["robot_states"][()], da["robot_states"][()], rtol=1e-6, atol=1e-7)
            assert db["obs/ee_states"].shape[1] == 6 and db["obs/ee_ori"].shape[1] == 3
            assert db["dones"][-1] == 1 and db["rewards"][-1] == 1 and db["dones"].dtype == np.uint8
    _import([tmp_path / "exp"], tmp_path / "again.zarr")
    with EpisodeStore.open(tmp_path / "s.zarr") as a, EpisodeStore.open(tmp_path / "again.zarr") as b:
        assert_same_store(a, b, robot=False)


def test_sim_store_libero_round_trip(tmp_path, capsys):
    make_sim_store(tmp_path / "sim.zarr")
    assert main(["export-data", "libero", str(tmp_path / "sim.zarr"), "--out", str(tmp_path / "exp"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "obs/joint_states: zeros" in printed and "states: zeros" in printed
    files = sorted(p.name for p in (tmp_path / "exp").iterdir())
    assert files == ["can_demo.hdf5", "lift_demo.hdf5"]
    with h5py.File(tmp_path / "exp" / "can_demo.hdf5", "r") as f, EpisodeStore.open(tmp_path / "sim.zarr") as sim:
        ep = sim.get_episode(1)  # the one failed episode, a `can`
        demo = f["data/demo_0"]
        np.testing.assert_array_equal(demo["obs/agentview_rgb"][()], ep["agentview_image"][:, ::-1])
        np.testing.assert_array_equal(demo["obs/object"][()], ep["object"])
        np.testing.assert_allclose(demo["robot_states"][:, 5:9], ep["robot0_eef_quat"], rtol=1e-6)
        assert demo["rewards"][-1] == 0 and demo["dones"][-1] == 1
        assert json.loads(f["data"].attrs["problem_info"])["language_instruction"] == "pick up the can and place it in the bin"
    assert main(["import", "libero", str(tmp_path / "exp"), "--out", str(tmp_path / "back.zarr"), "--workers", "0", "--no-progress"]) == 0
    with EpisodeStore.open(tmp_path / "sim.zarr") as a, EpisodeStore.open(tmp_path / "back.zarr") as b:
        assert_same_store(a, b, robot=False)  # same order too: the export records each episode's index

"""CALVIN import and export on small spec-faithful directories (dp.testing.format_fixtures)."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from dp.cli import main
from dp.data.formats import calvin_export, calvin_import
from dp.data.formats.pipeline import run_import
from dp.data.formats.safe_pickle import load_npy
from dp.data.store import EpisodeStore
from dp.errors import DpError
from dp.testing.format_fixtures import (
    calvin_frame,
    make_calvin_split,
    make_sim_store,
    write_lang_annotations,
)
from dp.testing.store_checks import assert_same_store


def _import(src, out, **kw):
    workers = kw.pop("workers", 0)
    skip_bad = kw.get("skip_bad", False)
    skipped: list[str] = []
    card, items = calvin_import.plan_import(src, skipped=skipped, **kw)
    return run_import(items, out, card, workers=workers, skip_bad=skip_bad, skipped=skipped, progress=False)


def _frames(info, start, end, **kw):
    return [calvin_frame(i, static_size=info.sizes["rgb_static"], gripper_size=info.sizes["rgb_gripper"], **kw) for i in range(start, end + 1)]


@pytest.mark.parametrize("dtype, emb_shape", [(np.float32, "n1d"), (np.float64, "nd")])
def test_lang_segments_land_where_they_should(tmp_path, dtype, emb_shape):
    info = make_calvin_split(tmp_path / "calvin", dtype=dtype, emb_shape=emb_shape, static_size=40, gripper_size=24, extras=True)
    report = _import(tmp_path / "calvin", tmp_path / "s.zarr")
    assert report.added == len(info.annotations) == 4 and not report.skipped
    with EpisodeStore.open(tmp_path / "s.zarr") as store:
        assert store.control_freq == 30.0 and store.robot == "franka_panda"
        assert store.roles == {"lowdim": ["robot_obs", "scene_obs"], "image": ["rgb_static", "rgb_gripper"], "action": ["action"]}
        assert store.discrete_dims == {"action": [6]}
        assert store.attrs["gripper_close"] == -1.0
        for j, (start, end, ann, task) in enumerate(info.annotations):
            ep = store.get_episode(j)
            frames = _frames(info, start, end, dtype=dtype)
            assert len(ep["action"]) == end - start + 1  # inclusive end
            for key, field in [("rgb_static", "rgb_static"), ("rgb_gripper", "rgb_gripper"), ("robot_obs", "robot_obs"),
                               ("scene_obs", "scene_obs"), ("action", "rel_actions")]:
                expected = np.stack([f[field] for f in frames])
                assert ep[key].dtype == (np.uint8 if key.startswith("rgb") else np.float32)
                np.testing.assert_array_equal(ep[key], expected.astype(ep[key].dtype), err_msg=key)
            meta = store.episode_meta(j)
            assert (meta["instruction"], meta["task"], meta["source"]) == (ann, task, "calvin")
            assert meta["lang_emb"].shape == (384,)
            np.testing.assert_array_equal(meta["lang_emb"], info.emb[j])
            assert (meta["source_file"], meta["source_index"]) == ("calvin/training/lang", j)


def test_play_episodes_cameras_resize_abs_actions_and_naming(tmp_path):
    info = make_calvin_split(tmp_path / "c", split="validation", prefix="frame_", digits=5, first_frame=120,
                             static_size=48, gripper_size=20, lang_per_episode=0)
    # the split directory itself is accepted too, and no annotation file is needed for play episodes
    _import(info.root, tmp_path / "s.zarr", split="validation", segments="episodes", cameras=["static"], image_size=16, actions="abs")
    with EpisodeStore.open(tmp_path / "s.zarr") as store:
        assert len(store) == len(info.ranges) and store.keys == ["action", "rgb_static", "robot_obs", "scene_obs"]
        for row, (start, end) in enumerate(info.ranges):
            ep = store.get_episode(row)
            frames = _frames(info, start, end)
            assert ep["rgb_static"].shape == (end - start + 1, 16, 16, 3)
            np.testing.assert_array_equal(ep["action"], np.stack([f["actions"] for f in frames]))
            assert store.episode_meta(row)["source"] == "calvin" and "instruction" not in store.episode_meta(row)
    # long play episodes can be cut into pieces; together they hold the same frames
    _import(info.root, tmp_path / "pieces.zarr", split="validation", segments="episodes", max_episode_len=7)
    with EpisodeStore.open(tmp_path / "pieces.zarr") as pieces, EpisodeStore.open(tmp_path / "s.zarr") as whole:
        lengths = np.diff(np.concatenate([[0], pieces.episode_ends]))
        assert lengths.max() == 7 and pieces.n_frames == whole.n_frames
        assert pieces.meta_column("source_index")[:2] == [info.ranges[0][0], info.ranges[0][0] + 7]
        np.testing.assert_array_equal(pieces.array("robot_obs")[:], whole.array("robot_obs")[:])
    (info.root / "lang_annotations" / "auto_lang_ann.npy").unlink()
    with pytest.raises(DpError, match="lang_annotations/auto_lang_ann.npy: missing"):
        calvin_import.plan_import(info.root, split="validation")


def test_missing_frame_and_out_of_range_annotation(tmp_path):
    info = make_calvin_split(tmp_path / "c", static_size=24, gripper_size=12)
    start, end = info.annotations[1][:2]
    missing = info.frame_path(start + 3)
    missing.unlink()
    with pytest.raises(DpError, match=f"{missing}: frame file missing"):
        _import(tmp_path / "c", tmp_path / "a.zarr")
    # an annotation window outside every episode (it falls in the gap between episodes)
    gap = info.ranges[0][1] + 2
    bad = info.annotations + [(gap, gap + 3, "open the drawer", "open_drawer")]
    write_lang_annotations(info.root, bad, np.concatenate([info.emb, info.emb[:1]])[:, None, :])
    with pytest.raises(DpError, match=r"auto_lang_ann.npy: annotation 4 \(frames .*\) is out of range"):
        calvin_import.plan_import(tmp_path / "c")
    report = _import(tmp_path / "c", tmp_path / "b.zarr", skip_bad=True)
    assert report.added == 3 and len(report.skipped) == 2
    assert any("annotation 4" in s and "out of range" in s for s in report.skipped)
    assert any(str(missing) in s for s in report.skipped)
    with EpisodeStore.open(tmp_path / "b.zarr") as store:
        assert store.meta_column("source_index") == [0, 2, 3]


def test_inconsistent_annotation_file_and_corrupt_frame(tmp_path):
    info = make_calvin_split(tmp_path / "c", static_size=24, gripper_size=12)
    write_lang_annotations(info.root, info.annotations, info.emb[:2])
    with pytest.raises(DpError, match="annotation lists differ in length"):
        calvin_import.plan_import(tmp_path / "c")
    write_lang_annotations(info.root, info.annotations, info.emb)
    info.frame_path(info.annotations[0][0]).write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DpError, match="unreadable frame file"):
        _import(tmp_path / "c", tmp_path / "s.zarr")


def test_malicious_annotation_file_is_refused(tmp_path):
    info = make_calvin_split(tmp_path / "c", static_size=24, gripper_size=12)
    marker = tmp_path / "pwned"

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(info.root / "lang_annotations" / "auto_lang_ann.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(np.array({"info": RunsCode()}, dtype=object), f, protocol=3)
    with pytest.raises(DpError, match="refused to unpickle"):
        calvin_import.plan_import(tmp_path / "c")
    assert not marker.exists()


def test_calvin_store_calvin_round_trip(tmp_path):
    info = make_calvin_split(tmp_path / "orig", static_size=32, gripper_size=16)
    _import(tmp_path / "orig", tmp_path / "s.zarr")
    assert main(["export-data", "calvin", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "exp"), "--workers", "0", "--no-progress"]) == 0
    root = tmp_path / "exp" / "training"
    ranges = np.load(root / "ep_start_end_ids.npy")
    assert ranges.tolist() == [[0, 11], [12, 23], [24, 35], [36, 47]]  # inclusive ends, one per annotated window
    np.testing.assert_array_equal(np.load(root / "ep_lens.npy"), [12, 12, 12, 12])
    lang = load_npy(root / "lang_annotations" / "auto_lang_ann.npy")
    assert lang["language"]["ann"] == [a[2] for a in info.annotations]
    assert lang["language"]["task"] == [a[3] for a in info.annotations]
    assert lang["language"]["emb"].shape == (4, 1, 384)
    np.testing.assert_array_equal(lang["language"]["emb"][:, 0], info.emb)
    for (s, e), (src_start, _, _, _) in zip(ranges, info.annotations):
        for t in range(s, e + 1):
            with np.load(root / f"episode_{t:07d}.npz") as got:
                want = calvin_frame(src_start + t - s, static_size=32, gripper_size=16)
                for field in ("rgb_static", "rgb_gripper", "robot_obs", "scene_obs", "rel_actions"):
                    np.testing.assert_array_equal(got[field], want[field], err_msg=field)
                assert got["actions"].shape == (7,)
    stats = (root / "statistics.yaml").read_text()
    assert "NormalizeVector" in stats and "act_min_bound" in stats
    assert (root / "scene_info.npy").is_file() and (root / ".hydra" / "merged_config.yaml").is_file()
    # and back: the same episodes, instructions and arrays
    _import(tmp_path / "exp", tmp_path / "again.zarr")
    with EpisodeStore.open(tmp_path / "s.zarr") as a, EpisodeStore.open(tmp_path / "again.zarr") as b:
        assert_same_store(a, b)


@pytest.mark.slow
def test_sim_store_calvin_round_trip_flips_the_gripper_and_fills(tmp_path):
    make_sim_store(tmp_path / "sim.zarr")
    summary = calvin_export.export_store(EpisodeStore.open(tmp_path / "sim.zarr"), tmp_path / "exp", workers=2, progress=False)
    root = tmp_path / "exp" / "training"
    assert {f.split(":")[0] for f in summary["filled"]} == {"robot_obs", "scene_obs", "actions"}
    sidecar = json.loads((root / "dp_card.json").read_text())
    assert sidecar["card"]["gripper_close"] == 1.0
    action_entry = next(k for k in sidecar["card"]["keys"] if k["key"] == "action")
    assert action_entry["source"] == ["rel_actions"] and action_entry["negate_dims"] == [6]
    with EpisodeStore.open(tmp_path / "sim.zarr") as sim:
        ep = sim.get_episode(0)
        with np.load(root / "episode_0000000.npz") as f0, np.load(root / "episode_0000001.npz") as f1:
            np.testing.assert_array_equal(f0["rgb_static"], ep["agentview_image"][0])  # card alias
            np.testing.assert_array_equal(f0["rgb_gripper"], ep["robot0_eye_in_hand_image"][0])
            assert f0["rel_actions"][6] == -ep["action"][0, 6]  # CALVIN: -1 closes
            np.testing.assert_allclose(f0["robot_obs"][:3], ep["robot0_eef_pos"][0])
            assert f0["robot_obs"][6] == pytest.approx(0.08)  # gripper width from the finger joints
            np.testing.assert_allclose(f0["actions"][:6], f1["robot_obs"][:6])  # next frame's tcp pose
            assert f0["scene_obs"].shape == (24,) and not f0["scene_obs"].any()
            np.testing.assert_array_equal(f0["object"], ep["object"][0])  # unmapped keys pass through
    _import(tmp_path / "exp", tmp_path / "back.zarr", workers=2)
    with EpisodeStore.open(tmp_path / "sim.zarr") as a, EpisodeStore.open(tmp_path / "back.zarr") as b:
        assert b.attrs["gripper_close"] == 1.0
        assert_same_store(a, b)
    # --segments episodes gives the same episodes too (the metadata comes from the sidecar)
    _import(tmp_path / "exp", tmp_path / "eps.zarr", segments="episodes")
    with EpisodeStore.open(tmp_path / "sim.zarr") as a, EpisodeStore.open(tmp_path / "eps.zarr") as b:
        assert_same_store(a, b)


def test_cli_import_and_resume_report(tmp_path, capsys):
    make_calvin_split(tmp_path / "c", static_size=24, gripper_size=12)
    args = ["import", "calvin", str(tmp_path / "c"), "--out", str(tmp_path / "s.zarr"), "--workers", "0", "--no-progress", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["added"], first["already_present"]) == (4, 0)
    assert main(args) == 0  # a re-run adds nothing: every source item is already in the store
    second = json.loads(capsys.readouterr().out)
    assert (second["added"], second["already_present"]) == (0, 4)
    assert main(["import", "calvin", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.zarr")]) == 1
    assert "not a CALVIN directory" in capsys.readouterr().err
    assert main(args[:-1] + ["--actions", "abs"]) == 1  # continuing with other options would mix two datasets
    assert "was imported with another dataset card or other key options" in capsys.readouterr().err
    assert main(["import", "dp-zarr", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "s.zarr"), "--workers", "0"]) == 1
    assert "already holds calvin episodes, not dp-zarr" in capsys.readouterr().err

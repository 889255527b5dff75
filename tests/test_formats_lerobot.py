"""LeRobotDataset v3.0: `dp export-data lerobot` and `dp import lerobot` on real parquet and MP4 files.

The round trip (a store with two cameras -> LeRobot folder -> store) gives the same episodes:
low-dim keys and metadata exactly, camera frames within the H.264 codec's tolerance (PSNR). With
LeRobot's own virtualenv present (bench/peers/setup_lerobot.sh), LeRobot loads the export and dp
imports a folder LeRobot wrote. Bad input (issue 35): data rows whose episode_index disagrees with
their episode's frame range, and truncated parquet files, are refused with one line, before writing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="needs the lerobot extra: pip install -e '.[lerobot]'")
av = pytest.importorskip("av", reason="needs the lerobot extra: pip install -e '.[lerobot]'")
import pyarrow.compute as pa_compute  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from dp.cli import main as dp_main  # noqa: E402
from dp.data.store import EpisodeStore  # noqa: E402
from dp.testing.format_fixtures import make_sim_store  # noqa: E402

LENS = (9, 6, 11)
FPS = 20
MIN_PSNR_DB = 20.0  # measured 22.3..35.4 dB at the default crf 23 on these hard-edged 32x32 frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


@pytest.fixture
def exported(tmp_path):
    src = tmp_path / "src.zarr"
    make_sim_store(src, episode_lens=LENS, image_size=32)
    out = tmp_path / "lerobot"
    assert dp_main(["export-data", "lerobot", str(src), "--out", str(out), "--no-progress"]) == 0
    return src, out


@pytest.mark.slow
def test_round_trip_two_cameras_gives_the_same_episodes(exported, tmp_path):
    src, out = exported
    back = tmp_path / "back.zarr"
    assert dp_main(["import", "lerobot", str(out), "--out", str(back), "--workers", "0", "--no-progress"]) == 0
    with EpisodeStore.open(src) as a, EpisodeStore.open(back) as b:
        assert len(b) == len(a) == len(LENS)
        assert sorted(b.keys) == sorted(a.keys)
        assert b.roles == a.roles and b.discrete_dims == a.discrete_dims and b.control_freq == a.control_freq == FPS
        psnrs = []
        for i in range(len(a)):
            ea, eb = a.get_episode(i), b.get_episode(i)
            for key, value in ea.items():
                assert eb[key].shape == value.shape and eb[key].dtype == value.dtype, key
                if value.dtype == np.uint8:
                    psnrs.append(psnr(value, eb[key]))
                else:
                    np.testing.assert_array_equal(eb[key], value, err_msg=f"episode {i} key {key}")
            ma, mb = a.episode_meta(i), b.episode_meta(i)
            for k, v in ma.items():
                np.testing.assert_array_equal(mb[k], v, err_msg=f"episode {i} meta {k}")
        print(f"round-trip PSNR over {len(psnrs)} episode-cameras: min {min(psnrs):.2f} dB, mean {np.mean(psnrs):.2f} dB")
        assert min(psnrs) >= MIN_PSNR_DB


def test_layout_is_lerobot_v3(exported):
    src, out = exported
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == FPS and info["total_episodes"] == 3 and info["total_frames"] == sum(LENS)
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    feats = info["features"]
    assert feats["observation.state"]["shape"] == [3 + 4 + 2 + 10] and feats["action"]["shape"] == [7]
    assert {k for k, f in feats.items() if f["dtype"] == "video"} == {"observation.images.agentview", "observation.images.robot0_eye_in_hand"}
    frames = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert frames.num_rows == sum(LENS)
    np.testing.assert_array_equal(frames.column("index").to_numpy(), np.arange(sum(LENS)))
    np.testing.assert_array_equal(frames.column("frame_index").to_numpy(), np.concatenate([np.arange(n) for n in LENS]))
    np.testing.assert_allclose(frames.column("timestamp").to_numpy(), np.concatenate([np.arange(n) / FPS for n in LENS]), atol=1e-6)
    episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["dataset_to_index"] - e["dataset_from_index"] for e in episodes] == list(LENS)
    assert episodes[1]["videos/observation.images.agentview/from_timestamp"] == pytest.approx(LENS[0] / FPS)
    tasks = pq.read_table(out / "meta/tasks.parquet")
    assert tasks.column("task").to_pylist() == ["lift the cube", "pick up the can and place it in the bin"]
    assert [e["tasks"] for e in episodes] == [["lift the cube"], ["pick up the can and place it in the bin"], ["lift the cube"]]
    # stats as LeRobot computes them: per dimension for vectors, per channel in 0..1 for cameras
    stats = json.loads((out / "meta/stats.json").read_text())
    with EpisodeStore.open(src) as store:
        action = np.concatenate([store.get_episode(i)["action"] for i in range(len(store))]).astype(np.float64)
    np.testing.assert_allclose(stats["action"]["mean"], action.mean(0), atol=1e-6)
    np.testing.assert_allclose(stats["action"]["std"], action.std(0), atol=1e-6)
    np.testing.assert_allclose(stats["action"]["min"], action.min(0), atol=1e-6)
    assert stats["action"]["count"] == [sum(LENS)]
    cam = np.asarray(stats["observation.images.agentview"]["mean"])
    assert cam.shape == (3, 1, 1) and 0 < cam.min() and cam.max() < 1
    assert set(stats["observation.images.agentview"]) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}


def test_videos_are_h264_on_the_frame_grid(exported):
    _, out = exported
    path = out / "videos/observation.images.agentview/chunk-000/file-000.mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        times = [frame.time for frame in container.decode(stream)]
    np.testing.assert_allclose(times, np.arange(sum(LENS)) / FPS, atol=1e-6)


def test_a_folder_without_dp_record_imports_by_the_card(exported, tmp_path):
    _, out = exported
    (out / "meta/dp.json").unlink()  # as LeRobot itself would have written it: the generic card applies
    back = tmp_path / "plain.zarr"
    assert dp_main(["import", "lerobot", str(out), "--out", str(back), "--workers", "0", "--no-progress", "--cameras", "agentview"]) == 0
    with EpisodeStore.open(back) as b:
        assert sorted(b.keys) == ["action", "agentview_image", "state"]
        assert b.control_freq == FPS and b.robot == "panda"
        assert b.get_episode(0)["state"].shape == (LENS[0], 19)
        assert [b.episode_meta(i)["instruction"] for i in range(3)] == ["lift the cube", "pick up the can and place it in the bin", "lift the cube"]


def _fails(capsys, argv: list[str], pattern: str) -> None:
    assert dp_main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(pattern, err), err


def test_bad_input_is_a_clear_error(exported, tmp_path, capsys):
    src, out = exported
    _fails(capsys, ["export-data", "lerobot", str(src), "--out", str(out), "--no-progress"], "not empty.*--overwrite")
    assert (out / "meta/info.json").is_file()  # the earlier export is untouched
    _fails(capsys, ["import", "lerobot", str(out), "--out", str(tmp_path / "x.zarr"), "--cameras", "top", "--no-progress"], "unknown camera")
    info = json.loads((out / "meta/info.json").read_text())
    (out / "meta/dp.json").unlink()
    del info["features"]["observation.state"]
    (out / "meta/info.json").write_text(json.dumps(info))
    _fails(capsys, ["import", "lerobot", str(out), "--out", str(tmp_path / "y.zarr"), "--no-progress"],
           r"no feature 'observation.state' for key 'state'.*card entry 'source'")
    info["codebase_version"] = "v1.6"
    (out / "meta/info.json").write_text(json.dumps(info))
    _fails(capsys, ["import", "lerobot", str(out), "--out", str(tmp_path / "z.zarr"), "--no-progress"], "'v1.6'; dp reads LeRobotDataset v3.0 and v2.0, v2.1")
    assert not (tmp_path / "y.zarr").exists() and not (tmp_path / "z.zarr").exists()


def _swap_episode_index(path: Path, a: int, b: int) -> None:
    """The attack of issue 35: rows ``a`` and ``b`` of a data file trade their episode_index."""
    import pyarrow as pa

    table = pq.read_table(path)
    index = table.column("episode_index").to_numpy().copy()
    index[[a, b]] = index[[b, a]]
    pq.write_table(table.set_column(table.schema.get_field_index("episode_index"), "episode_index", pa.array(index)), path)


def test_swapped_episode_index_rows_are_refused_before_writing(exported, tmp_path, capsys):
    src, out = exported
    _swap_episode_index(out / "data/chunk-000/file-000.parquet", LENS[0] - 1, LENS[0])  # episode 0's last row, episode 1's first
    back = tmp_path / "swapped.zarr"
    args = ["import", "lerobot", str(out), "--out", str(back), "--workers", "0", "--no-progress"]
    _fails(capsys, args, r"data/chunk-000/file-000.parquet: row 8 has episode_index 1, but it lies in episode 0's rows \[0, 9\) "
                         r"\(by meta/episodes\) \(\+1 more problem\(s\)\); nothing was written")
    assert not back.exists()
    assert dp_main([*args, "--skip-bad"]) == 0
    report = capsys.readouterr().out
    assert "skipped 2 bad item(s)" in report and all(f"episode {k}: its data rows disagree" in report for k in (0, 1))
    with EpisodeStore.open(src) as a, EpisodeStore.open(back) as b:
        assert b.meta_column("source_index") == [2]
        np.testing.assert_array_equal(b.get_episode(0)["action"], a.get_episode(2)["action"])


def test_truncated_parquet_is_one_line_naming_the_file(exported, tmp_path, capsys):
    _, out = exported
    for k, name in enumerate(("meta/episodes/chunk-000/file-000.parquet", "data/chunk-000/file-000.parquet", "meta/tasks.parquet")):
        folder = tmp_path / f"cut{k}"
        shutil.copytree(out, folder)
        blob = (folder / name).read_bytes()
        (folder / name).write_bytes(blob[: len(blob) // 2])
        _fails(capsys, ["import", "lerobot", str(folder), "--out", str(tmp_path / f"cut{k}.zarr"), "--workers", "0", "--no-progress"],
               rf"^dp import: error: {re.escape(str(folder / name))}: not a readable parquet file \(Parquet magic bytes not found in footer")
        assert not (tmp_path / f"cut{k}.zarr").exists()


def _as_v21(src: Path, v3: Path, out: Path) -> None:
    """Rewrite a v3.0 export in the v2.1 layout (one parquet and one MP4 per episode, JSON-lines metadata)."""
    from dp.data.formats.lerobot import Mp4Writer

    info = json.loads((v3 / "meta/info.json").read_text())
    info.update(codebase_version="v2.1", total_chunks=1, data_path="data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
                video_path="videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4")
    (out / "meta").mkdir(parents=True)
    (out / "meta/info.json").write_text(json.dumps(info))
    frames = pq.read_table(v3 / "data/chunk-000/file-000.parquet")
    episodes = pq.read_table(v3 / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    tasks = pq.read_table(v3 / "meta/tasks.parquet").to_pylist()
    (out / "meta/tasks.jsonl").write_text("".join(json.dumps({"task_index": t["task_index"], "task": t["task"]}) + "\n" for t in tasks))
    (out / "meta/episodes.jsonl").write_text("".join(json.dumps({k: e[k] for k in ("episode_index", "tasks", "length")}) + "\n" for e in episodes))
    with EpisodeStore.open(src) as store:
        for i in range(len(store)):
            path = out / f"data/chunk-000/episode_{i:06d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(frames.filter(pa_compute.equal(frames.column("episode_index"), i)), path)
            for feature, key in (("observation.images.agentview", "agentview_image"), ("observation.images.robot0_eye_in_hand", "robot0_eye_in_hand_image")):
                images = store.get_episode(i)[key]
                writer = Mp4Writer(out / f"videos/chunk-000/{feature}/episode_{i:06d}.mp4", FPS, images.shape[2], images.shape[1])
                for img in images:
                    writer.write(img)
                writer.close()


@pytest.mark.slow
def test_v21_folder_imports(exported, tmp_path):
    src, v3 = exported
    v21 = tmp_path / "v21"
    _as_v21(src, v3, v21)
    back = tmp_path / "v21.zarr"
    assert dp_main(["import", "lerobot", str(v21), "--out", str(back), "--workers", "0", "--no-progress"]) == 0
    with EpisodeStore.open(src) as a, EpisodeStore.open(back) as b:
        assert len(b) == len(LENS) and sorted(b.keys) == ["action", "agentview_image", "robot0_eye_in_hand_image", "state"]
        for i in range(len(a)):
            ea, eb = a.get_episode(i), b.get_episode(i)
            np.testing.assert_array_equal(eb["action"], ea["action"])
            np.testing.assert_array_equal(eb["state"], np.concatenate([ea[k] for k in ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object")], 1))
            assert psnr(eb["agentview_image"], ea["agentview_image"]) >= MIN_PSNR_DB
        assert b.episode_meta(1)["instruction"] == "pick up the can and place it in the bin"


@pytest.mark.slow
def test_image_features_stored_in_the_parquet_import(exported, tmp_path):
    """dtype "image": PNG bytes in the frames' parquet ({bytes, path}, as datasets.Image writes them) instead of an MP4."""
    import cv2
    import pyarrow as pa

    src, out = exported
    (out / "meta/dp.json").unlink()
    info = json.loads((out / "meta/info.json").read_text())
    for feature in ("observation.images.agentview", "observation.images.robot0_eye_in_hand"):
        info["features"][feature] = {"dtype": "image", "shape": [32, 32, 3], "names": ["height", "width", "channels"]}
    (out / "meta/info.json").write_text(json.dumps(info))
    with EpisodeStore.open(src) as store:
        frames = {k: np.concatenate([store.get_episode(i)[k] for i in range(len(store))]) for k in ("agentview_image", "robot0_eye_in_hand_image")}
    table = pq.read_table(out / "data/chunk-000/file-000.parquet")
    for feature, key in (("observation.images.agentview", "agentview_image"), ("observation.images.robot0_eye_in_hand", "robot0_eye_in_hand_image")):
        pngs = [{"bytes": cv2.imencode(".png", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes(), "path": None} for f in frames[key]]
        table = table.append_column(feature, pa.array(pngs, pa.struct([("bytes", pa.binary()), ("path", pa.string())])))
    pq.write_table(table, out / "data/chunk-000/file-000.parquet")
    back = tmp_path / "png.zarr"
    assert dp_main(["import", "lerobot", str(out), "--out", str(back), "--workers", "0", "--no-progress"]) == 0
    with EpisodeStore.open(back) as b:
        got = np.concatenate([b.get_episode(i)["agentview_image"] for i in range(len(b))])
    np.testing.assert_array_equal(got, frames["agentview_image"])  # PNG is lossless


# ---------------------------------------------------------------------- LeRobot itself
LEROBOT_VENV = Path(os.environ.get("DP_PEERS_LEROBOT_VENV", Path.home() / ".cache/dp-peers/lerobot"))
LEROBOT_PY = LEROBOT_VENV / "bin" / "python"

LOAD = """
import json, sys
import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset
ds = LeRobotDataset("local/dp_export", root=sys.argv[1], video_backend="pyav")
frames = {k: np.stack([(ds[i][k].numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8) for i in range(len(ds))])
          for k in ds.meta.video_keys}
np.savez(sys.argv[2], state=np.stack([ds[i]["observation.state"].numpy() for i in range(len(ds))]),
         action=np.stack([ds[i]["action"].numpy() for i in range(len(ds))]), **frames)
print(json.dumps({"len": len(ds), "episodes": ds.num_episodes, "tasks": [ds[i]["task"] for i in range(len(ds))]}))
"""

WRITE = """
import sys
import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset
features = {"observation.state": {"dtype": "float32", "shape": (6,), "names": None},
            "action": {"dtype": "float32", "shape": (6,), "names": None},
            "observation.images.front": {"dtype": "video", "shape": (48, 64, 3), "names": ["height", "width", "channels"]}}
ds = LeRobotDataset.create("local/by_lerobot", fps=10, features=features, root=sys.argv[1], robot_type="so100")
rng, (yy, xx), saved = np.random.default_rng(0), np.mgrid[0:48, 0:64], {}
for ep, (T, task) in enumerate([(12, "pick the cube"), (9, "push the cube left")]):
    for t in range(T):
        img = np.stack([(xx * 3 + t * 4) % 200, (yy * 4 + t * 2) % 200, np.full_like(xx, 60 + ep * 30)], -1).astype(np.uint8)
        frame = {"observation.state": rng.normal(size=6).astype(np.float32), "action": rng.normal(size=6).astype(np.float32),
                 "observation.images.front": img}
        for k, v in frame.items():
            saved.setdefault(f"{k}/{ep}", []).append(v)
        ds.add_frame({**frame, "task": task})
    ds.save_episode()
ds.finalize()
np.savez(sys.argv[2], **{k: np.stack(v) for k, v in saved.items()})
"""


def _lerobot(script: str, *args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(LEROBOT_PY), "-c", script, *args], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.skipif(not LEROBOT_PY.is_file(), reason="needs LeRobot's own virtualenv: bash bench/peers/setup_lerobot.sh")
@pytest.mark.slow
def test_lerobot_loads_the_export_and_dp_imports_what_lerobot_wrote(exported, tmp_path):
    src, out = exported
    facts = json.loads(_lerobot(LOAD, str(out), str(tmp_path / "seen.npz")).strip().splitlines()[-1])
    assert facts["len"] == sum(LENS) and facts["episodes"] == len(LENS)
    assert facts["tasks"][: LENS[0]] == ["lift the cube"] * LENS[0]
    seen = np.load(tmp_path / "seen.npz")
    with EpisodeStore.open(src) as store:
        eps = [store.get_episode(i) for i in range(len(store))]
    np.testing.assert_array_equal(seen["action"], np.concatenate([e["action"] for e in eps]))
    state = np.concatenate([np.concatenate([e[k] for k in ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object")], 1) for e in eps])
    np.testing.assert_array_equal(seen["state"], state)
    for feature, key in (("observation.images.agentview", "agentview_image"), ("observation.images.robot0_eye_in_hand", "robot0_eye_in_hand_image")):
        assert psnr(seen[feature], np.concatenate([e[key] for e in eps])) >= MIN_PSNR_DB  # LeRobot's decoder sees our frames
    # the other way: a folder LeRobot wrote (AV1 video) imports with the plain command
    _lerobot(WRITE, str(tmp_path / "by_lerobot"), str(tmp_path / "inputs.npz"))
    back = tmp_path / "by_lerobot.zarr"
    assert dp_main(["import", "lerobot", str(tmp_path / "by_lerobot"), "--out", str(back), "--workers", "0", "--no-progress"]) == 0
    inputs = np.load(tmp_path / "inputs.npz")
    with EpisodeStore.open(back) as b:
        assert sorted(b.keys) == ["action", "front_image", "state"] and b.control_freq == 10 and b.robot == "so100"
        for i in range(2):
            e = b.get_episode(i)
            np.testing.assert_array_equal(e["state"], inputs[f"observation.state/{i}"])
            np.testing.assert_array_equal(e["action"], inputs[f"action/{i}"])
            assert psnr(e["front_image"], inputs[f"observation.images.front/{i}"]) >= MIN_PSNR_DB
        assert [b.episode_meta(i)["instruction"] for i in range(2)] == ["pick the cube", "push the cube left"]


@pytest.mark.slow
def test_map_sends_a_key_to_another_feature_and_still_round_trips(tmp_path):
    src = tmp_path / "src.zarr"
    make_sim_store(src, episode_lens=(5, 4), image_size=16)
    out, back = tmp_path / "lerobot", tmp_path / "back.zarr"
    assert dp_main(["export-data", "lerobot", str(src), "--out", str(out), "--no-progress",
                    "--map", "object=observation.environment_state,agentview_image=observation.images.front"]) == 0
    feats = json.loads((out / "meta/info.json").read_text())["features"]
    assert feats["observation.environment_state"]["shape"] == [10] and feats["observation.state"]["shape"] == [9]
    assert feats["observation.images.front"]["dtype"] == "video" and "observation.images.agentview" not in feats
    assert dp_main(["import", "lerobot", str(out), "--out", str(back), "--workers", "0", "--no-progress"]) == 0
    with EpisodeStore.open(src) as a, EpisodeStore.open(back) as b:
        for i in range(2):
            for key in ("object", "robot0_eef_quat", "action"):
                np.testing.assert_array_equal(b.get_episode(i)[key], a.get_episode(i)[key])

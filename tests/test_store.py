"""The episode store: round trips, metadata, locking, crash safety, format-2 stores, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import make_episode

from dp.data.store import EpisodeStore
from dp.errors import DpError


def test_round_trip_every_dtype_and_shape(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", control_freq=10.0, robot="panda")
    rng = np.random.default_rng(1)
    episodes = []
    for i, T in enumerate([1, 7, 64]):
        ep = {
            "f32": rng.normal(size=(T, 5)).astype(np.float32),
            "f64": rng.normal(size=(T,)).astype(np.float64),
            "i64": rng.integers(-(2**40), 2**40, size=(T, 2)),
            "i32": rng.integers(-1000, 1000, size=(T, 3, 2)).astype(np.int32),
            "flag": rng.integers(0, 2, size=(T,)).astype(bool),
            "cam_image": rng.integers(0, 256, size=(T, 12, 10, 3), dtype=np.uint8),
            "depth": rng.integers(0, 256, size=(T, 12, 10, 1), dtype=np.uint8),
            "action": rng.uniform(-1, 1, size=(T, 7)).astype(np.float32),
        }
        assert store.add_episode(ep, meta={"task": "t", "seed": i}) == i
        episodes.append(ep)
    store.close()
    reread = EpisodeStore.open(tmp_path / "s.zarr")
    assert len(reread) == 3 and reread.n_frames == 72
    assert reread.roles["image"] == ["cam_image", "depth"] and reread.roles["action"] == ["action"]
    for i, ep in enumerate(episodes):
        got = reread.get_episode(i)
        assert set(got) == set(ep)
        for key, value in ep.items():
            assert got[key].dtype == value.dtype and got[key].shape == value.shape
            np.testing.assert_array_equal(got[key], value)
    assert reread.get_episode(-1, keys=["f32"])["f32"].shape == (64, 5)
    assert reread.attrs["schema_version"] == 1 and reread.control_freq == 10.0 and reread.robot == "panda"
    assert reread.zarr_format == 3


def test_image_keys_are_sharded_one_frame_per_chunk(make_store):
    store = make_store(2)
    img = store.array("agentview_image")
    assert img.chunks == (1, 16, 16, 3) and img.shards is not None and img.shards[0] > 1
    low = store.array("robot0_eef_pos")
    assert low.chunks[1:] == (3,) and low.chunks[0] > 1000 and low.shards is None


def test_metadata_round_trip(tmp_path):
    store = EpisodeStore.create(tmp_path / "m.zarr")
    emb = np.linspace(-1, 1, 384, dtype=np.float32)
    store.add_episode(make_episode(0), meta={"task": "lift", "instruction": "lift the cube", "lang_emb": emb, "success": True, "source": "expert", "seed": 7, "reward": 1.5})
    store.add_episode(make_episode(1), meta={"task": "can", "success": False, "seed": 8})
    store.close()
    store = EpisodeStore.open(tmp_path / "m.zarr")
    m0, m1 = store.episode_meta(0), store.episode_meta(1)
    assert m0["task"] == "lift" and m0["instruction"] == "lift the cube" and m0["success"] is True
    assert m0["source"] == "expert" and m0["seed"] == 7 and m0["reward"] == 1.5
    np.testing.assert_array_equal(m0["lang_emb"], emb)
    assert m1 == {"task": "can", "success": False, "seed": 8}
    assert store.meta_column("task") == ["lift", "can"]
    assert store.meta_column("nothing") == [None, None]


def test_second_writer_is_refused_readers_are_not(make_store, tmp_path):
    writer = make_store(1)
    with pytest.raises(DpError, match="another process is writing"):
        EpisodeStore.open(writer.path, "a")
    code = f"from dp.data.store import EpisodeStore\nEpisodeStore.open({str(writer.path)!r}, 'a')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "writer lock held" in proc.stderr
    reader = EpisodeStore.open(writer.path, "r")
    writer.add_episode(make_episode(5))
    assert len(reader) == 1  # a reader sees the episodes committed when it opened
    assert len(EpisodeStore.open(writer.path, "r")) == 2
    writer.close()
    EpisodeStore.open(writer.path, "a").close()  # free again once closed


def test_read_only_store_refuses_appends(make_store):
    path = make_store(1).path
    with pytest.raises(DpError, match="read-only"):
        EpisodeStore.open(path, "r").add_episode(make_episode(1))


APPENDER = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from conftest import make_episode
from dp.data.store import EpisodeStore
store = EpisodeStore.open({path!r}, "a")
i = len(store)
while True:
    store.add_episode(make_episode(i, length=40 + i % 7), meta={{"task": "t", "seed": i}})
    print(i, flush=True)
    i += 1
"""


def _check_exact(store: EpisodeStore) -> None:
    for i in range(len(store)):
        expected = make_episode(i, length=40 + i % 7)
        got = store.get_episode(i)
        for key, value in expected.items():
            np.testing.assert_array_equal(got[key], value, err_msg=f"episode {i} key {key}")
        assert store.episode_meta(i)["seed"] == i


@pytest.mark.slow
def test_sigkill_during_appends_keeps_every_completed_episode(tmp_path):
    path = tmp_path / "kill.zarr"
    EpisodeStore.create(path, discrete_dims={"action": [6]}).close()
    rng = np.random.default_rng(0)
    script = APPENDER.format(tests=str(Path(__file__).parent), path=str(path))
    kills = torn_seen = 0
    while kills < 20:
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        first = proc.stdout.readline()  # the child is importing; wait for its first append
        assert first, "appender died before appending"
        time.sleep(float(rng.uniform(0.0, 0.25)))
        os.kill(proc.pid, signal.SIGKILL)
        out = first + proc.stdout.read()
        proc.wait()
        kills += 1
        printed = [int(x) for x in out.split()]
        reader = EpisodeStore.open(path, "r")
        # every episode the child saw committed is there; at most one more (committed, not yet printed)
        assert printed[-1] + 1 <= len(reader) <= printed[-1] + 2
        _check_exact(reader)
        with _maybe_warns() as rec:
            writer = EpisodeStore.open(path, "a")
        torn_seen += bool(rec)
        assert len(writer) == len(reader)
        assert all(writer.array(k).shape[0] == writer.n_frames for k in writer.keys)
        assert not list(path.rglob("*.partial"))
        writer.close()
    final = EpisodeStore.open(path, "r")
    _check_exact(final)
    assert len(final) > 20
    assert torn_seen >= 1  # some kills landed inside an append and were repaired


class _maybe_warns:
    """Records warnings without requiring one (a kill may land between appends)."""

    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings(record=True)
        self.records = self._cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)

    def __bool__(self):
        return any("torn write" in str(w.message) for w in self.records)


def test_torn_tail_is_dropped_with_a_warning(make_store):
    store = make_store(2, image=False)
    path, frames = store.path, store.n_frames
    # simulate a writer killed after writing data but before the commit
    arr = store.array("robot0_eef_pos")
    arr.resize((frames + 9, 3))
    arr[frames:] = 1.0
    store.close()
    assert EpisodeStore.open(path, "r").n_frames == frames
    with pytest.warns(UserWarning, match="dropped a torn write.*9 frames"):
        repaired = EpisodeStore.open(path, "a")
    assert repaired.array("robot0_eef_pos").shape[0] == frames
    repaired.add_episode(make_episode(2, image=False))
    assert len(repaired) == 3


def test_torn_commit_entry_is_dropped(make_store):
    store = make_store(2, image=False)
    path = store.path
    ends = zarr.open_array(path / "meta" / "episode_ends", mode="r+")
    ends.resize((3,))  # shape grew, value never written: reads as the fill value 0
    store.close()
    assert len(EpisodeStore.open(path, "r")) == 2
    with pytest.warns(UserWarning, match="torn write"):
        assert len(EpisodeStore.open(path, "a")) == 2


def _write_dp_format2_store(path: Path, episodes: list[dict[str, np.ndarray]]) -> None:
    """A store laid out exactly like Diffusion Policy's ReplayBuffer (zarr format 2, numcodecs Blosc)."""
    import numcodecs

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    data, meta = root.create_group("data"), root.create_group("meta")
    compressor = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE)
    for key in episodes[0]:
        full = np.concatenate([e[key] for e in episodes])
        data.create_array(key, shape=full.shape, dtype=full.dtype, chunks=(min(len(full), 100), *full.shape[1:]), compressors=compressor)[:] = full
    ends = np.cumsum([len(next(iter(e.values()))) for e in episodes]).astype(np.int64)
    meta.create_array("episode_ends", shape=ends.shape, dtype="int64", chunks=ends.shape, compressors=None)[:] = ends


def test_opens_diffusion_policy_format2_store(tmp_path):
    rng = np.random.default_rng(3)
    eps = [
        {
            "img": rng.uniform(0, 255, size=(T, 8, 8, 3)).astype(np.float32),
            "state": rng.normal(size=(T, 5)).astype(np.float32),
            "action": rng.normal(size=(T, 2)).astype(np.float32),
        }
        for T in (11, 4, 9)
    ]
    _write_dp_format2_store(tmp_path / "pusht.zarr", eps)
    assert (tmp_path / "pusht.zarr" / ".zgroup").exists()
    store = EpisodeStore.open(tmp_path / "pusht.zarr")
    assert store.zarr_format == 2 and len(store) == 3 and store.n_frames == 24
    assert store.roles == {"lowdim": ["state"], "image": ["img"], "action": ["action"]}
    np.testing.assert_array_equal(store.get_episode(1)["state"], eps[1]["state"])
    assert store.episode_meta(0) == {}
    with pytest.raises(DpError, match="format-2 store is read-only"):
        EpisodeStore.open(tmp_path / "pusht.zarr", "a")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda ep: ep.update(action=ep["action"][:-1]), "different lengths"),
        (lambda ep: ep["robot0_eef_pos"].__setitem__((3, 1), np.nan), "'robot0_eef_pos' holds NaN or inf \\(first at frame 3\\)"),
        (lambda ep: ep["action"].__setitem__((0, 0), np.inf), "'action' holds NaN or inf"),
        (lambda ep: ep.update(agentview_image=ep["agentview_image"].astype(np.float32)), "image key 'agentview_image' must be uint8"),
        (lambda ep: ep.pop("step"), "missing: \\['step'\\]"),
        (lambda ep: ep.update(extra=np.zeros(len(ep["step"]))), "unexpected: \\['extra'\\]"),
        (lambda ep: ep.update(robot0_eef_pos=np.zeros((len(ep["step"]), 4), np.float32)), "frame shape"),
        (lambda ep: ep.update(step=ep["step"].astype(np.float32)), "dtype float32, store has int64"),
    ],
)
def test_bad_episodes_are_refused_and_lose_nothing(make_store, mutate, message):
    store = make_store(2)
    before = {k: store.read(k, 0, store.n_frames) for k in store.keys}
    ep = make_episode(9)
    mutate(ep)
    with pytest.raises(DpError, match=message):
        store.add_episode(ep)
    assert len(store) == 2
    store.close()
    store = EpisodeStore.open(store.path, "a")
    assert len(store) == 2
    for k, v in before.items():
        np.testing.assert_array_equal(store.read(k, 0, store.n_frames), v)
    store.add_episode(make_episode(2))  # still writable
    assert len(store) == 3


def test_bad_metadata_is_refused(make_store):
    store = make_store(1)
    with pytest.raises(DpError, match="metadata 'obj'"):
        store.add_episode(make_episode(1), meta={"obj": {"a": 1}})
    with pytest.raises(DpError, match="metadata 'seed' is str"):
        store.add_episode(make_episode(1), meta={"seed": "seven"})
    with pytest.raises(DpError, match="metadata 'emb' holds NaN"):
        store.add_episode(make_episode(1), meta={"emb": np.array([np.nan, 1.0])})
    assert len(store) == 1


def test_missing_episode_ends_and_non_stores(tmp_path):
    zarr.open_group(str(tmp_path / "nometa.zarr"), mode="w").create_group("data")
    with pytest.raises(DpError, match="'meta/episode_ends' is missing"):
        EpisodeStore.open(tmp_path / "nometa.zarr")
    with pytest.raises(DpError, match="no episode store there"):
        EpisodeStore.open(tmp_path / "absent.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DpError, match="not a readable Zarr group"):
        EpisodeStore.open(tmp_path / "empty")
    with pytest.raises(DpError, match="already exists"):
        EpisodeStore.create(tmp_path / "empty")


def test_corrupt_chunk_names_key_and_chunk(make_store):
    store = make_store(2, image=False)
    path = store.path
    store.close()
    chunk = next(p for p in (path / "data" / "robot0_eef_pos" / "c").rglob("*") if p.is_file())
    chunk.write_bytes(b"garbage" * 3)
    store = EpisodeStore.open(path)
    with pytest.raises(DpError, match=r"data/robot0_eef_pos: cannot read frames \[0, \d+\) \(chunks 0\.\.0"):
        store.get_episode(0)
    assert json.loads((path / "zarr.json").read_text())["attributes"]["schema_version"] == 1


def test_image_appends_cross_shards_and_zarr_reads_them(tmp_path):
    """Frames written by the store's direct shard writer read back identically through zarr itself."""
    store = EpisodeStore.create(tmp_path / "big.zarr")
    rng = np.random.default_rng(5)
    episodes = [rng.integers(0, 256, size=(T, 200, 200, 3), dtype=np.uint8) for T in (50, 3, 30)]
    for frames in episodes:
        store.add_episode({"cam_image": frames, "action": np.zeros((len(frames), 2), np.float32)})
    arr = zarr.open_array(store.path / "data" / "cam_image", mode="r")
    assert arr.shards[0] < 50  # the first episode already spans two shards
    np.testing.assert_array_equal(arr[:], np.concatenate(episodes))
    assert arr.nbytes_stored() < arr.nbytes * 1.05


def test_add_episodes_commits_a_batch_at_once_and_refuses_it_whole(make_store):
    store = make_store(1)
    batch = [(make_episode(i), {"seed": i} if i % 2 else {"task": "late", "seed": i, "emb": np.arange(3.0)}) for i in range(1, 4)]
    assert store.add_episodes(batch) == [1, 2, 3]
    bad = make_episode(5)
    bad["action"][0, 0] = np.nan
    with pytest.raises(DpError, match="episode 5: key 'action' holds NaN"):
        store.add_episodes([(make_episode(4), None), (bad, None)])
    path = store.path
    store.close()
    store = EpisodeStore.open(path, "a")
    assert len(store) == 4 and store.n_frames == sum(len(make_episode(i)["step"]) for i in range(4))
    for i in range(1, 4):
        for key, value in make_episode(i).items():
            np.testing.assert_array_equal(store.get_episode(i)[key], value)
    assert store.meta_column("seed") == [0, 1, 2, 3]
    assert store.meta_column("task") == ["lift", None, "late", None]
    emb = store.meta_column("emb")
    assert emb[0] is None and emb[1] is None and emb[3] is None and emb[2].tolist() == [0.0, 1.0, 2.0]
    store.set_episode_meta(1, {"task": "set later"})
    assert store.meta_column("task") == ["lift", "set later", "late", None]


def test_staged_episodes_are_invisible_until_committed(make_store):
    store = make_store(1)
    path = store.path
    assert store.stage_episode(make_episode(1), {"seed": 1}) == 1
    assert store.stage_episode(make_episode(2), {"seed": 2}) == 2
    assert len(store) == 1 and len(EpisodeStore.open(path, "r")) == 1
    store.close()  # not committed: dropped (a crash leaves the same)
    store = EpisodeStore.open(path, "a")
    assert len(store) == 1 and store.array("agentview_image").shape[0] == store.n_frames
    assert store.stage_episode(make_episode(3), {"seed": 3}) == 1
    assert store.commit() == [1]
    reader = EpisodeStore.open(path, "r")
    assert len(reader) == 2 and reader.meta_column("seed") == [0, 3]
    for key, value in make_episode(3).items():
        np.testing.assert_array_equal(reader.get_episode(1)[key], value)

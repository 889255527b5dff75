"""Integrity attacks on the data side (issue 15, items 4-7 and 9): inconsistent or damaged import
sources, orphaned decoder workers, a full disk, damaged checkpoints; and (issue 35) a truncated
chunk of an episode store, which must end a command with one line."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest
import zarr
from torch.utils import data as torch_data

from dp.cli import main
from dp.cli_args import error_message
from dp.data.formats import dp_zarr, libero_import
from dp.data.formats.cards import card_from_dict, load_card
from dp.data.formats.pipeline import run_import
from dp.data.formats.structure import episode_ranges
from dp.data.store import EpisodeStore
from dp.files import sha256_file
from dp.errors import DpError
from dp.models import checkpoint_files as ckpt
from dp.testing.format_fixtures import make_calvin_split, make_dp_zarr, make_libero_file, make_sim_store

ROOT = Path(__file__).resolve().parents[1]
LENS = (10, 7, 12, 5, 9)
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def _dp(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


# ---------------------------------------------------------------------------- 4. structure before writing
def test_swapped_episode_ends_fail_before_anything_is_written(tmp_path, capsys):
    make_dp_zarr(tmp_path / "pusht.zarr", episode_lens=LENS, image_size=16)
    ends = zarr.open_group(str(tmp_path / "pusht.zarr"), mode="r+")["meta/episode_ends"]
    swapped = ends[:]
    swapped[[1, 2]] = swapped[[2, 1]]  # 10 29 17 34 43
    ends[:] = swapped
    out = tmp_path / "s.zarr"
    args = ["import", "dp-zarr", str(tmp_path / "pusht.zarr"), "--card", "pusht", "--out", str(out), "--workers", "0", "--no-progress"]
    code, err = _dp(args, capsys)
    assert code == 1 and not out.exists()
    assert "pusht.zarr: meta/episode_ends[2] = 17 does not increase on [1] = 29" in err and "nothing was written" in err
    assert len(err.strip().splitlines()) == 1
    # --skip-bad: the episodes the swap touches are listed, the others import with their true bounds
    code = main([*args, "--skip-bad", "--json"])
    assert code == 0
    with EpisodeStore.open(out) as store:
        assert store.meta_column("source_index") == [0, 4]
        assert store.episode_ends.tolist() == [10, 19]
        np.testing.assert_array_equal(store.get_episode(1)["action"], zarr.open_group(str(tmp_path / "pusht.zarr"))["data/action"][34:43])


def test_episode_ranges_trust_only_consistent_ends():
    ranges, problems = episode_ranges([10, 29, 17, 34, 43], 43, "SRC: meta/episode_ends")
    assert ranges == [(0, 10), None, None, None, (34, 43)] and len(problems) == 1
    ranges, problems = episode_ranges([10, 17, 29, 50], 43, "E")
    assert ranges == [(0, 10), (10, 17), (17, 29), None] and problems == ["E[3] = 50 is past the end of the data (43 frames)"]
    assert episode_ranges([[1, 2]], 3, "E")[1] == ["E: expected a 1-D integer array, got int64 (1, 2)"]
    # locally consistent neighbours are not enough: [8, 30) would overlap episode 0's [0, 10)
    ranges, problems = episode_ranges([10, 20, 5, 8, 30, 40], 40, "E")
    assert ranges == [None, None, None, None, None, (30, 40)]
    assert problems == ["E[2] = 5 does not increase on [1] = 20 (ends must increase)", "E[3] = 8 does not increase on [1] = 20 (ends must increase)"]


def test_short_key_and_bad_image_shape_are_refused_naming_source_and_key(tmp_path):
    make_dp_zarr(tmp_path / "pusht.zarr", episode_lens=LENS, image_size=16)
    root = zarr.open_group(str(tmp_path / "pusht.zarr"), mode="r+")
    root["data/state"].resize((40, 5))  # three frames short of the last end (43)
    card = load_card("pusht")
    with pytest.raises(DpError, match=r"pusht.zarr: meta/episode_ends\[4\] = 43 is past the end of the data \(40 frames\)"):
        dp_zarr.plan_import(tmp_path / "pusht.zarr", card=card)
    skipped: list[str] = []
    _, items = dp_zarr.plan_import(tmp_path / "pusht.zarr", card=card, skip_bad=True, skipped=skipped)
    assert [it.source_index for it in items] == [0, 1, 2, 3] and skipped[0].endswith("episode 4: its bounds in meta/episode_ends are inconsistent")
    root["data/state"].resize((43, 5))
    root.create_array("data/flat", shape=(43, 16, 16), dtype="uint8")
    flat = {"name": "flat", "format": "dp-zarr", "keys": [{"key": "img", "source": "flat", "role": "image"},
                                                         {"key": "action", "source": "action", "role": "action"}]}
    with pytest.raises(DpError, match=r"pusht.zarr: data/flat: expected images \(T, H, W, C\)"):
        dp_zarr.plan_import(tmp_path / "pusht.zarr", card=card_from_dict(flat))


def test_a_second_source_of_other_shapes_is_refused_before_writing(tmp_path):
    card = load_card("pusht")
    make_dp_zarr(tmp_path / "pusht.zarr", episode_lens=LENS, image_size=16)
    _, items = dp_zarr.plan_import(tmp_path / "pusht.zarr", card=card)
    run_import(items, tmp_path / "s.zarr", card, workers=0, progress=False)
    make_dp_zarr(tmp_path / "other.zarr", episode_lens=LENS, image_size=24)  # same card and keys, larger images
    _, items = dp_zarr.plan_import(tmp_path / "other.zarr", card=card)
    with pytest.raises(DpError, match=r"other.zarr: episode 0 \(frames 0..9\): key 'img' has frame shape \(24, 24, 3\), "
                                      r"the store holds \(16, 16, 3\) \(\+4 more problem\(s\)\); nothing was written"):
        run_import(items, tmp_path / "s.zarr", card, workers=0, progress=False)
    with EpisodeStore.open(tmp_path / "s.zarr") as store:
        assert len(store) == len(LENS)
    _, items = dp_zarr.plan_import(tmp_path / "other.zarr", card=card, image_size=16)  # resized to fit: it imports
    assert run_import(items, tmp_path / "s.zarr", card, workers=0, progress=False).added == len(LENS)


@pytest.mark.slow
def test_truncated_chunk_names_the_partial_store_and_the_rerun_continues(tmp_path, capsys):
    src = make_dp_zarr(tmp_path / "pusht.zarr", episode_lens=(8,) * 12, image_size=16)  # img chunks: 8 frames
    chunk = tmp_path / "pusht.zarr" / "data" / "img" / "9.0.0.0"
    good = chunk.read_bytes()
    chunk.write_bytes(good[: len(good) // 2])
    out = tmp_path / "s.zarr"
    args = ["import", "dp-zarr", str(tmp_path / "pusht.zarr"), "--card", "pusht", "--out", str(out), "--workers", "2", "--no-progress"]
    code, err = _dp(args, capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "data/img: cannot read frames [72, 80)" in err
    assert f"{out} holds a partial import (9 episodes, 9 added by this run): rerun the same command to continue it" in err
    with EpisodeStore.open(out) as store:
        assert len(store) == 9
    chunk.write_bytes(good)  # the source repaired: the same command finishes the import
    code, _ = _dp(args, capsys)
    assert code == 0
    with EpisodeStore.open(out) as store:
        assert store.meta_column("source_index") == list(range(12))
        np.testing.assert_array_equal(store.array("action")[:], src["action"])


# ---------------------------------------------------------------------------- issue 35: a truncated store chunk
@pytest.mark.parametrize("argv, chunk, first_line", [
    # one read spans both shards of the camera: zarr decodes their frames in concurrent tasks, and the
    # ones still pending when the first fails used to print "Task was destroyed but it is pending!" at exit
    (["export-data", "libero", "s.zarr", "--out", "exported", "--no-progress"], "data/agentview_image/c/0/0/0/0",
     "dp export-data: error: s.zarr: data/agentview_image: cannot read frames [0, 300) (chunks 0..1 along time; corrupt or truncated?)"),
    (["info", "s.zarr"], "meta/episode_ends/c/0", "dp info: error: s.zarr: meta/episode_ends: cannot read (corrupt or truncated?)"),
])
def test_truncated_zarr_chunk_ends_the_command_with_one_line(tmp_path, argv, chunk, first_line):
    make_sim_store(tmp_path / "s.zarr", episode_lens=(300,), image_size=8)
    blob = (tmp_path / "s.zarr" / chunk).read_bytes()
    (tmp_path / "s.zarr" / chunk).write_bytes(blob[: len(blob) // 2])
    result = subprocess.run([sys.executable, "-m", "dp", *argv], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(first_line), result.stderr[-3000:]


class _CorruptFrames(torch_data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> int:
        raise DpError(f"s.zarr/data/img: frame {i} (shard 0, chunk {i}) cannot be decoded: error during blosc decompression: -1")


def test_an_error_from_a_dataloader_worker_prints_as_its_own_message():
    """`dp train` reads camera frames in DataLoader workers, which re-raise a DpError with the worker's traceback in it."""
    with pytest.raises(DpError) as caught:
        next(iter(torch_data.DataLoader(_CorruptFrames(), num_workers=1)))
    assert "Traceback" in str(caught.value)
    assert error_message(caught.value) == "s.zarr/data/img: frame 0 (shard 0, chunk 0) cannot be decoded: error during blosc decompression: -1"


# ---------------------------------------------------------------------------- 9. NaN names the source
@pytest.mark.slow
def test_nan_actions_name_the_source_file_and_key_not_the_store(tmp_path, capsys):
    make_dp_zarr(tmp_path / "pusht.zarr", episode_lens=LENS, image_size=16)
    zarr.open_group(str(tmp_path / "pusht.zarr"), mode="r+")["data/action"][23, 1] = np.nan
    out = tmp_path / "dest.zarr"
    code, err = _dp(["import", "dp-zarr", str(tmp_path / "pusht.zarr"), "--card", "pusht", "--out", str(out),
                     "--workers", "0", "--no-progress"], capsys)
    assert code == 1 and not out.exists()
    assert "pusht.zarr: data/action holds NaN or inf at frame 23 (episode 2, frames 17..28)" in err and "dest.zarr" not in err
    # LIBERO: found as the demo decodes (the shared check before staging), named by file, demo and key
    make_libero_file(tmp_path / "lib" / "task_demo.hdf5", demo_lens=(6, 5, 7), image_size=16)
    with h5py.File(tmp_path / "lib" / "task_demo.hdf5", "r+") as f:
        f["data/demo_1/actions"][2, 0] = np.inf
    card, items = libero_import.plan_import([tmp_path / "lib"])
    with pytest.raises(DpError) as caught:
        run_import(items, tmp_path / "lib.zarr", card, workers=0, progress=False)
    message = str(caught.value)
    assert "task_demo.hdf5: data/demo_1" in message and "key 'action' (from actions) holds NaN or inf (first at frame 2" in message
    assert "lib.zarr holds a partial import (1 episode, 1 added by this run)" in message


# ---------------------------------------------------------------------------- 6. workers die with the import
def command_line(process: psutil.Process) -> str:
    """The process's command line, or "" for one that has just exited (a short-lived child can be a zombie
    between listing the children and reading their command lines)."""
    try:
        return " ".join(process.cmdline())
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return ""


def test_sigkilled_import_takes_its_decoder_workers_and_resource_tracker_with_it(tmp_path):
    make_calvin_split(tmp_path / "calvin", episode_lens=(60, 60, 60), lang_per_episode=10, lang_len=12, static_size=96, gripper_size=32)
    out = tmp_path / "s.zarr"
    proc = subprocess.Popen([sys.executable, "-m", "dp", "import", "calvin", str(tmp_path / "calvin"), "--out", str(out),
                             "--workers", "2", "--no-progress"], cwd=ROOT, env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        children: list[psutil.Process] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            children = psutil.Process(proc.pid).children(recursive=True)
            if sum("spawn_main" in command_line(c) for c in children) == 2 and (out / "meta").exists():
                break
            time.sleep(0.02)
        cmdlines = [command_line(c) for c in children]
        assert sum("spawn_main" in c for c in cmdlines) == 2 and any("resource_tracker" in c for c in cmdlines), cmdlines
        os.kill(proc.pid, signal.SIGKILL)  # the importer alone, mid-import: its workers must follow by themselves
        proc.wait()

        def alive() -> list[psutil.Process]:
            return [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]

        deadline = time.monotonic() + 5
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(), [c.cmdline() for c in alive()]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left, if the assertion failed
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------------------- 7. write errors
@pytest.mark.slow
def test_disk_full_mid_import_is_one_line_naming_the_store_and_what_it_holds(tmp_path, monkeypatch):
    make_dp_zarr(tmp_path / "pusht.zarr", episode_lens=(6,) * 20, image_size=16)
    card, items = dp_zarr.plan_import(tmp_path / "pusht.zarr", card=load_card("pusht"))
    commit, calls = EpisodeStore._commit, []

    def full_disk(self):
        calls.append(1)
        if len(calls) == 2:  # the second batch: the device is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return commit(self)

    monkeypatch.setattr(EpisodeStore, "_commit", full_disk)
    out = tmp_path / "s.zarr"
    with pytest.raises(DpError) as caught:
        run_import(items, out, card, workers=0, progress=False)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{out}: write failed: No space left on device [ENOSPC]")
    assert "the store still holds episodes 0..7 (8 complete)" in message and "rerun the same command to continue the import" in message
    monkeypatch.undo()
    with EpisodeStore.open(out, mode="a") as store:
        assert len(store) == 8 and store.get_episode(7)["action"].shape == (6, 2)
    report = run_import(items, out, card, workers=0, progress=False)
    assert report.already_present == 8 and report.added == 12


@pytest.mark.slow
def test_collect_hitting_the_file_size_limit_ends_with_one_line(tmp_path):
    """A real EFBIG: `dp collect` in a child whose RLIMIT_FSIZE its store outgrows after a few episodes."""
    out = tmp_path / "lift.zarr"
    limit = 8000  # bytes per file: a few lift episodes' worth of one low-dim chunk

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run([sys.executable, "-m", "dp", "collect", "--task", "lift", "--episodes", "30", "--out", str(out)],
                            cwd=ROOT, env=ENV, preexec_fn=small_files, capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("dp collect")]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(errors) == 1 and errors[0].startswith(f"dp collect: error: {out}: write failed: File too large [EFBIG]")
    assert errors[0].endswith("free space and re-run the same command to continue")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the torn tail of the cut write is dropped, with a warning
        with EpisodeStore.open(out, mode="a") as store:
            n = len(store)
            assert n >= 1 and f"the store still holds episodes 0..{n - 1} ({n} complete)" in errors[0]
            assert all(store.get_episode(i)["action"].shape[1] == 7 for i in range(n))


# ---------------------------------------------------------------------------- 5. checkpoint checksums
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from dp.testing.reach_store import make_store

    root = tmp_path_factory.mktemp("ckpt")
    store = make_store(root / "s.zarr", episodes=3, length=12)
    assert main(["train", "--data", str(store), "--preset", "tiny", "--out", str(root / "run"), "--no-progress",
                 "train.steps=10", "train.batch_size=16", "train.ckpt_every=5"]) == 0
    return store, root / "run"


def _flip(path: Path, n: int = 64) -> None:
    """Invert ``n`` bytes in the middle of a file (inside the tensor data of a safetensors file)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + n] = bytes(b ^ 0xFF for b in data[middle : middle + n])
    path.write_bytes(bytes(data))


def test_flipped_weights_fail_eval_export_and_the_node(run, tmp_path, capsys):
    _, src = run
    damaged = tmp_path / "run"
    shutil.copytree(src, damaged, symlinks=True)
    model = (damaged / "latest").resolve() / "model.safetensors"
    listed = sha256_file(model)
    _flip(model)
    want = f"{model}: checksum mismatch"
    code, err = _dp(["eval", str(damaged), "--task", "lift", "--episodes", "1"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and want in err
    code, err = _dp(["export", str(damaged), "--out", str(tmp_path / "exported")], capsys)
    assert code == 1 and want in err and not (tmp_path / "exported").exists()
    assert sha256_file(model) != listed and (model.parent / ckpt.CHECKSUMS_FILE).read_text().count(listed) == 1  # nothing re-signed
    from dp.infer.load import load_policy

    with pytest.raises(DpError, match="checksum mismatch"):
        load_policy(str(damaged))


def test_resume_checks_the_training_state(run, tmp_path, capsys):
    store, src = run
    damaged = tmp_path / "run"
    shutil.copytree(src, damaged, symlinks=True)
    state = (damaged / "latest").resolve() / ckpt.STATE_FILE
    _flip(state)
    code, err = _dp(["train", "--data", str(store), "--preset", "tiny", "--out", str(damaged), "--resume", "--no-progress",
                     "train.steps=12", "train.batch_size=16"], capsys)
    assert code == 1 and f"{state}: checksum mismatch" in err


def test_checksums_are_written_with_the_checkpoint_and_old_ones_load_with_a_warning(run, tmp_path):
    from dp.infer import Policy

    _, src = run
    for step in sorted((src / "checkpoints").iterdir()):
        listed = (step / ckpt.CHECKSUMS_FILE).read_text()
        assert all(f'"{name}": "{sha256_file(step / name)}"' in listed for name in (ckpt.MODEL_FILE, ckpt.NORMALIZER_FILE, ckpt.STATE_FILE))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Policy.load(src)  # intact: no warning about checksums
    assert not [w for w in caught if "checksums" in str(w.message)]
    old = tmp_path / "old"
    shutil.copytree(src, old, symlinks=True)
    ((old / "latest").resolve() / ckpt.CHECKSUMS_FILE).unlink()
    with pytest.warns(UserWarning, match="no checksums.json .* not verified"):
        Policy.load(old)

"""A killed import, run again, continues without duplicates (CALVIN import through the real CLI)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dp.data.formats import calvin_import
from dp.data.formats.pipeline import run_import
from dp.data.store import EpisodeStore
from dp.testing.format_fixtures import calvin_frame, make_calvin_split

ROOT = Path(__file__).resolve().parents[1]


def _committed(path: Path) -> int:
    try:
        with EpisodeStore.open(path, mode="r") as store:
            return len(store)
    except Exception:  # not created yet
        return 0


def test_sigkilled_import_resumes_without_duplicates(tmp_path):
    info = make_calvin_split(tmp_path / "calvin", episode_lens=(60, 60, 60), lang_per_episode=10, lang_len=12,
                             static_size=96, gripper_size=32)
    n = len(info.annotations)
    out = tmp_path / "s.zarr"
    cmd = [sys.executable, "-m", "dp", "import", "calvin", str(tmp_path / "calvin"), "--out", str(out), "--workers", "2", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while _committed(out) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the importer and its decoding workers, mid-import
        proc.wait()
    done_before = _committed(out)
    assert 2 <= done_before < n, f"the kill should land mid-import ({done_before} of {n} committed)"

    card, items = calvin_import.plan_import(tmp_path / "calvin")
    report = run_import(items, out, card, workers=0, progress=False)
    assert report.already_present == done_before and report.added == n - done_before
    with EpisodeStore.open(out) as store:
        assert len(store) == n
        assert sorted(store.meta_column("source_index")) == list(range(n))  # each annotation exactly once
        for i in range(n):
            j = store.episode_meta(i)["source_index"]
            start, end = info.annotations[j][:2]
            want = np.stack([calvin_frame(t, static_size=96, gripper_size=32)["rel_actions"] for t in range(start, end + 1)])
            np.testing.assert_array_equal(store.get_episode(i, ["action"])["action"], want)

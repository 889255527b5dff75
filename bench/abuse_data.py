"""Bad input on the data side (issue 35): three attacks rerun with the real `dp` CLI, each in a subprocess.

1. ``swapped_episode_index``: two rows of a LeRobot data file trade their ``episode_index`` (episode
   0's last row and episode 1's first). `dp import lerobot` must refuse with one line naming the
   file, the row and both episodes and write nothing; with ``--skip-bad`` it must import exactly
   the untouched episode 2.
2. ``truncated_meta_episodes``: ``meta/episodes/chunk-000/file-000.parquet`` cut in half: one line
   naming the file, no store.
3. ``truncated_store_chunk``: a chunk of an episode store cut in half: `dp export-data lerobot` and
   `dp train` (a camera shard read by both) and `dp info` (``meta/episode_ends``) must end with one
   line naming the store and the array, and leave no export or checkpoint behind.

The LeRobot folder is written by `dp export-data lerobot` from a small synthetic store and corrupted
with pyarrow; everything happens in a temporary folder, with relative paths. Prints JSON (and
writes ``--out``, default bench/results/abuse_data.json): per run the command, its exit code, the
number of stderr lines, the first one, ``clean`` (the output holds no wrong data) and ``ok`` (all
as required).

  python bench/abuse_data.py
  python bench/abuse_data.py --no-train      # without the `dp train` run (it loads torch: ~15 s)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import emit  # noqa: E402
from dp.data.store import EpisodeStore  # noqa: E402
from dp.testing.format_fixtures import make_sim_store  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
LENS = (9, 6, 11)
DATA_FILE = "data/chunk-000/file-000.parquet"
EPISODES_FILE = "meta/episodes/chunk-000/file-000.parquet"


def dp(work: Path, *args: str) -> dict[str, Any]:
    """Run `dp ARGS` in ``work``: the command, its exit code, its stderr's line count and first line."""
    result = subprocess.run([sys.executable, "-m", "dp", *args], cwd=work, env=ENV, capture_output=True, text=True, timeout=600)
    lines = result.stderr.splitlines()
    return {"command": "dp " + " ".join(args), "exit_code": result.returncode, "stderr_lines": len(lines),
            "first_line": lines[0] if lines else "", "stdout": result.stdout}


def refused(run: dict[str, Any], clean: bool) -> dict[str, Any]:
    """The record of a run that must fail: one line of stderr, exit 1, nothing wrong left behind."""
    run.pop("stdout")
    run["clean"] = clean
    run["ok"] = run["exit_code"] == 1 and run["stderr_lines"] == 1 and clean
    return run


def cut(path: Path) -> None:
    """Truncate a file to half its bytes."""
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])


def swap_episode_index(path: Path, a: int, b: int) -> None:
    table = pq.read_table(path)
    index = table.column("episode_index").to_numpy().copy()
    index[[a, b]] = index[[b, a]]
    pq.write_table(table.set_column(table.schema.get_field_index("episode_index"), "episode_index", pa.array(index)), path)


def swapped_episode_index(work: Path) -> dict[str, Any]:
    shutil.copytree(work / "lerobot", work / "swapped")
    swap_episode_index(work / "swapped" / DATA_FILE, LENS[0] - 1, LENS[0])
    args = ("import", "lerobot", "swapped", "--workers", "0", "--no-progress")
    refuse = refused(dp(work, *args, "--out", "swapped.zarr"), clean=not (work / "swapped.zarr").exists())
    skip = dp(work, *args, "--out", "skipped.zarr", "--skip-bad")
    skip["skipped"] = [line.removeprefix("  - ") for line in skip.pop("stdout").splitlines() if line.startswith("  - ")]
    with EpisodeStore.open(work / "src.zarr") as src, EpisodeStore.open(work / "skipped.zarr") as got:
        skip["imported_source_episodes"] = got.meta_column("source_index")
        skip["clean"] = skip["imported_source_episodes"] == [2] and all(
            np.array_equal(got.get_episode(0)[k], src.get_episode(2)[k]) for k in ("action", "object"))
    skip["ok"] = skip["exit_code"] == 0 and skip["stderr_lines"] == 0 and skip["clean"] and len(skip["skipped"]) == 2
    return {"refused": refuse, "skip_bad": skip}


def truncated_meta_episodes(work: Path) -> dict[str, Any]:
    shutil.copytree(work / "lerobot", work / "cut_meta")
    cut(work / "cut_meta" / EPISODES_FILE)
    run = dp(work, "import", "lerobot", "cut_meta", "--out", "cut_meta.zarr", "--workers", "0", "--no-progress")
    return {"import": refused(run, clean=not (work / "cut_meta.zarr").exists())}


def truncated_store_chunk(work: Path, train: bool) -> dict[str, Any]:
    """One 300-frame episode: a read of it spans both shards of a camera (zarr decodes them in
    concurrent tasks, which is where the asyncio noise came from)."""
    for name, chunk in (("cut_data.zarr", "data/agentview_image/c/0/0/0/0"), ("cut_ends.zarr", "meta/episode_ends/c/0")):
        make_sim_store(work / name, episode_lens=(300,), image_size=8)
        cut(work / name / chunk)
    export = dp(work, "export-data", "lerobot", "cut_data.zarr", "--out", "exported", "--no-progress")
    info = dp(work, "info", "cut_ends.zarr")
    runs = {"export_data": refused(export, clean=not (work / "exported").exists()),
            "info": refused(info, clean=not info["stdout"])}
    if train:
        run = dp(work, "train", "--data", "cut_data.zarr", "--preset", "tiny", "--out", "run", "--no-progress",
                 "train.steps=1", "data.images=true")
        runs["train"] = refused(run, clean=not (work / "run" / "checkpoints").exists())
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-train", action="store_true", help="leave out the `dp train` run of attack 3")
    parser.add_argument("--out", type=Path, default=RESULTS / "abuse_data.json", help="write the JSON here too")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dp_abuse_data_") as tmp:
        work = Path(tmp)
        make_sim_store(work / "src.zarr", episode_lens=LENS, image_size=16)
        export = dp(work, "export-data", "lerobot", "src.zarr", "--out", "lerobot", "--no-progress")
        if export["exit_code"]:
            raise SystemExit(f"the LeRobot folder could not be written: {export['first_line']}")
        attacks = {"swapped_episode_index": swapped_episode_index(work),
                   "truncated_meta_episodes": truncated_meta_episodes(work),
                   "truncated_store_chunk": truncated_store_chunk(work, train=not args.no_train)}
    out = {"attacks": attacks, "all_ok": all(run["ok"] for runs in attacks.values() for run in runs.values())}
    emit(out, started, args.out)
    return 0 if out["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Import throughput: CALVIN-shaped frames and LIBERO-shaped demos into an episode store. Prints JSON.

CALVIN: per-frame npz files with a 200x200 static and an 84x84 gripper camera (plus depth, tactile
and the low-dim fields, as the real files hold), imported as 64-frame language windows.
LIBERO: task files with two 128x128 cameras. Images carry sensor-like noise so they compress about
as real camera frames do. Besides the end-to-end rate (`frames_per_s`, pool start-up included),
the two halves are timed alone: decoding in the worker pool without writing, and the store's
staging and batched commits of already decoded episodes, as the importer does (the single writer).
Target: >= 1,000 CALVIN frames/s on 2 cores.

    python bench/import_throughput.py [--windows 30] [--demos 12] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WINDOW = 64
# The dp imports live inside the functions: spawned decoding workers re-import this module, and
# they should pay only for what decoding needs (as they do under `dp import`).


def _cpu_s() -> tuple[float, float]:
    """CPU seconds so far of this process (all threads) and of its reaped children (pool workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time(), children.ru_utime + children.ru_stime


def _phases(card, items, workers: int, scratch: Path) -> dict[str, Any]:
    """End-to-end import, decode-only and write-only rates for one planned import.

    Wall-clock rates depend on what else runs on the machine; CPU milliseconds per frame do not
    (much), so the JSON also gives the rate they imply for 2 otherwise idle cores.
    """
    from dp.data.formats.pipeline import BATCH_EPISODES, BATCH_FRAMES, run_import
    from dp.data.formats.workers import call, ordered_map
    from dp.data.store import EpisodeStore

    frames = sum(it.n_frames for it in items)
    out = scratch / "store.zarr"
    cpu0 = _cpu_s()
    report = run_import(items, out, card, workers=workers, progress=False)
    cpu1 = _cpu_s()
    assert report.added == len(items), report.summary()
    shutil.rmtree(out)

    start = time.perf_counter()
    decoded = [fut.result() for fut in ordered_map(call, ((it.job, it.args) for it in items), workers)]
    decode_s = time.perf_counter() - start
    cpu2 = _cpu_s()

    store = EpisodeStore.create(out, control_freq=card.control_freq, roles=card.roles(list(decoded[0])),
                                discrete_dims=card.discrete_dims(list(decoded[0])))
    start = time.perf_counter()
    staged: list[int] = []
    for i, data in enumerate(decoded):  # staged and committed in batches, as run_import does
        store.stage_episode(data, {"source_file": "bench", "source_index": i})
        staged.append(len(next(iter(data.values()))))
        if len(staged) >= BATCH_EPISODES or sum(staged) >= BATCH_FRAMES:
            store.commit()
            staged = []
    store.commit()
    write_s = time.perf_counter() - start
    cpu3 = _cpu_s()
    store.close()
    shutil.rmtree(out)
    import_cpu_ms = ((cpu1[0] - cpu0[0]) + (cpu1[1] - cpu0[1])) * 1000 / frames
    return {
        "frames": frames,
        "episodes": len(items),
        "seconds": round(report.seconds, 3),
        "frames_per_s": round(report.frames_per_s, 1),
        "decode_only_frames_per_s": round(frames / decode_s, 1),
        "store_write_only_frames_per_s": round(frames / write_s, 1),
        "cpu_ms_per_frame": {
            "import_total": round(import_cpu_ms, 3),
            "decode_in_workers": round((cpu2[1] - cpu1[1]) * 1000 / frames, 3),
            "store_write": round((cpu3[0] - cpu2[0]) * 1000 / frames, 3),
        },
        "frames_per_s_implied_by_cpu_on_2_idle_cores": round(2000 / import_cpu_ms, 1),
    }


def main() -> None:
    from dp.data.formats import calvin_import, libero_import
    from dp.testing.format_fixtures import make_calvin_split, make_libero_file
    from dp.data.formats.workers import keep_freed_memory

    keep_freed_memory()  # as `dp import` does

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=30, help="CALVIN language windows of 64 frames (default 30)")
    parser.add_argument("--demos", type=int, default=12, help="LIBERO demos of 100 frames (default 12)")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes (default 2)")
    parser.add_argument("--noise", type=int, default=6, help="sensor noise in grey levels (default 6)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dp-import-bench-") as tmp:
        scratch = Path(tmp)
        start = time.perf_counter()
        make_calvin_split(scratch / "calvin", episode_lens=(WINDOW * args.windows,), lang_per_episode=args.windows,
                          lang_len=WINDOW, extras=True, noise=args.noise)
        make_libero_file(scratch / "libero" / "BENCH_TASK_demo.hdf5", demo_lens=(100,) * args.demos, image_size=128, noise=args.noise)
        generate_s = time.perf_counter() - start
        npz_bytes = sum(p.stat().st_size for p in (scratch / "calvin" / "training").glob("*.npz"))

        card, items = calvin_import.plan_import(scratch / "calvin")
        calvin_result = {"image_sizes": {"rgb_static": 200, "rgb_gripper": 84}, "window": WINDOW,
                         "npz_kb_per_frame": round(npz_bytes / (WINDOW * args.windows) / 1024, 1),
                         **_phases(card, items, args.workers, scratch)}
        card, items = libero_import.plan_import([scratch / "libero"])
        libero_result = {"image_sizes": {"agentview": 128, "eye_in_hand": 128}, **_phases(card, items, args.workers, scratch)}

    print(json.dumps({
        "cpu_count": os.cpu_count(),
        "workers": args.workers,
        "calvin": calvin_result,
        "libero": libero_result,
        "target_calvin_frames_per_s": 1000,
        "calvin_meets_target": calvin_result["frames_per_s"] >= 1000,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "generate_seconds": round(generate_s, 1),
    }, indent=2))


if __name__ == "__main__":
    main()

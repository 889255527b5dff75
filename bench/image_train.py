"""Image training speed with CALVIN-shaped inputs: is data loading the bottleneck? Prints JSON.

A CALVIN split is generated (bench/import_throughput.py's generator: per-frame npz with a 200x200 static
and an 84x84 gripper camera carrying sensor-like noise, 384-d language embeddings) and imported with
`dp import calvin` (one episode per 64-frame language window; images kept at their stored sizes). Then,
with the `calvin` preset (both cameras resized to `model.image_size` inside the encoder, language goal,
batch 32), through the training code itself (`dp.train.trainer.Trainer`: the same WindowDataset,
ResumableSampler, DataLoader with 2 workers, `_to_device` and `train_step`):

  (a) loader alone: the Trainer's DataLoader (2 workers) drained without training: windows/s
  (b) training step alone: `train_step` on batches loaded beforehand: samples/s
  (c) end to end: the training loop as `Trainer.fit` runs it: samples/s, and the share of wall time
      spent waiting for the next batch

Target: (a) >= 3 x (b), so loading is not the bottleneck. Also reported: the in-process cost of one
window (`WindowDataset.__getitems__` on one core), from which the 2-worker rate is bounded.

    python bench/image_train.py --quick            # under a minute or two
    python bench/image_train.py [--json-out FILE]  # a few minutes
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch, as `dp train` does

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import emit  # noqa: E402

WINDOW = 64  # frames per CALVIN language window (one imported episode each)
TARGET_RATIO = 3.0


def make_calvin_store(scratch: Path, windows: int, noise: int = 6, workers: int = 2) -> tuple[Path, dict[str, Any]]:
    """A CALVIN split of ``windows`` language windows, imported with `dp import calvin`; (store, report)."""
    from dp.cli import main
    from dp.testing.format_fixtures import make_calvin_split

    t0 = time.perf_counter()
    make_calvin_split(scratch / "calvin", episode_lens=(WINDOW * windows,), lang_per_episode=windows, lang_len=WINDOW, noise=noise)
    generate_s = time.perf_counter() - t0
    store = scratch / "calvin.zarr"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["import", "calvin", str(scratch / "calvin"), "--out", str(store), "--workers", str(workers), "--json", "--no-progress"])
    if rc != 0:
        raise RuntimeError(f"dp import calvin exited with {rc}")
    report = json.loads(out.getvalue())
    return store, {"frames": report["frames"], "episodes": report["added"], "generate_s": round(generate_s, 1),
                   "import_frames_per_s": report["frames_per_s"]}


def _batches(loader, n: int, skip: int = 0):
    """``n`` batches from ``loader`` (epochs restart as needed), after ``skip`` untimed ones."""
    got = 0
    while True:
        for batch in loader:
            yield got >= skip, batch
            got += 1
            if got >= skip + n:
                return


def loader_alone(trainer, batches: int) -> dict[str, Any]:
    """(a) The Trainer's DataLoader drained without training. Untimed: worker start-up and the batches the
    workers prefetched meanwhile (``num_workers * prefetch_factor``), so the rate is the workers' steady rate."""
    loader = trainer.loader
    warmup = max(2, loader.num_workers * (loader.prefetch_factor or 0) + 1)
    windows, t0 = 0, None
    for timed, batch in _batches(loader, batches, warmup):
        if timed and t0 is None:
            t0 = time.perf_counter()
        if timed:
            windows += len(batch["action"])
    elapsed = time.perf_counter() - t0
    return {"windows_per_s": round(windows / elapsed, 1), "batches": batches, "windows": windows, "seconds": round(elapsed, 2),
            "num_workers": loader.num_workers, "untimed_warmup_batches": warmup}


def in_process_window_ms(trainer, windows: int = 256) -> float:
    """One core's cost of one window: ``WindowDataset.__getitems__`` in this process (what one worker does)."""
    import numpy as np

    data = trainer.data.train
    idx = np.random.default_rng(0).integers(0, len(data), size=windows).tolist()
    data.__getitems__(idx[:8])  # open readers
    t0 = time.perf_counter()
    for start in range(0, windows, trainer.batch_size):
        data.__getitems__(idx[start : start + trainer.batch_size])
    return 1000 * (time.perf_counter() - t0) / windows


def step_alone(trainer, steps: int, warmup: int, preload: int = 4) -> dict[str, Any]:
    """(b) ``train_step`` on ``preload`` batches loaded beforehand (cycled), ``warmup`` steps untimed."""
    ready = [trainer._to_device(b, trainer.train_map) for _, b in _batches(trainer.loader, preload)]
    for i in range(warmup):
        trainer.train_step(ready[i % len(ready)])
    t0 = time.perf_counter()
    for i in range(steps):
        out = trainer.train_step(ready[i % len(ready)])
    float(out["loss"])
    elapsed = time.perf_counter() - t0
    return {"samples_per_s": round(steps * trainer.batch_size / elapsed, 1), "s_per_step": round(elapsed / steps, 4),
            "steps": steps, "batch_size": trainer.batch_size}


def end_to_end(trainer, steps: int, warmup: int) -> dict[str, Any]:
    """(c) The loop of ``Trainer.fit``: next batch from the loader, ``_to_device``, ``train_step``; the time
    spent in ``next()`` (and the host-to-device copy) is the time waiting on data."""
    wait = compute = 0.0
    done = 0
    t_last = time.perf_counter()
    for timed, raw in _batches(trainer.loader, steps, warmup):
        batch = trainer._to_device(raw, trainer.train_map)
        t_got = time.perf_counter()
        trainer.train_step(batch)
        t_done = time.perf_counter()
        if timed:
            wait += t_got - t_last
            compute += t_done - t_got
            done += 1
        t_last = t_done
    total = wait + compute
    return {"samples_per_s": round(done * trainer.batch_size / total, 1), "s_per_step": round(total / done, 4), "steps": done,
            "data_wait_share": round(wait / total, 4), "data_wait_s": round(wait, 3), "step_s": round(compute, 3)}


def run_bench(scratch: Path, *, windows: int, loader_batches: int, steps: int, e2e_steps: int, workers: int = 2,
              overrides: list[str] = ()) -> dict[str, Any]:
    import torch

    from dp.config import build_config
    from dp.train.trainer import Trainer

    scratch = Path(scratch)
    store, made = make_calvin_store(scratch, windows, workers=workers)
    cfg = build_config("calvin", ["train.val_every=1000000000", "train.ckpt_every=1000000000", f"train.num_workers={workers}", *overrides])
    trainer = Trainer(cfg, [str(store)], scratch / "run", resume=False, progress=False)
    try:
        rcfg = trainer.cfg
        shapes = {k: rcfg.data.shapes[k] for k in rcfg.data.image_keys}
        sizes = {k: rcfg.model.image_sizes.get(k, rcfg.model.image_size or shapes[k][0]) for k in rcfg.data.image_keys}
        a = loader_alone(trainer, loader_batches)
        b = step_alone(trainer, steps, warmup=2)
        c = end_to_end(trainer, e2e_steps, warmup=2)
        window_ms = in_process_window_ms(trainer)
    finally:
        trainer.close()
    ratio = a["windows_per_s"] / b["samples_per_s"]
    return {
        "preset": "calvin",
        "device": str(trainer.device),
        "torch_threads": torch.get_num_threads(),
        "store": {**made, "train_windows": len(trainer.data.train), "stored_image_shapes": shapes, "model_input_sizes": sizes,
                  "obs_keys": [*rcfg.data.lowdim_keys, *rcfg.data.image_keys], "goal": rcfg.model.goal,
                  "obs_horizon": rcfg.data.obs_horizon, "action_horizon": rcfg.data.action_horizon},
        "loader_alone": a,
        "step_alone": b,
        "end_to_end": c,
        "in_process_ms_per_window": round(window_ms, 3),
        "in_process_windows_per_s_one_core": round(1000 / window_ms, 1),
        "loader_over_step_ratio": round(ratio, 2),
        "target_ratio": TARGET_RATIO,
        "meets_target": bool(ratio >= TARGET_RATIO),
    }


QUICK = {"windows": 8, "loader_batches": 60, "steps": 4, "e2e_steps": 8}
FULL = {"windows": 30, "loader_batches": 300, "steps": 20, "e2e_steps": 40}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"a small run: {QUICK}")
    parser.add_argument("--windows", type=int, help="CALVIN language windows of 64 frames to generate and import")
    parser.add_argument("--loader-batches", type=int, help="timed batches for (a)")
    parser.add_argument("--steps", type=int, help="timed steps for (b)")
    parser.add_argument("--e2e-steps", type=int, help="timed steps for (c)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (and import workers); default 2")
    parser.add_argument("--json-out", type=Path, help="also write the JSON here")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="extra config overrides on the calvin preset")
    args = parser.parse_args()
    params = dict(QUICK if args.quick else FULL)
    for key in params:
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dp-image-train-bench-") as tmp:
        out = {"mode": "quick" if args.quick else "full", "cpu_count": os.cpu_count(),
               **run_bench(Path(tmp), **params, workers=args.workers, overrides=args.overrides)}
    emit(out, t0, args.json_out)


if __name__ == "__main__":
    main()

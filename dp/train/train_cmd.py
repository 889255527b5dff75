"""Train a MoDE diffusion policy on one or more episode stores (several stores: one multitask policy).

Examples:
  dp train --data data/lift.zarr --preset small --out runs/lift
  dp train --data data/lift.zarr,data/can.zarr --out runs/multi model.n_layers=6 train.steps=40000
  dp train --data data/lift.zarr --out runs/lift_img data.images=true
  dp train --out runs/lift --resume                      continue at the same step, same data order
  dp train --out runs/lift --resume train.steps=20000    train on: the learning-rate schedule stretched to 20000 steps
  dp train --data data/lift.zarr --out runs/ddp --nproc 2   (= torchrun --nproc-per-node 2 -m dp.train ...)
  dp train --data data/lift.zarr --out runs/gpu train.device=cuda

Overrides are `section.key=value` for the sections model, diffusion, train, data (see
dp/config.py). `--experts 1` trains the dense twin: one expert as wide as the top-k experts
together, so the same active FLOPs per step. The run folder gets config.yaml, metrics.jsonl,
loss.png and atomic checkpoints (model.safetensors holds the EMA weights). `train.device` (cpu,
cuda, cuda:N, mps; default auto: cuda if there is one, else cpu) is where training runs; on CUDA each
of the --nproc processes takes its own GPU, so --nproc above the machine's GPU count is refused.

Several machines: start torchrun on each node with the same rendezvous, e.g.
  torchrun --nnodes 2 --node-rank R --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint HOST0:29500 -m dp.train --data STORE --out RUN
Rank 0 writes the run folder; put it on a shared filesystem so that --resume finds it on every node.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from dp.config import Config, apply_overrides, build_config, load_config, preset_names
from dp.devices import check_local_processes
from dp.errors import DpError

# OpenMP threads that spin while waiting make torch up to ~8x slower when another process wants the
# same cores (measured on this 2-core machine); passive waiting costs next to nothing when idle.
# It must be set before torch is imported, which this module does not do.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


EXAMPLE = "dp train --data data/lift.zarr --preset small --out runs/lift train.steps=3000"  # ends `dp train --help`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="episode store(s), comma-separated (on --resume: defaults to the run's stores)")
    parser.add_argument("--preset", help=f"model/training preset: {', '.join(preset_names())} (default: small; on --resume: the run's)")
    parser.add_argument("--out", required=True, type=Path, help="run folder (created; holds config, metrics and checkpoints)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    parser.add_argument("--nproc", type=int, default=1, help="training processes on this machine (DDP through torchrun; default 1)")
    parser.add_argument("--experts", type=int, help="number of experts; fewer than top_k widens them to keep the active FLOPs (1 = the dense twin)")
    parser.add_argument("--json", action="store_true", help="print the final summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. model.n_layers=4 train.steps=2000")


def _in_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def _spawn_torchrun(args: argparse.Namespace) -> int:
    """Re-run this command under torchrun (standalone rendezvous on this machine), one process per --nproc."""
    argv = ["--out", str(args.out)]
    for flag, value in (("--data", args.data), ("--preset", args.preset), ("--experts", args.experts)):
        if value is not None:
            argv += [flag, str(value)]
    argv += [flag for flag, on in (("--resume", args.resume), ("--json", args.json), ("--no-progress", args.no_progress)) if on]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
           "-m", "dp.train", *argv, *args.overrides]
    return subprocess.call(cmd)


def make_config(args: argparse.Namespace) -> tuple[Config, list[str]]:
    """The run's configuration and its stores from the command line (and, on --resume, the run)."""
    from dp.models import checkpoint_files as ckpt

    overrides = list(args.overrides)
    if args.resume:
        latest = ckpt.latest_checkpoint(args.out)
        saved_path = latest / ckpt.CONFIG_FILE if latest else args.out / ckpt.CONFIG_FILE
        if not saved_path.is_file():
            raise DpError(f"{args.out}: nothing to resume (no config.yaml or checkpoint)")
        saved = load_config(saved_path)
        if args.preset and args.preset != saved.preset:
            # another preset's architecture: build it, so the weight check names what differs
            cfg = build_config(args.preset, overrides)
            cfg.data.stores = list(saved.data.stores)
        else:
            cfg = apply_overrides(saved, overrides)
    else:
        cfg = build_config(args.preset or "small", overrides)
    if args.experts is not None:
        set_experts(cfg, args.experts, widen=not any(o.startswith("model.expert_hidden=") for o in overrides))
    paths = [p for p in args.data.split(",") if p] if args.data else list(cfg.data.stores)
    if not paths:
        raise DpError("no training data: pass --data STORE[,STORE...]")
    return cfg, paths


def set_experts(cfg: Config, n: int, widen: bool) -> None:
    """``n`` experts; if that is fewer than top_k, top_k drops to n and (unless the width was given)
    each expert widens by the same factor, keeping the active FLOPs: ``--experts 1`` is the dense twin."""
    if n < 1:
        raise DpError(f"--experts must be >= 1, got {n}")
    m = cfg.model
    k = min(m.top_k, n)
    if widen and k < m.top_k:
        m.expert_hidden = m.expert_hidden * m.top_k // k
    m.n_experts, m.top_k = n, k


def run(args: argparse.Namespace) -> int:
    if args.nproc < 1:
        raise DpError(f"--nproc must be >= 1, got {args.nproc}")
    if args.nproc > 1 and not _in_torchrun():
        cfg, _ = make_config(args)  # the run's train.device, so that missing GPUs are refused before torchrun starts
        check_local_processes(cfg.train.device, args.nproc, f"--nproc {args.nproc} with train.device={cfg.train.device}")
        return _spawn_torchrun(args)
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0 and not args.resume:
        from dp.models import checkpoint_files as ckpt

        # torchrun --max-restarts reruns the same command line: carry on from the last checkpoint
        args.resume = ckpt.latest_checkpoint(args.out) is not None
    cfg, paths = make_config(args)
    from dp.train.trainer import train

    summary = train(cfg, paths, args.out, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        if args.json:
            print(json.dumps(summary))
        else:
            figures = ", ".join(f"{k}={summary[k]:.4g}" for k in ("loss", "val_loss", "val_action_mse") if isinstance(summary.get(k), float))
            print(f"trained {summary['step']} steps in {summary['wall_s']:.0f} s on {summary['device']} ({summary['precision']}; {figures}); "
                  f"checkpoint: {args.out}")
    return 0

"""dp's policy trained through LeRobot (the ``mode`` plugin, docs/lerobot.md) against ``dp train``: windows/s
of each at the same preset, size, batch and torch threads (``--threads``, default the CPU count) and, unless
told otherwise, data-loader workers, and their ratio (the target: the plugin at >= 80% of dp); then, with
``--episodes N``, the plugin's weights evaluated by ``lerobot-eval`` in LeRobot's Push-T environment and,
converted with ``to-dp``, by ``dp eval --task pusht --split test``.
Prints JSON (with every command it ran) and writes it to ``--json-out``.

Runs from dp's environment; LeRobot's side runs in LeRobot's virtualenv (``--venv``, default
``$DP_PEERS_LEROBOT_VENV`` or ~/.cache/dp-peers/lerobot; bench/peers/setup_lerobot.sh) with dp and the
plugin installed there. The data: Diffusion Policy's Push-T demonstrations (all, or the first
``--demos N``) imported as a dp store (card ``pusht`` for ``--obs image``, ``pusht_keypoints`` for
``--obs state``) and written as a LeRobot dataset by ``dp export-data lerobot`` (the view named
``observation.image``, as LeRobot's Push-T environment names it). windows/s come from each trainer's
own log after its first logging interval (warm-up): LeRobot's per-step update + data-loading time,
dp's ``samples_per_s``. LeRobot's Push-T environment gives no Diffusion Policy keypoints, so a state
policy is evaluated by ``dp eval`` only.

    python bench/lerobot_plugin.py --obs image --demos 3 --steps 20 --batch 8 --episodes 2 \\
        --overrides model.d_model=32 model.n_layers=1 --json-out /tmp/lerobot_plugin_smoke.json       # smoke
    python bench/lerobot_plugin.py --obs image --steps 200 --threads 1 --workers 1                     # speed
    python bench/lerobot_plugin.py --obs image --steps 2500 --threads 1 --workers 0 --parts lerobot,eval \\
        --episodes 100 --save-every 500                                   # the figures (after a stop: --resume)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import emit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PUSHT = REPO.parent / "shared" / "data" / "pusht" / "pusht_cchi_v7_replay.zarr"
PRESETS = {"image": "pusht-image", "state": "pusht"}
CARDS = {"image": "pusht", "state": "pusht_keypoints"}


def sh(cmd: list[str], log: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run ``cmd``; its output (also kept in ``log``); a clear error with its tail when it fails."""
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    text = out.stdout + out.stderr
    if log is not None:
        log.write_text(text)
    if out.returncode != 0:
        raise SystemExit(f"failed ({out.returncode}): {shlex.join(cmd)}\n{text[-3000:]}")
    return text


def prepare(args: argparse.Namespace) -> tuple[Path, Path]:
    """(dp store, LeRobot dataset) of the Push-T demonstrations, made once under ``--work``."""
    store, dataset = args.work / f"pusht_{args.obs}.zarr", args.work / f"pusht_{args.obs}_lerobot"
    if dataset.is_dir():
        return store, dataset
    src = args.src
    if args.demos:
        import zarr

        full = zarr.open_group(str(args.src), mode="r")
        stop = int(full["meta/episode_ends"][args.demos - 1])
        src = args.work / f"pusht_first{args.demos}.zarr"
        small = zarr.open_group(str(src), mode="w", zarr_format=2)
        for key in ("img", "state", "keypoint", "action"):
            small.create_array(f"data/{key}", data=full[f"data/{key}"][:stop])
        small.create_array("meta/episode_ends", data=full["meta/episode_ends"][: args.demos])
    dp = [sys.executable, "-m", "dp"]
    sh([*dp, "import", "dp-zarr", str(src), "--card", CARDS[args.obs], "--out", str(store), "--no-progress"])
    names = ["--map", "img=observation.image"] if args.obs == "image" else []
    sh([*dp, "export-data", "lerobot", str(store), "--out", str(dataset), *names, "--no-progress"])
    return store, dataset


def lerobot_train(args: argparse.Namespace, dataset: Path) -> dict[str, Any]:
    """``lerobot-train --policy.type=mode``; windows/s = batch / (update + data-loading seconds per step), and
    update_windows_per_s = batch / update seconds (what the plugin's step would give with free data loading)."""
    out = args.work / "lerobot_run"
    overrides = "[" + ", ".join(json.dumps(o) for o in args.overrides) + "]"
    if args.resume:  # lerobot-train's own resume: the saved train_config.json, the optimiser and the step counter
        cmd = [str(args.venv / "bin" / "lerobot-train"), f"--config_path={out / 'checkpoints' / 'last' / 'pretrained_model' / 'train_config.json'}",
               "--resume=true"]
    else:
        cmd = [str(args.venv / "bin" / "lerobot-train"), "--policy.type=mode", f"--policy.preset={args.preset}",
               f"--policy.overrides={overrides}", f"--policy.device={args.device}", f"--policy.use_amp={str(args.amp).lower()}",
               "--dataset.repo_id=local/pusht", f"--dataset.root={dataset}", f"--dataset.video_backend={args.video_backend}",
               f"--steps={args.steps}", f"--batch_size={args.batch}", f"--num_workers={args.lerobot_workers}", f"--log_freq={args.log_every}",
               f"--save_freq={args.save_every or args.steps}", "--eval_freq=0", "--seed=0", f"--output_dir={out}", "--wandb.enable=false"]
    t0 = time.perf_counter()
    text = sh(cmd, args.work / ("lerobot_train_resumed.log" if args.resume else "lerobot_train.log"), env={"OMP_NUM_THREADS": str(args.threads)})  # torch's intra-op threads
    rows = [(float(u), float(d), float(loss)) for loss, u, d in
            re.findall(r"\bloss:([0-9.]+) .*?updt_s:([0-9.]+) data_s:([0-9.]+)", text)]
    steady = rows[1:] or rows
    per_step = sum(u + d for u, d, _ in steady) / len(steady)
    update = sum(u for u, _, _ in steady) / len(steady)  # the plugin's step alone, without LeRobot's data loading
    return {"command": shlex.join(cmd), "wall_s": round(time.perf_counter() - t0, 1), "windows_per_s": round(args.batch / per_step, 2),
            "update_windows_per_s": round(args.batch / update, 2),
            "s_per_step": round(per_step, 4), "data_s_per_step": round(sum(d for _, d, _ in steady) / len(steady), 4),
            "final_loss": rows[-1][2] if rows else None, "run": str(out)}


def dp_train(args: argparse.Namespace, store: Path) -> dict[str, Any]:
    """``dp train`` with the same preset, overrides, steps, batch, workers and threads; windows/s from its metrics."""
    out = args.work / "dp_run"
    cmd = [sys.executable, "-m", "dp", "train", "--data", str(store), "--preset", args.preset, "--out", str(out), "--no-progress",
           f"train.steps={args.steps}", f"train.batch_size={args.batch}", f"train.num_workers={args.workers}",
           f"train.log_every={args.log_every}", f"train.val_every={args.steps}", f"train.ckpt_every={args.steps}",
           f"train.device={args.device}", f"train.amp={str(args.amp).lower()}", f"train.threads={args.threads}", *args.overrides]
    t0 = time.perf_counter()
    sh(cmd, args.work / "dp_train.log")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    start = next(r for r in rows if r.get("event") == "start")
    train = [r for r in rows if r.get("event") == "train"]
    steady = train[1:] or train
    return {"command": shlex.join(cmd), "wall_s": round(time.perf_counter() - t0, 1),
            "windows_per_s": round(sum(r["samples_per_s"] for r in steady) / len(steady), 2),
            "precision": start.get("precision"), "final_loss": round(train[-1]["loss"], 4), "run": str(out)}


def interval_summary(scores: list[float], successes: list[bool]) -> dict[str, Any]:
    from dp.stats import mean_interval, wilson_interval

    return {"episodes": len(scores), "mean_score": round(sum(scores) / len(scores), 4),
            "score_interval_95": [round(v, 4) for v in mean_interval(scores)],
            "success_rate": round(sum(successes) / len(successes), 4),
            "success_interval_95": [round(v, 4) for v in wilson_interval(sum(successes), len(successes))]}


def lerobot_eval(args: argparse.Namespace, pretrained: Path) -> dict[str, Any]:
    """``lerobot-eval`` in LeRobot's Push-T environment; score = max coverage reward per episode."""
    out = args.work / "lerobot_eval"
    cmd = [str(args.venv / "bin" / "lerobot-eval"), f"--policy.path={pretrained}", f"--policy.device={args.device}",
           "--env.type=pusht", f"--eval.n_episodes={args.episodes}", f"--eval.batch_size={min(args.episodes, args.eval_batch)}",
           f"--output_dir={out}"]
    t0 = time.perf_counter()
    sh(cmd, args.work / "lerobot_eval.log")
    metrics = json.loads((out / "eval_info.json").read_text())["per_task"][0]["metrics"]
    return {"command": shlex.join(cmd), "wall_s": round(time.perf_counter() - t0, 1),
            **interval_summary([float(v) for v in metrics["max_rewards"]], [bool(v) for v in metrics["successes"]])}


def dp_eval(args: argparse.Namespace, pretrained: Path) -> dict[str, Any]:
    """The same weights as a dp checkpoint (``to-dp``), by ``dp eval --task pusht --split test``."""
    folder, figures = args.work / "lerobot_run_as_dp", args.work / "dp_eval.json"
    convert = [str(args.venv / "bin" / "python"), "-m", "lerobot_policy_mode.convert", "to-dp", str(pretrained), str(folder)]
    if not folder.is_dir():
        sh(convert)
    cmd = [sys.executable, "-m", "dp", "eval", str(folder), "--task", "pusht", "--split", "test", "--episodes", str(args.episodes),
           "--device", args.device, "--json-out", str(figures)]
    t0 = time.perf_counter()
    sh(cmd, args.work / "dp_eval.log")
    return {"convert": shlex.join(convert), "command": shlex.join(cmd), "wall_s": round(time.perf_counter() - t0, 1),
            "figures": json.loads(figures.read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--obs", choices=("image", "state"), default="image", help="image (pusht-image) or state (pusht keypoints) policy")
    parser.add_argument("--preset", default=None, help="dp preset (default: pusht-image / pusht)")
    parser.add_argument("--overrides", nargs="*", default=[], help="dp overrides for both trainers (section.key=value)")
    parser.add_argument("--steps", type=int, default=200, help="training steps of each (default 200)")
    parser.add_argument("--batch", type=int, default=64, help="batch size of each (default 64)")
    parser.add_argument("--workers", type=int, default=None, help="data-loader workers of each (default: dp's, 2 with images, else 0)")
    parser.add_argument("--lerobot-workers", type=int, default=None, help="lerobot-train's data-loader workers (default: --workers)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of each (default: the CPU count)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--amp", action="store_true", help="mixed precision in both (LeRobot's use_amp, dp's train.amp; default off: fp32)")
    parser.add_argument("--parts", default="lerobot,dp,eval", help="comma-separated, default all: lerobot (lerobot-train), dp (dp train; "
                        "with lerobot, the windows/s ratio), eval (with --episodes N: lerobot-train's weights under --work evaluated in both)")
    parser.add_argument("--save-every", type=int, default=0, help="lerobot-train's checkpoint interval (default: only at the end)")
    parser.add_argument("--resume", action="store_true", help="resume the lerobot-train run under --work from its last checkpoint, "
                        "with the settings it saved (--steps, --batch, ... are not read again)")
    parser.add_argument("--episodes", type=int, default=0, help="evaluation episodes of the plugin's weights in each (default 0: none)")
    parser.add_argument("--eval-batch", type=int, default=10, help="lerobot-eval's parallel environments (default 10)")
    parser.add_argument("--demos", type=int, default=0, help="use the first N demonstrations (default 0: all)")
    parser.add_argument("--src", type=Path, default=PUSHT, help="Diffusion Policy's pusht_cchi_v7_replay.zarr")
    parser.add_argument("--video-backend", default="pyav", help="LeRobot's video decoder (pyav or torchcodec; default pyav)")
    parser.add_argument("--venv", type=Path, default=Path(os.environ.get("DP_PEERS_LEROBOT_VENV", Path.home() / ".cache" / "dp-peers" / "lerobot")))
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench_lerobot_plugin", help="working folder (reused data)")
    parser.add_argument("--json-out", type=Path, default=REPO / "bench" / "results" / "lerobot_plugin.json")
    args = parser.parse_args()
    args.parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not args.parts <= {"lerobot", "dp", "eval"}:
        raise SystemExit(f"--parts {','.join(sorted(args.parts))}: choose from lerobot, dp, eval")
    if not args.episodes:
        args.parts.discard("eval")
    args.preset = args.preset or PRESETS[args.obs]
    args.workers = (2 if args.obs == "image" else 0) if args.workers is None else args.workers
    args.lerobot_workers = args.workers if args.lerobot_workers is None else args.lerobot_workers
    args.log_every = max(1, args.steps // 10)
    if not (args.venv / "bin" / "lerobot-train").is_file():
        raise SystemExit(f"no LeRobot virtualenv at {args.venv}: bash bench/peers/setup_lerobot.sh, then install dp and the plugin there (docs/lerobot.md)")
    if not args.src.is_dir():
        raise SystemExit(f"{args.src}: Diffusion Policy's Push-T replay (data/pusht of the Diffusion Policy release) not found; pass --src")
    fresh = {"lerobot": [] if args.resume else ["lerobot_run"], "dp": ["dp_run"], "eval": ["lerobot_eval", "lerobot_run_as_dp"]}
    for name in (name for part in sorted(args.parts) for name in fresh[part]):
        if (args.work / name).exists():
            raise SystemExit(f"{args.work / name} exists from an earlier run: remove it or choose another --work")
    if (args.resume or args.parts == {"eval"}) and not (args.work / "lerobot_run" / "checkpoints" / "last").exists():
        raise SystemExit(f"no lerobot-train checkpoint under {args.work / 'lerobot_run'} to resume or evaluate")
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    store, dataset = prepare(args)
    result: dict[str, Any] = {"obs": args.obs, "preset": args.preset, "overrides": args.overrides, "steps": args.steps, "batch_size": args.batch,
                              "workers": args.workers, "threads": args.threads, "lerobot_workers": args.lerobot_workers, "device": args.device, "amp": args.amp, "cpus": os.cpu_count(), "dataset": str(dataset)}
    if "lerobot" in args.parts:
        result["lerobot_train"] = lerobot_train(args, dataset)
    if "dp" in args.parts:
        result["dp_train"] = dp_train(args, store)
    if {"lerobot", "dp"} <= args.parts:
        result["ratio_windows_per_s"] = round(result["lerobot_train"]["windows_per_s"] / result["dp_train"]["windows_per_s"], 3)
    if "eval" in args.parts:
        pretrained = args.work / "lerobot_run" / "checkpoints" / "last" / "pretrained_model"
        result["lerobot_eval"] = lerobot_eval(args, pretrained) if args.obs == "image" else "not run: LeRobot's Push-T env has no 9-keypoint observation"
        result["dp_eval"] = dp_eval(args, pretrained)
    emit(result, started, args.json_out)


if __name__ == "__main__":
    main()

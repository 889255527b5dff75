"""Push-T from Diffusion Policy's 206 human demonstrations, in the real Push-T environment (gym-pusht),
the whole path with Diffusion Policy's protocol. Prints JSON.

Stages (each one skipped when its output is already in --work, so a long run can be continued):

1. import  `dp import dp-zarr SRC --card datasets/pusht_keypoints.yaml` (state) or `pusht.yaml` (image)
2. train   `dp train --data STORE --preset pusht|pusht-image --out WORK/run` (or --run an existing run)
3. curve   every checkpoint: `dp eval CKPT --task pusht --split val --episodes V`, against the training
           wall time of its step (metrics.jsonl; summed over resumed segments)
4. choose  the checkpoint with the best validation mean score (then success, then the earlier step)
5. rti     RTI settings (steps, start sigma, re-planning interval) of that checkpoint on validation seeds
6. test    on --test-episodes test seeds: torch, ONNX (`dp export`), ONNX with full sampling every N
           (the fair row beside RTI) and ONNX + RTI exported with the chosen settings
7. deploy  the ONNX + RTI export (with --skip-rti: the plain export, fully sampled) driven by `dp node`
           against the Push-T controller (`dp launch launch/pusht_deploy.yaml`, real time at 10 Hz) on the
           same test seeds

Score: per episode the maximum over at most 300 steps of min(coverage / 0.95, 1); success: coverage
reached 0.95 (Diffusion Policy's and LeRobot's protocol). Mean score with a 95% t-interval, success
rate with a 95% Wilson interval. Seeds: `dp eval --split val|test`, disjoint streams.

    python bench/pusht.py --src PUSHT_ZARR --work WORK [--run RUN] --json-out bench/results/pusht.json
    python bench/pusht.py --src PUSHT_ZARR --work WORK --quick          # minutes: tiny preset, few episodes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import best_row, emit, train_times, worst_latency  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CARDS = {"pusht": "pusht_keypoints", "pusht-image": "pusht"}
# RTI settings tried on validation seeds: (steps, start sigma, re-plan every N control steps)
RTI_GRID = ((1, 1.0, 4), (3, 1.0, 4), (3, 0.5, 8), (3, 2.0, 8))
QUICK = dict(steps=40, val_episodes=2, test_episodes=2, rti_grid=((1, 1.0, 4),))


def dp(*argv: str) -> str:
    """Run `dp ARGV` (one thread, as the evaluations here are single-episode loops); its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run([sys.executable, "-m", "dp.cli", *argv], capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"dp {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def command(*argv: str) -> str:
    return "dp " + " ".join(argv)


def eval_json(out: Path, *argv: str) -> dict[str, Any]:
    """`dp eval ARGV --json-out OUT`, or OUT as it is when an earlier run wrote it."""
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        dp("eval", *argv, "--task", "pusht", "--json-out", str(out), "--json")
    figures = json.loads(out.read_text())
    argv = tuple(str(figures["episodes"]) if i and argv[i - 1] == "--episodes" else a for i, a in enumerate(argv))  # as it ran
    keep = ("split", "episodes", "successes", "success_rate", "success_ci95", "mean_score", "score_ci95", "mean_length")
    return {"command": command("eval", *argv, "--task", "pusht"), "json": str(out), **{k: figures[k] for k in keep},
            "latency_ms": figures["latency_ms"]}


def curve(run: Path, work: Path, episodes: int, seed: int, steps: list[int] | None = None) -> list[dict[str, Any]]:
    """Every checkpoint (or those of ``steps``) on ``episodes`` validation seeds, with its training time."""
    times, cpu = train_times(run), train_times(run, "cpu_s")
    points = []
    for ckpt in sorted((run / "checkpoints").glob("step_*")):
        step = int(ckpt.name.split("_")[1])
        if steps is not None and step not in steps:
            continue
        fig = eval_json(work / "val" / f"{ckpt.name}.json", str(ckpt), "--split", "val", "--episodes", str(episodes), "--seed", str(seed))
        points.append({"step": step, "train_s": round(times.get(step, float("nan")), 1),
                       **({"train_cpu_s": round(cpu[step], 1)} if step in cpu else {}), "checkpoint": str(ckpt), **fig})
    return points


def choose(points: list[dict[str, Any]], last_step: int | None = None) -> dict[str, Any]:
    """The validation-curve point of the checkpoint to keep: the best mean score, then success, then the
    earlier step, among steps up to ``last_step`` (all by default)."""
    return best_row(sorted((p for p in points if last_step is None or p["step"] <= last_step), key=lambda p: p["step"]), "pusht")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, required=True, help="pusht_cchi_v7_replay.zarr (Diffusion Policy's Push-T data)")
    parser.add_argument("--work", type=Path, required=True, help="folder for the store, run, exports and eval JSONs (kept)")
    parser.add_argument("--preset", default="pusht", choices=sorted(CARDS), help="pusht (state, default) or pusht-image")
    parser.add_argument("--run", type=Path, help="an existing run of this preset (skips training)")
    parser.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    parser.add_argument("--last-step", type=int, help="choose among checkpoints up to this step (a run that trained on)")
    parser.add_argument("--val-episodes", type=int, default=50, help="validation episodes per checkpoint / setting (default 50)")
    parser.add_argument("--test-episodes", type=int, default=100, help="test episodes per reported row (default 100; 0: the curve only)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of both splits (default 0)")
    parser.add_argument("--curve-steps", type=lambda v: [int(x) for x in v.split(",")], default=None, metavar="S1,S2,...",
                        help="validate only the checkpoints of these steps (default: every checkpoint)")
    parser.add_argument("--rti-grid", type=lambda v: [(int(k), float(sg), int(e)) for k, sg, e in (t.split(",") for t in v.split(";"))],
                        default=None, metavar="K,SIGMA,EVERY;...", help=f"RTI settings tried on validation seeds (default {RTI_GRID})")
    parser.add_argument("--skip-rti-defaults", action="store_true", help="no test row of the export's default RTI settings")
    parser.add_argument("--skip-rti", action="store_true", help="no RTI grid and no RTI row")
    parser.add_argument("--deploy-episodes", type=int, default=None, help="episodes through the deploy path (default: --test-episodes; 0: none)")
    parser.add_argument("--deploy-parallel", type=int, default=2,
                        help="deploy runs at once (real time: 300 steps take 30 s), each on base seed 0, 1, ... (default 2)")
    parser.add_argument("--extra-cpu-s", type=float, default=0.0, metavar="SECONDS",
                        help="CPU seconds outside the trainer that its training budget counts (the roll-outs of `dp collect "
                             "--policy` a self-improved run trained on); added to every curve point's CPU time on the page")
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: tiny preset, {QUICK}")
    parser.add_argument("--json-out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    started = time.perf_counter()
    quick = QUICK if args.quick else {}
    val_n, test_n = quick.get("val_episodes", args.val_episodes), quick.get("test_episodes", args.test_episodes)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"bench": "pusht", "mode": "quick" if args.quick else "full", "preset": args.preset,
                           "protocol": "<= 300 steps; score max min(coverage/0.95, 1); success coverage >= 0.95",
                           "seed": args.seed, "val_episodes": val_n, "test_episodes": test_n}

    run = args.run
    if run is None:
        store = work / f"{CARDS[args.preset]}.zarr"
        card = ROOT / "datasets" / f"{CARDS[args.preset]}.yaml"
        argv = ["import", "dp-zarr", str(args.src), "--card", str(card), "--out", str(store)]
        if not store.exists():
            dp(*argv)
        out["import"] = {"command": command(*argv), "store": str(store)}
        run = work / "run"
        argv = ["train", "--data", str(store), "--preset", "tiny" if args.quick else args.preset, "--out", str(run), "--no-progress"]
        if args.quick:
            argv += ["data.obs_keys=[agent_pos,keypoint]" if args.preset == "pusht" else "data.obs_keys=[img,agent_pos]",
                     "data.obs_horizon=2", "data.action_horizon=16", "train.val_every=20", "train.ckpt_every=20"]
        steps = quick.get("steps", args.steps)
        argv += [f"train.steps={steps}"] if steps else []
        if not (run / "checkpoints").is_dir():
            dp(*argv)
        out["train"] = {"command": command(*argv)}
    out["run"] = str(run)
    times = train_times(run)
    out["train_wall_s"] = round(max(times.values()), 1) if times else None
    cpu = train_times(run, "cpu_s")
    out["train_cpu_s"] = round(max(cpu.values()), 1) if cpu else None  # the trainer process's own CPU time (runs logging it)
    if args.extra_cpu_s:
        out["extra_cpu_s"] = args.extra_cpu_s  # counted with the trainer's on the page (bench/reporting/sections_pusht.py)

    out["curve"] = curve(run, work, val_n, args.seed, args.curve_steps)
    best = choose(out["curve"], args.last_step)
    out["chosen"] = {"step": best["step"], "checkpoint": best["checkpoint"], "train_s": best["train_s"],
                     "why": "best mean score on validation seeds" + (f" among steps <= {args.last_step}" if args.last_step else "")}
    ckpt = best["checkpoint"]
    sub = work / Path(ckpt).name  # what follows depends on the checkpoint: kept per checkpoint

    if not test_n:  # the curve only: RTI settings serve the test rows
        emit(out, started, args.json_out)
        return
    rti_rows = []
    if not args.skip_rti:
        for steps, sigma, every in quick.get("rti_grid", args.rti_grid or RTI_GRID):
            name = f"rti_k{steps}_s{sigma:g}_e{every}"
            fig = eval_json(sub / "val" / f"{name}.json", ckpt, "--split", "val", "--episodes", str(val_n), "--seed", str(args.seed),
                            "--rti-steps", str(steps), "--rti-sigma", str(sigma), "--rti-every", str(every))
            rti_rows.append({"steps": steps, "sigma": sigma, "every": every, **fig})
        out["rti_val"] = rti_rows

    test = sub / "test"
    export = sub / "export"
    if not (export / "policy.onnx").is_file():
        dp("export", ckpt, "--out", str(export))
    seed = ("--seed", str(args.seed), "--split", "test", "--episodes", str(test_n))
    rows = {"torch": eval_json(test / "torch.json", ckpt, *seed),
            "onnx": eval_json(test / "onnx.json", str(export), *seed)}
    if rti_rows:
        rti = max(rti_rows, key=lambda r: (r["mean_score"], r["success_rate"]))
        out["rti_chosen"] = {k: rti[k] for k in ("steps", "sigma", "every")}
        every = rti["every"]
        cfg = yaml.safe_load((Path(ckpt) / "config.yaml").read_text())
        if every != cfg["data"]["n_action_steps"]:  # the fair row: full sampling re-planning as often as RTI
            fair = sub / f"export_every{every}"
            if not (fair / "policy.onnx").is_file():
                dp("export", ckpt, "--out", str(fair), "--replan-every", str(every))
            rows[f"onnx_every{every}"] = eval_json(test / f"onnx_every{every}.json", str(fair), *seed)
        rti_dir = sub / "export_rti"
        # the first chunk as in the validation runs (torch RTI samples it fully): the full schedule from a zero guess
        first = ("--first-steps", str(cfg["diffusion"]["steps"]), "--first-sigma", str(cfg["diffusion"]["sigma_max"]))
        if not (rti_dir / "policy.onnx").is_file():
            dp("export", ckpt, "--out", str(rti_dir), "--rti-steps", str(rti["steps"]), "--rti-sigma", str(rti["sigma"]),
               "--rti-every", str(every), *first)
        rows["onnx_rti"] = eval_json(test / "onnx_rti.json", str(rti_dir), "--rti", *seed)
        if not args.skip_rti_defaults:
            rows["onnx_rti_defaults"] = eval_json(test / "onnx_rti_defaults.json", str(export), "--rti", *seed)  # as shipped
    deploy_n = test_n if args.deploy_episodes is None else args.deploy_episodes
    if deploy_n:  # the Push-T controller publishes the 96x96 view too, so image policies deploy as state ones do
        # with the RTI stage: the export of the chosen RTI settings, warm-started; without it: full sampling
        rows["deploy"] = deploy(test, sub / "export_rti" if rti_rows else export, deploy_n, args.deploy_parallel, rti=bool(rti_rows),
                                seed=args.seed)
    out["test"] = rows
    emit(out, started, args.json_out)


def deploy(folder: Path, export: Path, episodes: int, parallel: int, rti: bool, seed: int = 0) -> dict[str, Any]:
    """The export through `dp node` + `dp robot` (launch/pusht_deploy.yaml; with ``rti`` its warm starts), ``parallel`` launches at once
    (each on its own ports) sharing ``episodes``: the test seeds of `dp eval --split test --seed SEED --episodes EPISODES`, launch i
    from episode i * ceil(episodes / parallel) on, so each deploy episode pairs with a `dp eval` episode; their reports as one test row."""
    from dp.eval.evaluate import EvalResult  # the driver itself stays light: only this row needs dp's figures

    per = -(-episodes // parallel)
    names = {first: f"deploy_ep{first:03d}.json" for first in range(0, episodes, per)}
    runs = [(name, ["launch", "launch/pusht_deploy.yaml", "--set", f"policy={export}", "--set", f"episodes={min(per, episodes - first)}",
                    "--set", f"seed={seed}", "--set", f"first_episode={first}", "--set", f"port={5655 + 2 * i}",
                    "--set", f"rti={'on' if rti else 'off'}", "--json-out", str(folder / name)])
            for i, (first, name) in enumerate(names.items())]
    todo = [subprocess.Popen([sys.executable, "-m", "dp.cli", *argv], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, argv in runs if not (folder / name).is_file()]
    if any(p.wait() != 0 for p in todo):
        raise SystemExit("a deploy run failed (run its `dp launch` command to see why)")
    reports = [json.loads((folder / name).read_text()) for name, _ in runs]
    done = [e for r in reports for e in r["per_episode"]]
    # the figures as dp eval computes them, over the node's episodes
    result = EvalResult("pusht", len(done), sum(e["success"] for e in done), [e["steps"] for e in done], [e["seed"] for e in done],
                        np.zeros(0), scores=[e["score"] for e in done], split="test").as_dict()
    return {"command": "\n".join(command(*argv) for _, argv in runs), "json": [str(folder / name) for name, _ in runs],
            "seed_base": seed, **result,
            "latency_ms": worst_latency([r["obs_to_command_ms"] for r in reports], "obs->command")}


if __name__ == "__main__":
    main()

"""The whole path on a small embedded default: collect scripted `lift` demonstrations, train the
`small` policy, evaluate it in simulation, export it to ONNX, evaluate the export, and drive the
simulated robot controller with the inference node; then print a report (success of the torch,
ONNX and deploy paths, latencies, where everything was written, and what to run next).

Each stage runs the real `dp` command in its own process (so a crash names its stage) and writes
under --out. `--fast` shrinks every stage to a smoke run of a few minutes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dp.errors import DpError


@dataclass
class Stage:
    name: str
    command: str  # the dp command it runs
    argv: list[str]
    outputs: list[Path] = field(default_factory=list)  # what must exist afterwards
    json_out: Path | None = None  # where the stage's figures land


@dataclass(frozen=True)
class Sizes:
    episodes: int
    preset: str
    train_steps: int
    batch_size: int
    eval_episodes: int
    deploy_episodes: int


# FULL fits the README's promise (under 15 minutes on two CPU cores, no GPU); FAST is a smoke run.
FULL = Sizes(episodes=100, preset="small", train_steps=2000, batch_size=64, eval_episodes=20, deploy_episodes=5)
FAST = Sizes(episodes=4, preset="tiny", train_steps=60, batch_size=32, eval_episodes=2, deploy_episodes=1)
EXAMPLE = "dp quickstart --fast --out quickstart"  # ends `dp quickstart --help`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("quickstart"), help="folder for every artefact (default: ./quickstart)")
    parser.add_argument("--fast", action="store_true", help="a smoke run (tiny sizes, under 3 minutes); its success rates mean nothing")
    parser.add_argument("--task", default="lift", help="simulated task (default: lift)")
    parser.add_argument("--json", action="store_true", help="print the final report as JSON")


def plan(out: Path, task: str, sizes: Sizes, port: int) -> list[Stage]:
    """The stages of the path, in order, with the exact `dp` command lines they run."""
    store, run, exported = out / "data" / f"{task}.zarr", out / "runs" / task, out / "exported" / task
    evaluation = ["--task", task, "--split", "test", "--episodes", str(sizes.eval_episodes), "--seed", "1000"]  # reported figures
    return [
        Stage("collect", "collect", ["--task", task, "--episodes", str(sizes.episodes), "--out", str(store), "--workers", "2"], [store]),
        Stage(
            "train", "train",
            ["--data", str(store), "--preset", sizes.preset, "--out", str(run),
             f"train.steps={sizes.train_steps}", f"train.batch_size={sizes.batch_size}"],
            [run / "model.safetensors", run / "config.yaml"],
        ),
        Stage("eval", "eval", [str(run), *evaluation, "--json-out", str(out / "eval_torch.json")], json_out=out / "eval_torch.json"),
        Stage("export", "export", [str(run), "--out", str(exported)], [exported / "policy.onnx", exported / "policy_warm.onnx", exported / "policy.yaml"]),
        Stage("eval-onnx", "eval", [str(exported), *evaluation, "--json-out", str(out / "eval_onnx.json")], json_out=out / "eval_onnx.json"),
        Stage(
            "deploy", "launch",
            ["sim_deploy", "--set", f"policy={exported}", "--set", f"task={task}", "--set", f"episodes={sizes.deploy_episodes}",
             "--set", f"port={port}", "--set", "seed=2000", "--json-out", str(out / "deploy.json")],
            json_out=out / "deploy.json",
        ),
    ]


def run_stage(stage: Stage, log_dir: Path) -> float:
    """Run one stage's `dp` command; raises DpError naming the stage and the end of its log on failure."""
    log = log_dir / f"{stage.name}.log"
    cmd = [sys.executable, "-m", "dp", stage.command, *stage.argv]
    print(f"\n==> [{stage.name}] dp {stage.command} {' '.join(stage.argv)}", flush=True)
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:  # progress bars and messages reach the user as they come
            sys.stdout.write(line)
            sys.stdout.flush()
            fh.write(line)
        proc.wait()
    if proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise DpError(f"stage '{stage.name}' failed (exit {proc.returncode}); log: {log}\n{tail}")
    missing = [str(p) for p in stage.outputs if not p.exists()]
    if missing:
        raise DpError(f"stage '{stage.name}' finished but did not write {', '.join(missing)}")
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> int:
    from dp.link.transport import free_port

    out: Path = args.out.resolve()
    sizes = FAST if args.fast else FULL
    log_dir = out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"out": str(out), "task": args.task, "sizes": asdict(sizes), "fast": args.fast, "stages": {}}
    start = time.perf_counter()
    for stage in plan(out, args.task, sizes, free_port()):
        entry = {"status": "ok", "command": f"dp {stage.command} {' '.join(stage.argv)}"}
        entry["seconds"] = round(run_stage(stage, log_dir), 1)
        if stage.json_out is not None:
            entry["figures"] = json.loads(stage.json_out.read_text())
        report["stages"][stage.name] = entry
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["summary"] = summarize(report)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def summarize(report: dict) -> dict:
    """The headline figures: success and latency of each way of running the policy."""
    stages = report["stages"]
    torch_, onnx_, deploy = (stages[n]["figures"] for n in ("eval", "eval-onnx", "deploy"))
    return {
        "torch": {"success_rate": torch_["success_rate"], "episodes": torch_["episodes"],
                  "policy_ms_median": torch_["latency_ms"]["median"]},
        "onnx": {"success_rate": onnx_["success_rate"], "episodes": onnx_["episodes"],
                 "policy_ms_median": onnx_["latency_ms"]["median"]},
        "deploy": {"success_rate": deploy["success_rate"], "episodes": deploy["episodes"],
                   "obs_to_command_ms_median": deploy["obs_to_command_ms"].get("median"),
                   "obs_to_command_ms_p99": deploy["obs_to_command_ms"].get("p99")},
    }


def format_report(report: dict) -> str:
    out, task, s = Path(report["out"]), report["task"], report["summary"]
    lines = ["", f"dp quickstart: {task}, done in {report['seconds'] / 60:.1f} min" + ("  (--fast: a smoke run, success rates mean nothing)" if report["fast"] else ""), ""]
    lines.append(f"  {'stage':<10} {'time':>7}")
    lines += [f"  {name:<10} {entry['seconds']:>6.0f}s" for name, entry in report["stages"].items()]
    lines += ["", f"  {'path':<8} {'success':>8} {'episodes':>9}   latency"]
    lines.append(f"  {'torch':<8} {s['torch']['success_rate']:>8.0%} {s['torch']['episodes']:>9}   policy {s['torch']['policy_ms_median']:.2f} ms/step (median)")
    lines.append(f"  {'onnx':<8} {s['onnx']['success_rate']:>8.0%} {s['onnx']['episodes']:>9}   policy {s['onnx']['policy_ms_median']:.2f} ms/step (median)")
    d = s["deploy"]
    lines.append(f"  {'deploy':<8} {d['success_rate']:>8.0%} {d['episodes']:>9}   observation-to-command {d['obs_to_command_ms_median']:.2f} ms median, "
                 f"{d['obs_to_command_ms_p99']:.2f} ms p99")
    lines += [
        "", "  Written:",
        f"    demonstrations  {out / 'data' / f'{task}.zarr'}",
        f"    trained run     {out / 'runs' / task}",
        f"    ONNX policy     {out / 'exported' / task}",
        f"    logs, report    {out / 'logs'}, {out / 'report.json'}",
        "", "  Go further:",
        f"    dp info {out / 'data' / f'{task}.zarr'}",
        f"    dp eval {out / 'runs' / task} --task {task} --episodes 50 --video videos/",
        f"    dp eval {out / 'exported' / task} --task {task} --rti",
        f"    dp launch sim_deploy --set policy={out / 'exported' / task}      # drive the sim robot until Ctrl-C",
        "    dp collect --task can --episodes 200 --out data/can.zarr --workers 2   # another task",
        "    dp train --help; dp import --help; docs/tutorial.md",
    ]
    return "\n".join(lines)

"""Holds at chunk boundaries on the deploy path (issue 35, item 1): `dp robot` + `dp node --episodes N`
as real processes on loopback, in real time, against `dp eval` on the same test seeds.

For each --plan-ahead mode (default: off, then auto) it runs --parallel controller/node pairs, pair i
on base seed i (the seeds `dp eval --split test --seed i` uses), and reports from the nodes' reports:
the controller's watchdog holds during episodes by reason (target: no ``command_expired``), ticks held
after an episode's first command, late plans, obs->command latency as the controller measured it
(target p99 <= half a control period; the worst pair's p99 when pairs ran in parallel), the success
rate and mean score; then `dp eval` on the same seeds, plain and acting as the node did (`--plan-ahead`
and `--replan-every` at what the node chose, when it kept one choice). It does not start the training that the
issue's target runs beside: start it yourself, and read ``load_average_1min`` and ``cpu_count``.

  python bench/plan_ahead.py --robot robots/pusht_sim.yaml --task pusht --policy EXPORT --episodes 100 --parallel 2
  python bench/plan_ahead.py --robot robots/panda_sim.yaml --robot-args driver.options.task=lift --task lift --policy RUN
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import emit  # noqa: E402
from dp.deploy.robot_config import load_robot  # noqa: E402
from dp.testing.robot_harness import spawn_dp, start_robot  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def deploy(args: argparse.Namespace, mode: str, episodes: int, tmp: Path) -> list[dict]:
    """Run the pairs of one plan-ahead mode; each node's report, with its base seed."""
    per_pair = episodes // args.parallel
    pairs = []
    for i in range(args.parallel):
        robot, endpoint = start_robot(*args.robot_args, robot=args.robot)
        report = tmp / f"{mode}_{i}.json"
        node = spawn_dp(["node", "--policy", args.policy, "--robot", endpoint, "--episodes", str(per_pair), "--seed", str(i),
                         "--plan-ahead", mode, "--json-out", str(report), *args.node_args])
        pairs.append((robot, node, report, i))
    reports = []
    for robot, node, report, seed in pairs:
        rc = node.popen.wait(per_pair * args.episode_seconds + 300)
        robot.stop()
        if rc != 0:
            raise SystemExit(f"dp node failed ({rc}):\n{node.output[-3000:]}")
        reports.append({"seed": seed, **json.loads(report.read_text())})
    return reports


def summarise(reports: list[dict], period_ms: float) -> dict:
    """One row from the pairs' node reports."""
    episodes = [e for r in reports for e in r["per_episode"]]
    holds: dict[str, int] = {}
    for r in reports:
        for reason, n in r["holds"].items():
            holds[reason] = holds.get(reason, 0) + n
    leads = [r["plan_ahead"] for r in reports if r["plan_ahead"]]
    replans = [r["replan_every"] for r in reports if r.get("replan_every")]
    row = {
        "episodes": len(episodes), "successes": sum(e["success"] for e in episodes),
        "success_rate": sum(e["success"] for e in episodes) / len(episodes),
        "holds_during_episodes": holds, "held_ticks": sum(r["held_ticks"] for r in reports),
        "ticks": sum(e["steps"] for e in episodes), "late_plans": sum(r["late_plans"] for r in reports),
        "plan_ahead_lead": {"min": min(x["min"] for x in leads), "max": max(x["max"] for x in leads)} if leads else None,
        "replan_every": {"min": min(x["min"] for x in replans), "max": max(x["max"] for x in replans)} if replans else None,
        "obs_to_command_ms": {"median": max(r["obs_to_command_ms"]["median"] for r in reports),
                              "p99_worst_pair": max(r["obs_to_command_ms"]["p99"] for r in reports),
                              "max": max(r["obs_to_command_ms"]["max"] for r in reports)},
        "prime_ms": {"median": max(r["prime_ms"]["median"] for r in reports)},
        "half_period_ms": period_ms / 2,
    }
    if all("score" in e for e in episodes):
        row["mean_score"] = sum(e["score"] for e in episodes) / len(episodes)
    return row


def reference(args: argparse.Namespace, lead: int | None, replan: int | None, tmp: Path) -> dict:
    """`dp eval` on the pairs' seeds (in turn), optionally with ``--plan-ahead lead --replan-every replan``."""
    rows = []
    for i in range(args.parallel):
        out = tmp / f"eval_{lead}_{i}.json"
        extra = (["--plan-ahead", str(lead)] if lead else []) + (["--replan-every", str(replan)] if replan else [])
        proc = spawn_dp(["eval", args.policy, "--task", args.task, "--split", "test", "--seed", str(i),
                         "--episodes", str(args.episodes // args.parallel), "--json-out", str(out), *extra, *args.eval_args])
        if proc.popen.wait(7200) != 0:
            raise SystemExit(f"dp eval failed:\n{proc.output[-3000:]}")
        rows.append(json.loads(out.read_text()))
    n = sum(r["episodes"] for r in rows)
    scores = [s for r in rows for s in r["scores"]]
    return {"command": f"dp eval {args.policy} --task {args.task} --split test --seed I --episodes {args.episodes // args.parallel}"
                       + " ".join([""] + extra + args.eval_args),
            "episodes": n, "success_rate": sum(r["successes"] for r in rows) / n, "mean_score": sum(scores) / len(scores)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robot", default="robots/panda_sim.yaml", help="robot file of the controller")
    parser.add_argument("--task", default="lift", help="the task (the sim driver's task; pusht for the Push-T robot file)")
    parser.add_argument("--policy", required=True, help="exported folder or run folder")
    parser.add_argument("--episodes", type=int, default=100, help="test episodes per mode, over all pairs (default 100)")
    parser.add_argument("--parallel", type=int, default=1, help="controller/node pairs at once, pair i on base seed i (default 1)")
    parser.add_argument("--modes", default="off,auto",
                        help="--plan-ahead modes to run, in turn, each MODE or MODE:EPISODES (default off,auto; e.g. off:20,auto)")
    parser.add_argument("--episode-seconds", type=float, default=40.0, help="the longest an episode may take (default 40)")
    parser.add_argument("--robot-args", nargs="*", default=[], help="robot-file overrides (e.g. driver.options.task=can)")
    parser.add_argument("--node-args", nargs="*", default=[], help="more dp node arguments (e.g. --rti)")
    parser.add_argument("--eval-args", nargs="*", default=[], help="more dp eval arguments (e.g. --rti; an export is recognised by its policy.onnx)")
    parser.add_argument("--skip-eval", action="store_true", help="no dp eval reference")
    parser.add_argument("--out", type=Path, help="write the JSON here too")
    args = parser.parse_args()
    started = time.perf_counter()
    period_ms = 1e3 / load_robot(args.robot).rates.control_hz
    out: dict = {"robot": args.robot, "task": args.task, "policy": args.policy, "control_hz": 1e3 / period_ms,
                 "seeds": f"test, base seeds 0..{args.parallel - 1}", "cpu_count": os.cpu_count(), "deploy": {}}
    with TemporaryDirectory() as tmp:
        for item in args.modes.split(","):
            mode, _, count = item.partition(":")
            episodes = int(count or args.episodes)
            t0 = time.monotonic()
            out["deploy"][mode] = {"command": f"dp node --policy {args.policy} --episodes {episodes // args.parallel} "
                                              f"--seed I --plan-ahead {mode} " + " ".join(args.node_args),
                                   **summarise(deploy(args, mode, episodes, Path(tmp)), period_ms),
                                   "wall_s": round(time.monotonic() - t0, 1), "load_average_1min": round(os.getloadavg()[0], 2)}
        if not args.skip_eval:
            out["dp_eval"] = {"plain": reference(args, None, None, Path(tmp))}
            auto = out["deploy"].get("auto", {})
            lead, replan = auto.get("plan_ahead_lead"), auto.get("replan_every")
            if lead and lead["min"] == lead["max"] and replan["min"] == replan["max"]:
                out["dp_eval"]["as_the_node"] = reference(args, lead["min"], replan["min"], Path(tmp))
    emit(out, started, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

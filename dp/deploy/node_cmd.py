"""Run the inference node: subscribe to a robot controller's State, run the policy once per control
tick, send waypoints anchored to the observation's timestamp.

  dp node exported/lift --robot tcp://127.0.0.1:5555        an exported policy (ONNX Runtime, RTI)
  dp node expert:lift --robot tcp://127.0.0.1:5555 --episodes 10 --json
  dp node --policy runs/lift --robot tcp://10.0.0.2:5555 --keys keys/ --instruction "lift the cube"

POLICY (positional or --policy) is an exported folder, a run folder, expert:TASK or package.module:Name.

With --episodes N the node resets the robot N times with the test split's seeds (those of `dp eval
--split test --seed S`, so the two success rates are paired), drives each episode to success or to
the horizon and reports the success rate; without it, it drives the robot until Ctrl-C. It gives up
(exit code 1, saying why: nothing listening, or a CURVE key mismatch) when no State arrives for
--connect-timeout seconds. Per-cycle timings, with the action the policy chose (in its own units),
go to --timings (JSON lines); a summary is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from dp.cli_args import add_chunks_per_plan_arguments, add_policy_argument, policy_of, switch
from dp.devices import add_device_argument
from dp.errors import DpError
from dp.infer.load import load_policy
from dp.link.transport import ClientSockets, split_endpoint

DEFAULT_CONNECT_TIMEOUT = 120.0  # seconds without State before `dp node --episodes N` gives up (a sim controller may take a minute to start on a busy machine)
EXAMPLE = "dp node exported/lift --robot tcp://127.0.0.1:5555"  # ends `dp node --help`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_policy_argument(parser, "exported folder (policy.onnx), run folder, expert:TASK, or package.module:Name")
    parser.add_argument("--robot", default="tcp://127.0.0.1:5555", help="the controller's State endpoint (default tcp://127.0.0.1:5555)")
    parser.add_argument("--instruction", help="language instruction / task for the policy's goal (default: the controller's task)")
    parser.add_argument("--episodes", type=int, default=0,
                        help="run this many episodes on test-split seeds, then exit (default 0: run until stopped)")
    parser.add_argument("--seed", type=int, default=0,
                        help="base seed of the episodes with --episodes: the seeds of `dp eval --split test --seed` (default 0)")
    parser.add_argument("--first-episode", type=first_episode_arg, default=0, metavar="I",
                        help="with --episodes: start at episode I of those seeds, so that nodes side by side can split one "
                             "`dp eval` run's episodes (default 0)")
    parser.add_argument("--max-steps", type=int, help="episode length in control ticks (default: the controller's horizon)")
    parser.add_argument("--rti", nargs="?", const=True, default=False, type=switch, metavar="on|off",
                        help="RTI warm starts (each chunk a few steps from the previous one) in place of full sampling with the "
                             "policy's chosen sampler; off by default: on the tasks measured the warm start did not beat full "
                             "sampling or a zero guess at equal network passes (results page, 'The sampler and the warm start'); "
                             "--rti=off spells the default (launch files pass --rti=${rti})")
    parser.add_argument("--no-rti", action="store_true", help="deprecated: full sampling is the default now (RTI with --rti)")
    parser.add_argument("--ensemble", type=float, default=None, metavar="DECAY",
                        help="temporal ensembling of overlapping chunks (ACT), weights exp(-DECAY * i) with i = 0 for the oldest (default: off)")
    add_chunks_per_plan_arguments(parser)
    add_device_argument(parser, "where the policy runs (in torch, or on ONNX Runtime's providers for an exported folder)")
    parser.add_argument("--plan-ahead", type=plan_ahead_arg, default="auto", metavar="auto|off|N",
                        help="sample each chunk N control steps before the current one runs out, in a worker thread, so the "
                             "robot never waits at a chunk boundary (auto, the default: enough steps for 1.5x a slow "
                             "recent plan, chosen at each episode's start, re-planning more often if the chunk is too short "
                             "for it; off: sample when the queue runs out)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for a trained run (default 1, as ONNX Runtime: the controller and the "
                             "plan-ahead loop need the other cores)")
    parser.add_argument("--keys", type=Path, help="CURVE key folder (client.key_secret + server.key) for an authenticated controller")
    parser.add_argument("--silence-timeout", type=float, default=0.5, help="seconds without State before the node stops commanding (default 0.5)")
    parser.add_argument("--connect-timeout", type=float,
                        help="give up when no State arrives for this many seconds, at the start or after the controller "
                             "falls silent (default: 120 with --episodes, else wait)")
    parser.add_argument("--timings", type=Path, help="write per-cycle timings and the policy's action (its units) here (JSON lines)")
    parser.add_argument("--json", action="store_true", help="print the final report as JSON")
    parser.add_argument("--json-out", default="", help="also write the final report to this file (empty: do not)")
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)")


def plan_ahead_arg(text: str) -> int | str | None:
    """``--plan-ahead``: "auto", "off" (None) or a whole number of control steps >= 1."""
    if text in ("auto", "off"):
        return None if text == "off" else text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected auto, off or a number of control steps >= 1, got {text!r}")


def first_episode_arg(text: str) -> int:
    """``--first-episode``: a whole number >= 0."""
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"expected the index of an episode, 0 or more, got {text!r}")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(name)s: %(message)s")
    spec = policy_of(args)
    split_endpoint(args.robot)  # a bad endpoint is a clear error before the policy loads
    if args.connect_timeout is not None and not args.connect_timeout > 0:
        raise DpError(f"--connect-timeout must be > 0 seconds, got {args.connect_timeout}")
    if args.threads < 1:
        raise DpError(f"--threads must be >= 1, got {args.threads}")
    if args.no_rti:
        print("dp node: --no-rti is deprecated: full sampling is the default now (RTI with --rti)", file=sys.stderr)
    policy = load_policy(spec, rti=args.rti, ensemble=args.ensemble, vote=args.vote, medoid=args.medoid, importable=True,
                         device=args.device)

    from dp.deploy.node import InferenceNode

    if "torch" in sys.modules:  # a trained run (ONNX Runtime sessions have their own thread setting)
        sys.modules["torch"].set_num_threads(args.threads)

    sockets = ClientSockets(args.robot, args.keys)
    node = InferenceNode(
        policy, sockets, instruction=args.instruction, episodes=args.episodes, seed=args.seed,
        first_episode=args.first_episode, max_steps=args.max_steps, silence_timeout=args.silence_timeout, timings=args.timings,
        plan_ahead=args.plan_ahead,
    )
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))
    print(f"dp node: policy {spec}, controller {args.robot}", flush=True)
    try:
        timeout = args.connect_timeout if args.connect_timeout is not None else (DEFAULT_CONNECT_TIMEOUT if args.episodes else None)
        report = node.run(should_stop=lambda: bool(stopping), connect_timeout=timeout).summary()
    except TimeoutError as exc:
        print(f"dp node: {exc}", flush=True)
        return 1
    finally:
        sockets.close()
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        lat, pol = report["obs_to_command_ms"], report["policy_ms"]
        line = f"dp node: {report['episodes']} episodes" if report["episodes"] else "dp node: stopped"
        if report["episodes"]:
            line += f", success rate {report['success_rate']:.0%}"
        if lat.get("n"):
            line += f"; obs->command median {lat['median']:.1f} ms, p99 {lat['p99']:.1f} ms"
        if pol.get("n"):
            line += f"; policy median {pol['median']:.2f} ms"
        holds = ", ".join(f"{k} {v}" for k, v in report["holds"].items()) or "none"
        print(line + f"; holds during episodes: {holds} (late plans {report['late_plans']}); rejected states "
              f"{report['rejected_states']}, resyncs {report['resyncs']}", flush=True)
    return 0 if not args.episodes or report["episodes"] >= args.episodes else 1

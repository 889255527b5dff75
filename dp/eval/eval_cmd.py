"""Evaluate a policy in simulation (robosuite tasks in MuJoCo, Push-T in pymunk): success rate (95%
Wilson interval), mean score (95% t-interval), mean episode length and policy latency over seeded
episodes, with optional MP4s of the first episodes.

POLICY (positional or --policy) is `expert:<task>` (the scripted expert), an exported folder
(policy.onnx) or a training run / checkpoint folder (model.safetensors). Cameras the policy observes
are rendered for it.

Seeds: `--split val` (the default) for every choice of settings (checkpoint, RTI, sampler steps),
`--split test` for reported figures only; the two streams are disjoint from each other and from
the seeds of collected demonstrations. Push-T follows Diffusion Policy's protocol: at most 300
steps, score = max over steps of min(coverage / 0.95, 1), success = coverage reached 0.95.

  dp eval runs/lift --task lift --episodes 50                          validation seeds: choose settings
  dp eval runs/lift --task lift --split test --episodes 100            test seeds: the figure to report
  dp eval runs/can --task can --split test --episodes 100 --workers 2  the same seeds on two cores
  dp eval expert:can --task can --episodes 20 --video videos/
  dp eval exported/lift --task lift --episodes 50 --rti --json
  dp eval runs/lift --task lift --device cuda
  dp eval runs/multi --task all --split test --episodes 100 --workers 2   every task of a multitask policy, and their average

Several tasks (`--task lift,can` or `all`: the policy's own) are evaluated in turn on the same seeds, each at its own
re-planning interval where the policy carries one; the average pools their episodes (95% Wilson interval).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from pathlib import Path
from typing import Any

from dp.cli_args import add_chunks_per_plan_arguments, add_deprecated_alias, add_policy_argument, policy_of, replan_interval
from dp.devices import add_device_argument
from dp.errors import DpError
from dp.infer.load import add_sampler_arguments
from dp.sim.tasks import TASKS


EXAMPLE = "dp eval runs/lift --task lift --split val --episodes 50"  # ends `dp eval --help`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    policy = add_policy_argument(parser, "expert:TASK, an exported folder (policy.onnx) or a run/checkpoint folder")
    add_deprecated_alias(parser, "--onnx", policy, use="POLICY or --policy", metavar="DIR")
    parser.add_argument("--task", required=True, metavar="TASK[,TASK...]|all",
                        help=f"task to evaluate on ({', '.join(TASKS)}); several, comma-separated, or all: a multitask "
                             "policy's own tasks, each in turn, with their pooled average")
    parser.add_argument("--episodes", type=int, default=50, help="number of seeded episodes (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the evaluation episodes (default 0)")
    parser.add_argument("--noise-seed", type=int, default=None, metavar="N",
                        help="draw the policy's sampler noise from stream N on the same episode starts (default: from each "
                             "episode's seed): does an outcome follow the start or the noise?")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes running episodes at once, one torch thread each (default 1: one process); the "
                             "same seeds as one process, in episode order, latencies on one thread")
    parser.add_argument("--split", choices=("val", "test"), default="val",
                        help="seed split: val (choosing settings; default) or test (reported figures only)")
    parser.add_argument("--rti", action="store_true", help="real-time-iteration warm starts (trained policies)")
    parser.add_argument("--rti-steps", type=int, default=None, help="with a run folder: RTI denoising steps per warm chunk (implies --rti)")
    parser.add_argument("--rti-sigma", type=float, default=None, help="with a run folder: noise level RTI restarts from (implies --rti)")
    parser.add_argument("--rti-every", type=int, default=None, help="with a run folder: a new RTI chunk every N control steps (implies --rti)")
    parser.add_argument("--replan-every", type=replan_interval, default=None, metavar="N|TASK=N,...",
                        help="sample a new chunk every N control steps (default: the policy's executed steps, per task where "
                             "it has them, or its RTI interval); TASK=N,... sets those tasks' intervals; full sampling at "
                             "RTI's interval compares the samplers, not the intervals")
    parser.add_argument("--first-chunk", choices=("short", "full"), default=None,
                        help="with an exported POLICY and --rti: an episode's first chunk by full sampling (the default) or from the short first-chunk graph")
    parser.add_argument("--sampler-steps", type=int, default=None,
                        help="with a run folder: full-sampling denoising steps (default: the run's diffusion.steps)")
    add_sampler_arguments(parser, "with a run folder: ")
    parser.add_argument("--ensemble", type=float, default=None, metavar="DECAY",
                        help="temporal ensembling (ACT): act the mean of every overlapping chunk's prediction, weights "
                             "exp(-DECAY * i), i = 0 for the oldest chunk (ACT uses 0.01); with --replan-every 1 it re-plans every step")
    add_chunks_per_plan_arguments(parser)
    parser.add_argument("--plan-ahead", type=int, default=None, metavar="N",
                        help="act as `dp node --plan-ahead N` does: each chunk sampled from the observation N control "
                             "steps before the current chunk runs out, used from N steps in (default: off)")
    add_device_argument(parser, "where the policy runs (in torch, or on ONNX Runtime's providers for an exported folder)")
    parser.add_argument("--image-size", type=int, default=None, help="camera image size rendered for image policies (default: the task's, 84; Push-T 96)")
    parser.add_argument("--video", type=Path, nargs="?", const=Path("videos"), default=None,
                        help="write MP4s of the first episodes into this folder (default ./videos)")
    parser.add_argument("--video-episodes", type=int, default=3, help="how many episodes --video records (default 3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the figures as JSON to this file")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dp.eval.evaluate import evaluate
    from dp.infer.chunked_runtime import ChunkedRuntime
    from dp.infer.load import load_policy

    spec = policy_of(args)
    load = functools.partial(
        load_policy, spec, rti=args.rti, rti_steps=args.rti_steps, rti_sigma=args.rti_sigma, rti_every=args.rti_every,
        replan_every=args.replan_every, first_chunk=args.first_chunk, sampler_steps=args.sampler_steps, schedule=args.schedule,
        solver=args.solver, ensemble=args.ensemble, vote=args.vote, medoid=args.medoid, plan_ahead=args.plan_ahead, device=args.device)
    policy = load()
    every = {}
    for task in eval_tasks(args.task, policy):
        result = evaluate(policy, task, args.episodes, seed=args.seed, split=args.split, image_size=args.image_size,
                          video_dir=args.video, video_episodes=args.video_episodes, progress=not args.json,
                          workers=args.workers, reload=load, noise_seed=args.noise_seed)
        sampling = {"sampling": policy.sampling(result.task)} if isinstance(policy, ChunkedRuntime) else {}  # not a scripted expert
        noise = {} if args.noise_seed is None else {"noise_seed": args.noise_seed}
        every[result.task] = {"policy": spec, **sampling, **noise, **result.as_dict()}
        if not args.json:
            print_result(every[result.task])
    figures = next(iter(every.values())) if len(every) == 1 else pooled_figures(spec, args.split, every)
    if not args.json and len(every) > 1:
        average, weakest = figures["average"], figures["weakest"]
        low, high = average["success_ci95"]
        print(f"average over {len(every)} tasks ({args.split} seeds): success {average['successes']}/{average['episodes']} = "
              f"{average['success_rate']:.1%} (95% CI {low:.1%}-{high:.1%}); weakest {weakest['task']} {weakest['success_rate']:.1%}")
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(figures, indent=2))
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0


def eval_tasks(text: str, policy: Any) -> list[str]:
    """The tasks ``--task`` names: one, several (comma-separated), or ``all`` (the policy's own tasks); a DpError
    names an unknown one."""
    if text.strip() == "all":
        tasks = list(getattr(policy, "tasks", None) or [])
        if not tasks:
            raise DpError("--task all: this policy names no tasks of its own (a scripted expert or an imported policy); name them")
    else:
        tasks = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise DpError(f"--task {text!r}: {', '.join(unknown) or 'no task'} is not a simulated task (tasks: {', '.join(TASKS)})")
    return list(dict.fromkeys(tasks))


def pooled_figures(spec: str, split: str, every: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Several tasks' figures and their average, pooling their episodes (95% Wilson interval), and the weakest task."""
    from dp.stats import wilson_interval

    successes, episodes = sum(f["successes"] for f in every.values()), sum(f["episodes"] for f in every.values())
    weakest = min(every.values(), key=lambda f: f["success_rate"])
    average = {"successes": successes, "episodes": episodes, "success_rate": successes / episodes,
               "success_ci95": list(wilson_interval(successes, episodes))}
    return {"policy": spec, "split": split, "tasks": every, "average": average,
            "weakest": {"task": weakest["task"], "success_rate": weakest["success_rate"]}}


def print_result(figures: dict[str, Any]) -> None:
    """One task's summary lines from its figures: success, score, length and latency; milestones; videos."""
    low, high = figures["success_ci95"]
    lat = figures["latency_ms"]
    s_low, s_high = figures["score_ci95"]
    k, n = figures["successes"], figures["episodes"]
    print(
        f"{figures['task']} ({figures['split']} seeds): success {k}/{n} = {figures['success_rate']:.1%} "
        f"(95% CI {low:.1%}-{high:.1%}), mean score {figures['mean_score']:.3f} (95% CI {s_low:.3f}-{s_high:.3f}), "
        f"mean episode length {figures['mean_length']:.1f} steps, "
        f"policy latency median {lat['median']:.2f} ms, p99 {lat['p99']:.2f} ms"
    )
    if figures["milestones"]:
        steps = ", ".join(f"{name} {reached}/{n}" for name, reached in figures["milestones"].items())
        print(f"milestones reached: {steps}, success {k}/{n}")
    for path in figures["videos"]:
        print(f"video: {path}")

"""Collect demonstrations in simulation (MuJoCo, Push-T) into an episode store.

By default the task's scripted expert acts; `--teleop keyboard|spacemouse` hands control to an
operator through robosuite's input devices (needs a display); `--policy RUN` lets a trained or
exported policy act, so that its successful roll-outs become demonstrations (self-improvement: train
on them beside the first demonstrations). Every finished episode is appended
to the store as it ends, tagged with task, instruction, seed, success, source and the expert's
settings; re-running the same command resumes until the store holds --episodes episodes of the
task (a store of the task's episodes from other expert settings is refused). Failed attempts are
counted but not stored unless --keep-failures. `--from tcp://HOST:PORT` records from a running
robot controller (`dp robot`) instead: its States and executed commands become the episodes.

  dp collect --task lift --episodes 50 --out data/lift.zarr
  dp collect --task can --episodes 200 --out data/can_img.zarr --cameras agentview,robot0_eye_in_hand --workers 2
  dp collect --task pusht --policy runs/pusht_image --episodes 150 --out data/pusht_self.zarr
  dp collect --from tcp://127.0.0.1:5555 --episodes 10 --out data/recorded.zarr

It loads policies for --policy, so this entry point sits on top of the policy stack.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from dp.collect.recorder import add_recorder_arguments, run_recorder
from dp.errors import DpError
from dp.sim.tasks import CAMERAS, TASKS

if TYPE_CHECKING:
    from dp.collect.collector import SourceFactory


EXAMPLE = "dp collect --task lift --episodes 100 --out data/lift.zarr --workers 2"  # ends `dp collect --help`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", help=f"task to collect ({', '.join(TASKS)}); not needed with --from")
    parser.add_argument("--episodes", type=int, required=True, help="number of episodes of the task the store should hold")
    parser.add_argument("--out", type=Path, required=True, help="episode store to create or append to (a .zarr directory)")
    parser.add_argument("--cameras", default="", help=f"comma-separated cameras to record ({','.join(CAMERAS)}); none by default")
    parser.add_argument("--image-size", type=int, default=None,
                        help="camera image height and width in pixels (default: the task's, 84; Push-T 96)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes running episodes in parallel (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; episode k gets a seed derived from it and k (default 0)")
    parser.add_argument("--expert-strategies", choices=["random", "first"], default="random",
                        help="how the scripted expert picks among the strategies open to it (grasp yaw, placement side): "
                             "random (default; multimodal demonstrations) or the first one open (one strategy per initial state)")
    parser.add_argument("--release-slips", type=float, default=0.0, metavar="SHARE",
                        help="share of expert episodes whose release slips (the hand re-closes for a few steps, "
                             "recorded as the expert's open command) so a policy learns to recover (default 0)")
    parser.add_argument("--expert-labels", choices=["executed", "intended"], default="executed",
                        help="which action the scripted expert's demonstrations record: executed (default; what ran, "
                             "its exploration noise included) or intended (the noise-free command while the noisy one "
                             "runs, DART: the noise widens the states, not the labels)")
    parser.add_argument("--success-hold", type=int, default=None, metavar="N",
                        help="keep recording N steps after the task is first solved, so that demonstrations show the "
                             "motion that completes it, not only its first frame (default: 0 for the scripted expert, "
                             "10 for --teleop)")
    parser.add_argument("--keep-failures", action="store_true", help="also store episodes that did not succeed")
    parser.add_argument("--max-attempts", type=int, default=None, help="give up after this many episodes in this run (default 2 x episodes + 10)")
    parser.add_argument("--teleop", choices=["keyboard", "spacemouse"], default=None, help="drive the robot yourself through a robosuite input device")
    parser.add_argument("--policy", default=None, metavar="RUN",
                        help="let a policy act (a training run, checkpoint or exported folder, with its own sampler) and "
                             "keep its successful roll-outs; --cameras defaults to the cameras it observes")
    parser.add_argument("--json", action="store_true", help="print the run's figures as JSON")
    add_recorder_arguments(parser)


def parse_cameras(text: str) -> list[str]:
    cameras = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in cameras if c not in CAMERAS]
    if unknown:
        raise DpError(f"--cameras: unknown camera(s) {unknown} (known: {', '.join(CAMERAS)})")
    return cameras


def actor(args: argparse.Namespace, cameras: list[str]) -> tuple[SourceFactory, str, int, list[str]]:
    """Who acts, from the flags: (its source, its name, its default --success-hold, the cameras to record)."""
    if args.policy and args.teleop:
        raise DpError("--policy and --teleop both name who acts: give one")
    expert_flags = [flag for flag, set_ in (("--expert-strategies", args.expert_strategies != "random"),
                                            ("--release-slips", bool(args.release_slips)),
                                            ("--expert-labels", args.expert_labels != "executed")) if set_]
    if expert_flags and (args.policy or args.teleop):
        raise DpError(f"{', '.join(expert_flags)}: options of the scripted expert, which does not act with --policy or --teleop")
    if args.policy:
        from dp.collect.from_policy import policy_source

        source, cameras = policy_source(args.task, args.policy, cameras)
        return source, "policy", 0, cameras
    if args.teleop:
        from dp.collect.teleop import SUCCESS_HOLD, teleop_source

        if args.workers != 1:
            raise DpError("--teleop runs in this process: leave --workers at 1")
        return teleop_source(args.teleop), "teleop", SUCCESS_HOLD, cameras
    from dp.collect.collector import expert_source

    return expert_source(args.task, args.expert_strategies, args.release_slips, args.expert_labels), "expert", 0, cameras


def run(args: argparse.Namespace) -> int:
    if args.from_endpoint:
        return run_recorder(args)
    if not args.task:
        raise DpError(f"--task is required unless recording --from a controller (tasks: {', '.join(TASKS)})")
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dp.collect.collector import collect

    source, name, default_hold, cameras = actor(args, parse_cameras(args.cameras))
    summary = collect(args.task, args.episodes, args.out, source=source, source_name=name, cameras=cameras,
                      image_size=args.image_size, workers=args.workers, seed=args.seed, keep_failures=args.keep_failures,
                      max_attempts=args.max_attempts, viewer=name == "teleop",
                      success_hold=default_hold if args.success_hold is None else args.success_hold)
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    else:
        print(
            f"{summary.store}: {summary.stored} episodes of {summary.task} "
            f"(+{summary.added} this run; {summary.successes}/{summary.attempts} attempts succeeded, "
            f"{summary.frames_per_second:.0f} frames/s)"
        )
    return 0

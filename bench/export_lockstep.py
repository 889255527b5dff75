"""Whether an export acts as its torch policy does, told apart from the spread of closed-loop outcomes.

`dp eval` of a policy and of its export on the same test seeds can differ by several points of success
even when the two compute the same actions: a difference at float precision moves the scene a little,
and over a few hundred steps an episode may end the other way. Two measurements separate the two:

1. lockstep (``--episodes N``): the torch policy drives N episodes of the split's seeds; the export,
   seeded alike, is given the same observation at every step, and the largest difference between
   the two actions is recorded, in the action's units and over the action scale (max |action|).
2. paired (``--torch-json``, ``--export-json``): `dp eval --json-out` files of both on the same seeds.
   The episodes only one of them solved, the exact McNemar p-value of the two success rates, and the
   paired score difference (export minus torch) with its 95% t-interval. An episode counts as solved
   when its score is 1 (Push-T: coverage reached 0.95; robosuite tasks score 0 or 1). With
   ``--torch-again-json`` (the torch policy evaluated once more on the same seeds with other float
   rounding, e.g. `dp eval --workers 2`: one thread per process) the same comparison of torch with
   itself, and of the export with torch again: how far outcomes spread when only the rounding changes.

    python bench/export_lockstep.py --policy CKPT --export EXPORT --task pusht --episodes 10 \\
        --torch-json torch.json --export-json onnx.json --json-out bench/results/export_lockstep_pusht_image.json

With ``--rti-steps/--rti-sigma/--rti-every`` the torch policy warm-starts as an RTI export does (give
the export's settings: it fixes them).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import emit  # noqa: E402
from bench.merge_evals import paired  # noqa: E402
from dp.eval.evaluate import policy_cameras  # noqa: E402
from dp.infer.load import load_policy  # noqa: E402
from dp.sim.rollout import run_episode, seed_for  # noqa: E402
from dp.sim.tasks import get_task  # noqa: E402


class Shadowed:
    """An action source for :func:`dp.sim.rollout.run_episode`: ``policy`` acts, ``shadow`` (seeded and reset
    alike) is given the same observations; each step's largest |difference| between their actions is kept."""

    def __init__(self, policy: Any, shadow: Any):
        self.policy, self.shadow = policy, shadow
        self.differences: list[float] = []
        self.scale = 0.0  # the largest |action| the acting policy chose

    def seed(self, seed: int) -> None:
        for p in (self.policy, self.shadow):
            p.seed(seed)

    def reset(self, instruction: str | None = None) -> None:
        for p in (self.policy, self.shadow):
            p.reset(instruction=instruction)

    def select_action(self, obs: dict[str, Any]) -> np.ndarray:
        action, shadow = np.asarray(self.policy.select_action(obs)), np.asarray(self.shadow.select_action(obs))
        self.differences.append(float(np.abs(action - shadow).max()))
        self.scale = max(self.scale, float(np.abs(action).max()))
        return action


def lockstep(torch_policy: Any, export: Any, task: str, seeds: list[int]) -> dict[str, Any]:
    """The torch policy drives one episode per seed (as `dp eval` does); ``export`` acts on the same observations.
    Per step, the largest |difference| between their actions; summarised over all steps and per episode."""
    spec = get_task(task)
    env = spec.make_env(cameras=policy_cameras(torch_policy, spec) or None)
    pair, episodes = Shadowed(torch_policy, export), []
    for seed in tqdm(seeds, desc="lockstep", unit="episode"):
        ep = run_episode(env, pair, seed, record=False)
        episodes.append({"seed": seed, "steps": ep.length, "success": ep.success,
                         "max_action_difference": max(pair.differences[-ep.length:])})
    steps = np.asarray(pair.differences)
    return {"episodes": len(seeds), "steps": int(steps.size), "action_scale": pair.scale,
            "action_difference": {"median": float(np.median(steps)), "p99": float(np.percentile(steps, 99)), "max": float(steps.max())},
            "max_over_scale": float(steps.max()) / max(pair.scale, 1e-12), "per_episode": episodes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True, help="the trained run or checkpoint (torch)")
    parser.add_argument("--export", required=True, help="its `dp export` folder")
    parser.add_argument("--task", required=True)
    parser.add_argument("--split", choices=("val", "test"), default="test")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the split (default 0)")
    parser.add_argument("--episodes", type=int, default=10, help="lockstep episodes (default 10; 0: the paired part only)")
    parser.add_argument("--rti-steps", type=int, default=None)
    parser.add_argument("--rti-sigma", type=float, default=None)
    parser.add_argument("--rti-every", type=int, default=None)
    parser.add_argument("--torch-json", type=Path, default=None, help="`dp eval --json-out` of the torch policy")
    parser.add_argument("--export-json", type=Path, default=None, help="`dp eval --json-out` of the export, same seeds")
    parser.add_argument("--torch-again-json", type=Path, default=None,
                        help="`dp eval --json-out` of the torch policy again, same seeds, other rounding (e.g. --workers 2)")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rti = args.rti_steps is not None
    command = " ".join(["python", "bench/export_lockstep.py", *(sys.argv[1:] if argv is None else argv)])
    out: dict[str, Any] = {"bench": "export_lockstep", "task": args.task, "policy": args.policy, "export": args.export,
                           "split": args.split, "seed": args.seed, "rti": rti, "command": command}
    if args.episodes:
        torch_policy = load_policy(args.policy, rti=rti, rti_steps=args.rti_steps, rti_sigma=args.rti_sigma, rti_every=args.rti_every)
        export = load_policy(args.export, rti=rti)
        seeds = [seed_for(args.seed, i, args.split) for i in range(args.episodes)]
        out["lockstep"] = lockstep(torch_policy, export, args.task, seeds)
    if args.torch_json and args.export_json:
        out["paired"] = paired(args.torch_json, args.export_json)
    if args.torch_json and args.torch_again_json:
        out["paired_torch_again"] = paired(args.torch_json, args.torch_again_json, b="torch_again")
    if args.export_json and args.torch_again_json:
        out["paired_export_torch_again"] = paired(args.torch_again_json, args.export_json, a="torch_again")
    emit(out, started, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

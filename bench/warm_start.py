"""What the warm start buys (issue 37): closed-loop success on validation seeds of full sampling and
of RTI warm starts, at the network passes each spends per executed action. Prints JSON.

Modes (comma-separated ``--modes``):
- ``full:N:E``        N sampler steps from noise, a new chunk every E control steps (N / E passes per action);
- ``rti:K:S:E``       RTI: K steps from sigma S, the previous chunk shifted as the guess, every E (K / E);
- ``rti:K:S:E:zero``  the same from a zero guess (the middle of the action range): what the shifted guess adds;
- RTI-DP's scheme is ``rti:K:S:1`` (re-plan every step, a few steps from the previous solution).
An episode's first chunk is full sampling in every mode (its passes are counted in the per-action figure).

    python bench/warm_start.py --run runs/can --task can --episodes 50 \\
        --modes full:10:4,full:5:4,rti:1:1.0:4,rti:1:1.0:4:zero,rti:2:1.0:2,rti:3:2.0:1 --json-out bench/results/warm_start_can.json
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import emit  # noqa: E402

MODES = ("full:10:4", "full:5:4", "rti:1:1.0:4", "rti:1:1.0:4:zero", "rti:3:2.0:8", "rti:3:2.0:8:zero", "rti:2:1.0:1")


def parse_mode(text: str) -> dict[str, Any]:
    """A mode string -> its kind and numbers (see the module docstring)."""
    parts = text.split(":")
    try:
        if parts[0] == "full" and len(parts) == 3:
            return {"kind": "full", "steps": int(parts[1]), "every": int(parts[2])}
        if parts[0] == "rti" and len(parts) in (4, 5) and parts[4:] in ([], ["zero"]):
            return {"kind": "rti", "steps": int(parts[1]), "sigma": float(parts[2]), "every": int(parts[3]), "guess": "zero" if parts[4:] else "shift"}
    except ValueError:
        pass
    raise SystemExit(f"mode {text!r}: expected full:N:E, rti:K:S:E or rti:K:S:E:zero")


def run_mode(run: str, task: str, mode: str, episodes: int, seed: int) -> dict[str, Any]:
    """Evaluate one mode on validation seeds in this (spawned, one-thread) process."""
    import torch

    from dp.eval.evaluate import evaluate
    from dp.infer import Policy
    from dp.infer.rti import RTISettings

    torch.set_num_threads(1)
    m = parse_mode(mode)
    if m["kind"] == "full":
        policy = Policy.load(run, steps=m["steps"], n_action_steps=m["every"])
    else:
        policy = Policy.load(run, rti=RTISettings(m["steps"], m["sigma"], m["every"], guess=m["guess"]), n_action_steps=m["every"])
    result = evaluate(policy, task, episodes, seed=seed, split="val", progress=False).as_dict()
    steps_per_episode = sum(result.get("lengths") or []) or result["mean_length"] * episodes
    chunks = steps_per_episode / m["every"]  # per run: the first chunk of each episode is full sampling
    full = policy.steps
    passes = episodes * full + (chunks - episodes) * (m["steps"] if m["kind"] == "rti" else full)
    return {"mode": mode, **m, "episodes": result["episodes"], "successes": result["successes"], "success_rate": result["success_rate"],
            "success_ci95": result["success_ci95"], "mean_score": result.get("mean_score"), "score_ci95": result.get("score_ci95"),
            "passes_per_action": round(passes / steps_per_episode, 3), "latency_ms": result.get("latency_ms")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--run", required=True, help="run or checkpoint folder")
    parser.add_argument("--task", required=True, help="task to evaluate on (as dp eval --task)")
    parser.add_argument("--episodes", type=int, default=50, help="validation episodes per mode (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the validation episodes (default 0)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"modes, comma-separated (default {','.join(MODES)})")
    parser.add_argument("--parallel", type=int, default=2, help="modes evaluated at once, one thread each (default 2)")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        parse_mode(m)
    with ProcessPoolExecutor(args.parallel, mp_context=multiprocessing.get_context("spawn")) as pool:  # spawn: renderers must not fork
        rows = list(pool.map(run_mode, *zip(*[(args.run, args.task, m, args.episodes, args.seed) for m in modes])))
    out = {"bench": "warm_start", "run": args.run, "task": args.task, "split": "val", "episodes": args.episodes, "seed": args.seed,
           "rows": rows, "note": "the same validation seeds for every mode; passes per action count every network pass, first chunks included"}
    emit(out, started, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

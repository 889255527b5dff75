"""Choose a policy's sampler on validation seeds: schedule x solver x steps, the same seeds for every
setting, then (with --write) store the choice in the checkpoint's config.yaml, where `dp eval`,
`dp export` and `dp node` read it. Prints JSON.

A setting is ``solver:schedule:steps[:trim]`` (dp.diffusion.solvers / schedules), e.g.
``ddim:exponential:10`` (MoDE's sampler, the reference), ``dpmpp2m:karras:5:0.001``. With several
re-planning intervals (``--replan-every 4,8``) every setting runs at each, named ``setting@N``: on `can`
the interval moved success more than any sampler (79 against 98/100 on test, session 35). The choice is
the setting with the fewest network passes per executed action whose validation success (and, for
Push-T, mean score) is inside the 95% interval of the best setting's; ties go to the higher success, then
score. ``--write`` stores its interval too (``data.n_action_steps``).

With ``--test-episodes N`` the reference (the grid's first setting), the best setting on validation
(where it is neither: the setting for a target on success or score itself) and the choice are then
evaluated on N test seeds, which chose nothing, and their time per chunk is measured (torch, batch 1,
one thread, experts cached; interleaved call by call, ``--calls`` each): the rows to report.

    python bench/sampler_choice.py --run runs/pusht --task pusht --episodes 50 --test-episodes 100 --write \\
        --json-out bench/results/sampler_pusht.json
    python bench/sampler_choice.py --run runs/can --task can --episodes 50 --replan-every 4,8 --write   # store the choice
    dp eval runs/can --task can --split test --episodes 100                                              # the choice on test seeds
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import best_row, emit, scored, timed, train_times  # noqa: E402
from dp.models.checkpoint_files import CONFIG_FILE, STATE_FILE, resolve_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GRID = ("ddim:exponential:10", "ddim:exponential:5", "dpmpp2m:exponential:5", "dpmpp2m:karras:5", "dpmpp2m:karras:5:0.001",
        "dpmpp2m:fitted:5:0.001", "dpmpp2m:exponential:3")


def parse_setting(text: str) -> dict[str, Any]:
    """``solver:schedule:steps[:trim]`` -> the diffusion.* values it sets (an ``@N`` interval suffix is
    read by :func:`interval_of`)."""
    parts = text.split("@")[0].split(":")
    if len(parts) not in (3, 4) or not parts[2].isdigit():
        raise SystemExit(f"sampler setting {text!r}: expected solver:schedule:steps[:trim]")
    return {"solver": parts[0], "schedule": parts[1], "steps": int(parts[2]), "trim": float(parts[3]) if len(parts) == 4 else 0.0}


def interval_of(text: str, otherwise: int | None = None) -> int | None:
    """The re-planning interval a setting names (``ddim:fitted:10@8`` -> 8), else ``otherwise`` (None: the
    policy's own)."""
    if "@" not in text:
        return otherwise
    every = text.split("@", 1)[1]
    if not every.isdigit() or int(every) < 1:
        raise SystemExit(f"sampler setting {text!r}: the interval after @ must be a whole number >= 1")
    return int(every)


def with_interval(setting: str, every: int | None) -> str:
    """``setting`` named with its re-planning interval (unchanged for the policy's own)."""
    return f"{setting.split('@')[0]}@{every}" if every else setting


def with_sampler(config_path: Path, values: dict[str, Any], n_action_steps: int | None = None) -> str:
    """The YAML of the config at ``config_path`` with ``values`` set in its diffusion section, and its
    re-planning interval (``data.n_action_steps``) where one is given."""
    config = yaml.safe_load(config_path.read_text())
    config.setdefault("diffusion", {}).update(values)
    if n_action_steps:
        config.setdefault("data", {})["n_action_steps"] = n_action_steps
    return yaml.safe_dump(config, sort_keys=False)


def evaluation_folder(ckpt: Path, setting: str, work: Path, split: str) -> Path:
    """A checkpoint folder of its own under ``work`` whose config.yaml samples with ``setting`` (trim has no flag)."""
    values = parse_setting(setting)
    folder = work / split / setting.replace(":", "_")
    folder.mkdir(parents=True, exist_ok=True)
    # a checkpoint folder of its own: hard links (copies across filesystems), not symlinks, which
    # resolve_checkpoint follows back to the original folder and its config; no training state
    for name in os.listdir(ckpt):
        if name not in (CONFIG_FILE, STATE_FILE) and not (folder / name).exists():
            try:
                os.link((ckpt / name).resolve(), folder / name)
            except OSError:
                shutil.copy2(ckpt / name, folder / name)
    (folder / CONFIG_FILE).write_text(with_sampler(ckpt / CONFIG_FILE, values))
    return folder


def evaluate(ckpt: Path, task: str, setting: str, episodes: int, seed: int, replan_every: int | None, work: Path,
             split: str = "val") -> dict[str, Any]:
    """`dp eval` of the checkpoint with ``setting`` written into a copy of its config (trim has no flag),
    re-planning every ``replan_every`` actions unless the setting names its own interval."""
    values = parse_setting(setting)
    replan_every = interval_of(setting, replan_every)
    folder = evaluation_folder(ckpt, setting, work, split)
    out = folder / "eval.json"
    argv = [sys.executable, "-m", "dp.cli", "eval", str(folder), "--task", task, "--split", split, "--episodes", str(episodes),
            "--seed", str(seed), "--json-out", str(out), "--json", *(["--replan-every", str(replan_every)] if replan_every else [])]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise SystemExit(f"dp eval with {setting} failed:\n{done.stderr[-2000:]}")
    figures = json.loads(out.read_text())
    return {"setting": setting, **values, "replan_every": replan_every, "split": split, "passes_per_chunk": values["steps"], "successes": figures["successes"], "episodes": figures["episodes"],
            "success_rate": figures["success_rate"], "success_ci95": figures["success_ci95"], "mean_score": figures.get("mean_score"),
            "score_ci95": figures.get("score_ci95")}


def choose(rows: list[dict[str, Any]], task: str) -> dict[str, Any]:
    """The cheapest row (network passes per executed action) inside the best row's intervals (success, and
    score where the task is scored)."""
    best = best_row(rows, task)

    def inside(r: dict[str, Any]) -> bool:
        ok = r["success_rate"] >= best["success_ci95"][0]
        return ok and (not scored(task) or r["mean_score"] >= best["score_ci95"][0])

    def passes_per_action(r: dict[str, Any]) -> float:  # rows at the policy's own interval share it
        return r["passes_per_chunk"] / (r.get("replan_every") or 1)

    return min((r for r in rows if inside(r)), key=lambda r: (passes_per_action(r), -r["success_rate"], -(r["mean_score"] or 0)))


def chunk_latency(ckpt: Path, settings: list[str], calls: int, replan_every: int | None = None) -> dict[str, dict[str, float]]:
    """Median and p99 ms of one fully sampled chunk (an episode's first chunk) with each of ``settings``:
    torch, batch 1, one thread, experts cached, on one observation of the policy's shapes; and
    ``per_action_ms``, the median chunk spread over the actions executed from it (the setting's interval,
    else ``replan_every``, else the policy's own), the sampler's cost per control step."""
    import numpy as np
    import torch

    from dp.infer import Policy

    torch.set_num_threads(1)
    policies = {s: Policy.load(ckpt, sampler=parse_setting(s), n_action_steps=interval_of(s, replan_every)) for s in settings}
    first = next(iter(policies.values()))
    rng = np.random.default_rng(0)
    obs = {k: rng.uniform(-1, 1, first.shapes[k]).astype(np.float32) for k in first.lowdim_keys}
    obs.update({k: rng.integers(0, 256, first.shapes[k], dtype=np.uint8) for k in first.image_keys})

    def chunk(policy):
        return lambda: (policy.reset(), policy.predict_chunk(obs))

    times = timed({s: chunk(p) for s, p in policies.items()}, calls)
    return {s: {**t, "per_action_ms": t["median_ms"] / policies[s].default_action_steps} for s, t in times.items()}


def training_cost(ckpt: Path) -> dict[str, Any] | None:
    """The checkpoint's step and the training time to it (minutes of wall time and of the trainer's CPU
    time, summed over resumed segments), from its run's metrics.jsonl; None where that is absent."""
    run = ckpt.parent.parent
    if not (run / "metrics.jsonl").is_file() or not ckpt.name.startswith("step_"):
        return None
    step = int(ckpt.name.split("_")[1])
    wall, cpu = train_times(run), train_times(run, "cpu_s")
    logged = [s for s in wall if s <= step]
    at = max(logged) if logged else None
    return {"step": step, "wall_min": round(wall[at] / 60, 1) if at is not None else None,
            "cpu_min": round(cpu[at] / 60, 1) if at in cpu else None}


def write_choice(ckpt: Path, chosen: dict[str, Any], note: str) -> None:
    """Store the chosen sampler, and its interval where it names one, in the checkpoint's config.yaml (the
    tensor files, and their checksums, stay)."""
    path = ckpt / CONFIG_FILE
    text = with_sampler(path, {k: chosen[k] for k in ("solver", "schedule", "steps", "trim")}, chosen.get("replan_every"))
    path.unlink()  # the checkpoint's config may be a link shared with the run folder: write a file of its own
    path.write_text(f"# diffusion sampler chosen by bench/sampler_choice.py: {note}\n" + text)


def replan_intervals(text: str | None) -> list[int | None]:
    """``--replan-every``: none (the policy's own interval), one, or several comma-separated."""
    if text is None:
        return [None]
    parts = text.split(",")
    if not all(p.isdigit() and int(p) >= 1 for p in parts) or len(set(parts)) != len(parts):
        raise SystemExit(f"--replan-every {text!r}: expected distinct whole numbers >= 1, e.g. 4 or 4,8")
    return [int(p) for p in parts]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--run", required=True, help="run folder (its latest checkpoint) or checkpoint folder")
    parser.add_argument("--task", required=True, help="the task to evaluate on (as dp eval --task)")
    parser.add_argument("--episodes", type=int, default=50, help="validation episodes per setting (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the validation episodes (default 0)")
    parser.add_argument("--grid", default=",".join(GRID), help=f"settings to try, comma-separated (default {','.join(GRID)})")
    parser.add_argument("--replan-every", default=None,
                        help="as dp eval --replan-every (default: the policy's); several (4,8) run every setting at each")
    parser.add_argument("--parallel", type=int, default=2, help="evaluations at once, one thread each (default 2)")
    parser.add_argument("--test-episodes", type=int, default=0,
                        help="then evaluate the reference and the choice on this many test episodes, and time their chunks")
    parser.add_argument("--calls", type=int, default=100, help="timed chunks per setting with --test-episodes (default 100)")
    parser.add_argument("--write", action="store_true", help="store the chosen sampler in the checkpoint's config.yaml")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    ckpt = resolve_checkpoint(args.run)
    intervals, grid = replan_intervals(args.replan_every), [s for s in args.grid.split(",") if s]
    settings = [with_interval(s, every) for every in intervals for s in grid] if len(intervals) > 1 else grid
    for s in settings:
        parse_setting(s)
        interval_of(s)
    replan_every = intervals[0] if len(intervals) == 1 else None  # several: each setting names its own
    with tempfile.TemporaryDirectory(prefix="dp-sampler-") as tmp, ThreadPoolExecutor(args.parallel) as pool:
        def evaluate_all(names: list[str], episodes: int, split: str) -> list[dict[str, Any]]:
            return list(pool.map(lambda s: evaluate(ckpt, args.task, s, episodes, args.seed, replan_every, Path(tmp), split), names))

        rows = evaluate_all(settings, args.episodes, "val")
        chosen, best = choose(rows, args.task), best_row(rows, args.task)
        # the reference, the best on validation (the setting for a target on success itself), then the choice
        tested = list(dict.fromkeys([settings[0], best["setting"], chosen["setting"]]))
        test_rows = evaluate_all(tested, args.test_episodes, "test") if args.test_episodes else []
    note = (f"{chosen['setting']} on {args.episodes} validation episodes of {args.task} (seed {args.seed}): success "
            f"{chosen['successes']}/{chosen['episodes']}, the cheapest inside the best setting's interval")
    latency = chunk_latency(ckpt, tested, args.calls, replan_every) if args.test_episodes else {}
    if args.write:
        write_choice(ckpt, chosen, note)
    out = {"bench": "sampler_choice", "checkpoint": str(ckpt.relative_to(ROOT) if ckpt.is_relative_to(ROOT) else ckpt.name), "task": args.task,
           "training": training_cost(ckpt), "split": "val", "episodes": args.episodes, "seed": args.seed, "replan_every": replan_every, "rows": rows,
           "chosen": chosen["setting"], "why": note, "best": best["setting"], "written": args.write,
           "test_episodes": args.test_episodes, "test_rows": test_rows, "chunk_latency_ms": latency}
    emit(out, started, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

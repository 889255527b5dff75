"""Merge `dp eval --json-out` files of one policy on one task and split into one row: the episodes of
each, in the order given (e.g. two processes or machines that ran base seeds 0 and 1). Success and
its 95% Wilson interval, the mean score and its 95% t-interval are recomputed over all episodes;
latency is the larger of the parts' medians and p99s. Refuses parts of different policies, tasks,
splits, sampling (the sampler and interval `dp eval` records) or noise streams (`--noise-seed`), and parts that share a seed. Prints the merged JSON.

    python bench/merge_evals.py can_test_seed0.json can_test_seed1.json --json-out bench/results/success/can_image__image_preset.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import worst_latency, write_json  # noqa: E402
from dp.eval.evaluate import EvalResult  # noqa: E402
from dp.stats import paired_outcomes  # noqa: E402

SAME = ("policy", "task", "split", "sampling", "noise_seed")
PER_EPISODE = ("scores", "lengths", "seeds")


def merge(parts: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """One evaluation row from ``parts`` (dp eval's JSON), which must agree on policy, task, split, sampling and noise stream."""
    for key in SAME:
        if any(p.get(key) != parts[0].get(key) for p in parts):  # by value: a dict's key order does not count
            raise SystemExit(f"the parts differ in {key}: {', '.join(f'{n}: {p.get(key)}' for n, p in zip(names, parts))}")
    for part, name in zip(parts, names):
        missing = [k for k in (*PER_EPISODE, "successes", "episodes") if k not in part]
        if missing:
            raise SystemExit(f"{name}: not a `dp eval --json-out` file (no {', '.join(missing)})")
    merged = {key: [x for p in parts for x in p[key]] for key in PER_EPISODE}
    if len(set(merged["seeds"])) < len(merged["seeds"]):
        raise SystemExit("the parts share episode seeds: merge evaluations of different base seeds (dp eval --seed)")
    milestones: dict[str, int] = {}
    for p in parts:
        for name, k in (p.get("milestones") or {}).items():
            milestones[name] = milestones.get(name, 0) + k
    # the figures as dp eval computes them (EvalResult), over every part's episodes
    result = EvalResult(parts[0]["task"], sum(p["episodes"] for p in parts), sum(p["successes"] for p in parts), merged["lengths"],
                        merged["seeds"], np.zeros(0), scores=merged["scores"], split=parts[0]["split"], milestones=milestones)
    recorded = {key: parts[0][key] for key in ("sampling", "noise_seed") if parts[0].get(key) is not None}
    return {"policy": parts[0]["policy"], **recorded, "merged_from": names, **result.as_dict(),
            "latency_ms": worst_latency([p.get("latency_ms") or {} for p in parts], "per select_action call")}


def parts_parser(doc: str, parts_help: str) -> argparse.ArgumentParser:
    """A command-line parser described by ``doc`` (its first paragraph; the rest as the epilog) that takes
    `dp eval --json-out` files as its positional ``parts``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog=doc.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", type=Path, nargs="+", help=parts_help)
    return parser


def read_parts(paths: list[Path]) -> list[dict[str, Any]]:
    """The `dp eval --json-out` files at ``paths``; a file that is not JSON is refused by name."""
    parts = []
    for path in paths:
        try:
            parts.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"{path}: cannot read it as JSON ({exc})") from None
    return parts


def paired(a_json: Path, b_json: Path, a: str = "torch", b: str = "export") -> dict[str, Any]:
    """:func:`dp.stats.paired_outcomes` of two `dp eval --json-out` files on the same seeds (an episode is
    solved when its score is 1), its keys named after the two (``a``, ``b``: e.g. torch and its export)."""
    runs = [json.loads(p.read_text()) for p in (a_json, b_json)]
    if runs[0].get("seeds") != runs[1].get("seeds") or not runs[0].get("seeds"):
        raise SystemExit(f"{a_json} and {b_json} are not evaluations on the same seeds (`dp eval --seed S --split SPLIT`)")
    solved = [[s >= 1.0 for s in x["scores"]] for x in runs]
    out = paired_outcomes(*solved, runs[0]["scores"], runs[1]["scores"])
    names = {"successes_a": f"{a}_successes", "successes_b": f"{b}_successes", "only_a": f"{a}_only", "only_b": f"{b}_only"}
    return {a: str(a_json), b: str(b_json), **{names.get(k, k): v for k, v in out.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = parts_parser(__doc__, "dp eval --json-out files")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the merged JSON here")
    args = parser.parse_args(argv)
    out = merge(read_parts(args.parts), [p.name for p in args.parts])
    write_json(out, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

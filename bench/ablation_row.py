"""Add one measured row to an ablation file of the results page (`bench/results/ablation_*.json`): the
question it answers, the setting, and the figures of `dp eval --json-out` file(s) of that setting (several
parts, e.g. base seeds 0 and 1, are merged as bench/merge_evals.py does). A row with the same question,
setting and split is replaced; the file is created (with --about) when absent. Prints the row as JSON.

    dp eval runs/pusht_img/checkpoints/step_0009000 --task pusht --split val --episodes 50 --replan-every 4 --json-out every4.json
    python bench/ablation_row.py every4.json --to bench/results/ablation_pusht_image.json \\
        --question "actions executed per chunk" --setting "4 of 16, step 9000" \\
        --command "dp eval runs/pusht_img/checkpoints/step_0009000 --task pusht --split val --episodes 50 --replan-every 4"
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import public, scored  # noqa: E402
from bench.merge_evals import merge, parts_parser, read_parts  # noqa: E402

FIGURES = ("split", "episodes", "successes", "success_rate", "success_ci95", "mean_length", "milestones")


def ablation_row(parts: list[dict[str, Any]], names: list[str], question: str, setting: str, command: str,
                 train_min: float | None = None) -> dict[str, Any]:
    """The row of ``parts`` (dp eval JSON of one setting): its success figures, and its mean score where
    the task has one worth reporting (Push-T)."""
    evaluated = merge(parts, names)  # one part too: its figures recomputed as dp eval does
    row: dict[str, Any] = {"question": question, "setting": setting, "train_min": train_min,
                           **{key: evaluated[key] for key in FIGURES if key in evaluated}}
    if scored(str(evaluated.get("task"))):
        row.update(mean_score=evaluated["mean_score"], score_ci95=evaluated["score_ci95"])
    row["command"] = command
    return public(row)


def add_row(path: Path, row: dict[str, Any], about: str | None) -> dict[str, Any]:
    """``path``'s ablation with ``row`` added, or in place of the row of the same question, setting and split."""
    if path.exists():
        bench = json.loads(path.read_text())
    elif about:
        bench = {"about": about, "rows": [], "findings": []}
    else:
        raise SystemExit(f"{path} does not exist: pass --about to create it")
    same = ("question", "setting", "split")
    rows = [r for r in bench.get("rows") or [] if any(r.get(k) != row.get(k) for k in same)]
    bench["rows"] = rows + [row]
    if about:
        bench["about"] = about
    return bench


def main(argv: list[str] | None = None) -> int:
    parser = parts_parser(__doc__, "dp eval --json-out file(s) of one setting")
    parser.add_argument("--to", type=Path, required=True, help="the ablation file (bench/results/ablation_NAME.json)")
    parser.add_argument("--question", required=True, help="what the row answers (rows of one question are compared)")
    parser.add_argument("--setting", required=True, help="the setting this row measured")
    parser.add_argument("--command", required=True, help="the command that measured it, as a reader would run it")
    parser.add_argument("--train-min", type=float, default=None, help="training minutes of the policy, where they compare")
    parser.add_argument("--about", default=None, help="the file's description (required to create it)")
    args = parser.parse_args(argv)
    row = ablation_row(read_parts(args.parts), [p.name for p in args.parts], args.question, args.setting, args.command, args.train_min)
    args.to.write_text(json.dumps(add_row(args.to, row, args.about), indent=2) + "\n")
    print(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

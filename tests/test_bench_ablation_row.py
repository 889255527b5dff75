"""bench/ablation_row.py: `dp eval` JSON becomes a row of an ablation file, replacing the same setting."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.ablation_row import main  # noqa: E402
from dp.stats import wilson_interval  # noqa: E402


def evaluation(path: Path, seeds: list[int], scores: list[float], task: str = "pusht") -> Path:
    wins = [s >= 1.0 for s in scores]
    path.write_text(json.dumps({"policy": "runs/x", "task": task, "split": "val", "episodes": len(seeds), "successes": sum(wins),
                                "scores": scores, "lengths": [200] * len(seeds), "seeds": seeds, "milestones": {}}))
    return path


def test_rows_are_added_replaced_and_scored_where_the_task_has_a_score(tmp_path, capsys):
    out = tmp_path / "ablation_x.json"
    a = evaluation(tmp_path / "a.json", [1, 2, 3, 4], [1.0, 0.5, 1.0, 0.9])
    args = ["--to", str(out), "--question", "interval", "--command", f"dp eval {tmp_path}/run --task pusht"]
    with pytest.raises(SystemExit, match="pass --about"):
        main([str(a), *args, "--setting", "every 4"])
    assert main([str(a), *args, "--setting", "every 4", "--about", "Push-T."]) == 0
    b = evaluation(tmp_path / "b.json", [5, 6], [1.0, 1.0])
    assert main([str(a), str(b), *args, "--setting", "every 8"]) == 0
    bench = json.loads(out.read_text())
    assert bench["about"] == "Push-T." and [r["setting"] for r in bench["rows"]] == ["every 4", "every 8"]
    every4, every8 = bench["rows"]
    assert every4["successes"] == 2 and every4["success_ci95"] == list(wilson_interval(2, 4))
    assert every4["mean_score"] == pytest.approx(0.85) and every8["episodes"] == 6 and every8["successes"] == 4
    assert str(tmp_path) not in every4["command"]  # published rows name no path of this machine
    evaluation(a, [1, 2, 3, 4], [1.0, 1.0, 1.0, 1.0])  # measured again: the row is replaced, not repeated
    assert main([str(a), *args, "--setting", "every 4"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["setting"] for r in rows] == ["every 8", "every 4"] and rows[1]["successes"] == 4
    lift = evaluation(tmp_path / "lift.json", [1, 2], [1.0, 0.0], task="lift")
    assert main([str(lift), *args, "--setting", "lift"]) == 0
    assert "mean_score" not in json.loads(out.read_text())["rows"][-1]

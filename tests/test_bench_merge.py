"""bench/merge_evals.py: two `dp eval` JSON parts become one row with its intervals recomputed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.merge_evals import main, merge  # noqa: E402
from dp.stats import mean_interval, wilson_interval  # noqa: E402


def part(seeds: list[int], wins: list[bool], task: str = "can", median: float = 10.0) -> dict:
    return {"policy": "runs/can_image", "task": task, "split": "test", "episodes": len(seeds), "successes": sum(wins),
            "scores": [float(w) for w in wins], "lengths": [100 + s for s in seeds], "seeds": seeds,
            "milestones": {"grasped": len(seeds)}, "latency_ms": {"median": median, "p99": 2 * median, "calls": 7}}


def test_two_parts_merge_into_one_row_with_recomputed_intervals(tmp_path, capsys):
    a, b = part([1, 2, 3], [True, False, True]), part([4, 5], [True, True], median=30.0)
    out = merge([a, b], ["a.json", "b.json"])
    assert out["episodes"] == 5 and out["successes"] == 4 and out["seeds"] == [1, 2, 3, 4, 5]
    assert out["success_ci95"] == list(wilson_interval(4, 5)) and out["mean_score"] == pytest.approx(0.8)
    assert out["score_ci95"] == list(mean_interval([1.0, 0.0, 1.0, 1.0, 1.0]))
    assert out["milestones"] == {"grasped": 5} and out["mean_length"] == pytest.approx(103.0)
    assert out["latency_ms"]["median"] == 30.0 and out["latency_ms"]["calls"] == 14
    for name, data in (("a.json", a), ("b.json", b)):
        (tmp_path / name).write_text(json.dumps(data))
    assert main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json-out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["successes"] == 4


def test_parts_of_other_tasks_or_the_same_seeds_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="differ in task"):
        merge([part([1], [True]), part([2], [True], task="lift")], ["a", "b"])
    with pytest.raises(SystemExit, match="share episode seeds"):
        merge([part([1, 2], [True, True]), part([2], [True])], ["a", "b"])
    with pytest.raises(SystemExit, match="no scores"):
        merge([{"policy": "p", "task": "can", "split": "test", "lengths": [], "seeds": [], "successes": 0, "episodes": 0}], ["x.json"])
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SystemExit, match="bad.json: cannot read it as JSON"):
        main([str(tmp_path / "bad.json")])


def test_the_sampling_is_carried_and_parts_sampled_otherwise_are_refused():
    fitted = {"solver": "ddim", "schedule": "fitted", "steps": 10, "replan_every": 8, "rti": False}
    a, b = {**part([1], [True]), "sampling": fitted}, {**part([2], [False]), "sampling": fitted}
    assert merge([a, b], ["a", "b"])["sampling"] == fitted
    reordered = {**b, "sampling": dict(reversed(fitted.items()))}  # the same sampling, its keys in another order
    assert merge([a, reordered], ["a", "b"])["sampling"] == fitted
    with pytest.raises(SystemExit, match="differ in sampling"):
        merge([a, {**b, "sampling": {**fitted, "replan_every": 4}}], ["a", "b"])
    with pytest.raises(SystemExit, match="differ in sampling"):  # temporal ensembling changes the actions too
        merge([a, {**b, "sampling": {**fitted, "ensemble": 0.01}}], ["a", "b"])
    assert "sampling" not in merge([part([1], [True]), part([2], [True])], ["a", "b"])  # rows from before dp eval recorded it
    with pytest.raises(SystemExit, match="differ in noise_seed"):  # other noise draws on the same starts
        merge([a, {**b, "noise_seed": 1}], ["a", "b"])
    assert merge([{**a, "noise_seed": 1}, {**b, "noise_seed": 1}], ["a", "b"])["noise_seed"] == 1


def test_paired_evals_compares_two_files_episode_by_episode(tmp_path, capsys):
    from bench.paired_evals import main as paired_main

    seeds = [1, 2, 3, 4]
    (tmp_path / "a.json").write_text(json.dumps(part(seeds, [False, False, True, True])))
    (tmp_path / "b.json").write_text(json.dumps(part(seeds, [False, True, True, False])))
    assert paired_main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["a_only"], out["b_only"], out["both_failed"], out["both_failed_if_independent"]) == (1, 1, 1, 1.0)
    (tmp_path / "c.json").write_text(json.dumps(part([5, 6, 7, 8], [True] * 4)))
    with pytest.raises(SystemExit, match="not evaluations on the same seeds"):
        paired_main([str(tmp_path / "a.json"), str(tmp_path / "c.json")])
    with pytest.raises(SystemExit, match="give two dp eval files"):
        paired_main([str(tmp_path / "a.json")])

"""bench/export_lockstep.py: an export shadowing its torch policy on the same observations, and the
paired comparison of two evaluations on the same seeds."""

from __future__ import annotations

import json
import sys
from math import comb
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.export_lockstep import lockstep, main, paired  # noqa: E402
from dp.infer.load import load_policy  # noqa: E402
from dp.stats import paired_outcomes  # noqa: E402


def test_paired_outcomes_count_the_discordant_episodes_and_test_them_exactly():
    a = [True] * 8 + [False] + [True] * 5 + [False] * 6
    b = [False] * 8 + [True] + [True] * 5 + [False] * 6
    out = paired_outcomes(a, b, [1.0] * 10 + [0.5] * 10, [0.9] * 10 + [0.5] * 10)
    assert (out["only_a"], out["only_b"], out["successes_a"], out["successes_b"]) == (8, 1, 13, 6)
    assert out["mcnemar_p"] == pytest.approx(2 * (comb(9, 0) + comb(9, 1)) / 2 ** 9)  # two-sided exact binomial, 1 of 9
    assert out["score_difference"] == pytest.approx(-0.05)
    low, high = out["score_difference_ci95"]
    assert low < -0.05 < high < 0  # a difference may be negative: not clipped to [0, 1]
    assert paired_outcomes([True, False], [True, False])["mcnemar_p"] == 1.0  # no discordant episode
    with pytest.raises(ValueError, match="equal-length"):
        paired_outcomes([True], [True, False])


def test_paired_outcomes_tell_whether_the_two_fail_the_same_episodes():
    a = [False] * 5 + [True] * 15  # A fails episodes 0-4
    b = [False] * 6 + [True] * 14  # B fails those and episode 5
    out = paired_outcomes(a, b)
    assert (out["both_failed"], out["both_failed_if_independent"]) == (5, pytest.approx(5 * 6 / 20))
    assert out["same_failures_p"] == pytest.approx(comb(6, 5) * comb(14, 0) / comb(20, 5))  # hypergeometric: all 5 among B's 6
    apart = paired_outcomes([False] * 5 + [True] * 15, [True] * 5 + [False] * 5 + [True] * 10)  # no failure shared
    assert apart["both_failed"] == 0 and apart["same_failures_p"] == 1.0


def test_paired_refuses_evaluations_of_other_seeds(tmp_path):
    for name, seeds in (("a.json", [1, 2]), ("b.json", [1, 3])):
        (tmp_path / name).write_text(json.dumps({"seeds": seeds, "scores": [1.0, 0.0]}))
    with pytest.raises(SystemExit, match="not evaluations on the same seeds"):
        paired(tmp_path / "a.json", tmp_path / "b.json")


def test_the_export_computes_its_torch_policys_actions_and_a_different_sampler_does_not(pusht_image_run, pusht_image_export, one_torch_thread):
    seeds = [11]
    same = lockstep(load_policy(str(pusht_image_run)), load_policy(str(pusht_image_export)), "pusht", seeds)
    assert same["steps"] == 300 or same["per_episode"][0]["success"]
    assert same["max_over_scale"] < 1e-4  # the export's own check tolerance, held in closed loop
    warm = lockstep(load_policy(str(pusht_image_run)), load_policy(str(pusht_image_export), rti=True), "pusht", seeds)
    assert warm["max_over_scale"] > 1e-3  # RTI's warm starts act otherwise than full sampling: the measure tells them apart


def test_the_command_writes_both_parts(pusht_image_run, pusht_image_export, tmp_path, one_torch_thread):
    evals = {}
    for name, scores in (("torch", [1.0, 0.4, 1.0]), ("onnx", [1.0, 1.0, 0.2]), ("again", [0.3, 0.4, 1.0])):
        evals[name] = tmp_path / f"{name}.json"
        evals[name].write_text(json.dumps({"seeds": [5, 6, 7], "scores": scores}))
    out = tmp_path / "out.json"
    assert main(["--policy", str(pusht_image_run), "--export", str(pusht_image_export), "--task", "pusht", "--episodes", "1",
                 "--torch-json", str(evals["torch"]), "--export-json", str(evals["onnx"]), "--torch-again-json", str(evals["again"]),
                 "--json-out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["lockstep"]["episodes"] == 1 and got["lockstep"]["max_over_scale"] < 1e-4
    assert (got["paired"]["torch_only"], got["paired"]["export_only"]) == (1, 1)
    assert (got["paired_torch_again"]["torch_only"], got["paired_torch_again"]["torch_again_only"]) == (1, 0)
    assert (got["paired_export_torch_again"]["torch_again_only"], got["paired_export_torch_again"]["export_only"]) == (1, 2)

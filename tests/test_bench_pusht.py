"""bench/pusht.py's bookkeeping: training time over resumed segments and the checkpoint choice.
(The bench itself trains for an hour; its figures are on the results page.)"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_pusht", ROOT / "bench" / "pusht.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_training_time_adds_up_over_a_resumed_run(bench, tmp_path):
    rows = [{"event": "start", "step": 0}, {"event": "train", "step": 50, "elapsed_s": 30.0},
            {"event": "train", "step": 100, "elapsed_s": 60.0}, {"event": "val", "step": 100, "val_loss": 0.2},
            {"event": "start", "step": 100},  # resumed: the clock starts again
            {"event": "train", "step": 150, "elapsed_s": 40.0}, {"event": "train", "step": 200, "elapsed_s": 75.0}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert bench.train_times(tmp_path) == {50: 30.0, 100: 60.0, 150: 100.0, 200: 135.0}


def test_the_checkpoint_is_chosen_by_validation_score_then_success_then_earlier(bench):
    points = [{"step": 1000, "mean_score": 0.80, "success_rate": 0.30}, {"step": 2000, "mean_score": 0.85, "success_rate": 0.20},
              {"step": 3000, "mean_score": 0.85, "success_rate": 0.26}, {"step": 4000, "mean_score": 0.85, "success_rate": 0.26}]
    assert bench.choose(points)["step"] == 3000
    assert bench.choose(points[::-1])["step"] == 3000  # in any order, a tie goes to the earlier step
    assert bench.choose(points, last_step=2000)["step"] == 2000


def test_the_deploy_row_has_dp_evals_figures_over_the_nodes_reports(bench, tmp_path):
    from dp.stats import mean_interval, wilson_interval

    episodes = [[(0, True, 120, 1.0), (1, False, 300, 0.5)], [(1000, True, 90, 1.0)]]
    for base, (first, eps, p99) in enumerate(zip((0, 2), episodes, (4.0, 9.0))):  # what each launch's `dp node` reported
        report = {"per_episode": [{"seed": s, "success": w, "steps": n, "score": c} for s, w, n, c in eps],
                  "obs_to_command_ms": {"median": 2.0 + base, "p99": p99}}
        (tmp_path / f"deploy_ep{first:03d}.json").write_text(json.dumps(report))
    row = bench.deploy(tmp_path, tmp_path / "export", episodes=3, parallel=2, rti=False, seed=7)  # read back, nothing launched
    assert row["episodes"] == 3 and row["successes"] == 2 and row["seeds"] == [0, 1, 1000] and row["split"] == "test"
    assert row["success_ci95"] == list(wilson_interval(2, 3)) and row["score_ci95"] == list(mean_interval([1.0, 0.5, 1.0]))
    assert row["mean_score"] == pytest.approx(2.5 / 3) and row["mean_length"] == pytest.approx(170.0)
    assert (row["latency_ms"]["median"], row["latency_ms"]["p99"]) == (3.0, 9.0) and "calls" not in row["latency_ms"]
    assert row["command"].count("dp launch launch/pusht_deploy.yaml") == 2
    # one dp eval run's episodes, split: both launches on base seed 7, the second from episode 2 on
    assert row["command"].count("seed=7") == 2 and "first_episode=2" in row["command"] and "episodes=1" in row["command"]

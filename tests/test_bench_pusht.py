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

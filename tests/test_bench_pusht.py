"""bench/pusht.py at a tiny scale: Push-T-format source -> `dp import dp-zarr` -> `dp train` -> held-out error."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pusht():
    spec = importlib.util.spec_from_file_location("bench_pusht", ROOT / "bench" / "pusht.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_source_is_a_pusht_replay_buffer(pusht, tmp_path):
    made = pusht.write_pusht_zarr(tmp_path / "src.zarr", episodes=4, seed=1)
    root = zarr.open_group(str(tmp_path / "src.zarr"), mode="r")
    assert root.metadata.zarr_format == 2
    n = sum(made["episode_lengths"])
    expected = {"img": ((n, 96, 96, 3), np.float32), "state": ((n, 5), np.float32), "action": ((n, 2), np.float32),
                "keypoint": ((n, 9, 2), np.float32), "n_contacts": ((n, 1), np.float32)}
    for key, (shape, dtype) in expected.items():
        assert root[f"data/{key}"].shape == shape and root[f"data/{key}"].dtype == dtype, key
    assert root["meta/episode_ends"][:].tolist() == np.cumsum(made["episode_lengths"]).tolist()
    img, state, action = made["arrays"]["img"], made["arrays"]["state"], made["arrays"]["action"]
    assert 0.0 <= img.min() and img.max() <= 255.0 and not np.array_equal(img, np.rint(img))  # the import has to round
    # behaviour, not noise: the expert succeeds, and each action is a nearby target for the pusher
    assert made["expert_success_rate"] == 1.0
    step = np.linalg.norm(action - state[:, :2], axis=1)
    assert step.max() < 3 * pusht.MAX_SPEED
    block_to_target = np.linalg.norm(state[:, 2:4] - pusht.TARGET, axis=1)
    ends = np.cumsum(made["episode_lengths"])
    assert (block_to_target[ends - 1] < pusht.SUCCESS_DIST + 2 * pusht.MAX_SPEED).all()  # states precede the last push
    assert (block_to_target[np.r_[0, ends[:-1]]] > 80).all()


def test_pipeline_tiny(pusht, tmp_path):
    out = pusht.run_bench(tmp_path, preset="tiny", episodes=6, steps=8, eval_windows=8, workers=0, val_fraction=0.34,
                          overrides=["train.batch_size=16"])
    imp = out["import"]
    assert imp["frames"] == out["source"]["frames"] and imp["frames_per_s"] > 0
    assert imp["img"]["dtype"] == "uint8" and imp["img"]["shape"][1:] == [96, 96, 3]
    assert imp["img"]["shape"][0] == imp["state"]["shape"][0] == imp["action"]["shape"][0] == out["source"]["frames"]
    assert imp["state"]["dtype"] == imp["action"]["dtype"] == "float32"
    assert imp["state"]["shape"][1:] == [5] and imp["action"]["shape"][1:] == [2]
    assert imp["img_max_abs_diff"] <= 1.0  # float 0..255 -> uint8, values kept within 1
    assert imp["state_max_abs_diff"] == 0.0 and imp["action_max_abs_diff"] == 0.0
    assert imp["roles"] == {"lowdim": ["state"], "image": ["img"], "action": ["action"]}

    train = out["train"]
    assert train["steps"] == 8 and train["wall_s"] > 0 and train["steps_per_s"] > 0

    ev = out["eval"]
    assert ev["obs_keys"] == ["state", "img"] and ev["held_out_episodes"] == 2 and ev["windows"] == 8
    for key in ("policy_mse", "mean_action_mse", "hold_position_mse", "policy_mse_normalised",
                "mean_action_mse_normalised", "policy_over_mean_ratio", "policy_first_action_mse"):
        assert math.isfinite(ev[key]) and ev[key] >= 0, key
    assert ev["mean_action_mse"] > 0
    assert ev["policy_over_mean_ratio"] == pytest.approx(ev["policy_mse"] / ev["mean_action_mse"])

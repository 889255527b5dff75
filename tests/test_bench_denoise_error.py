"""bench/denoise_error.py: the denoising error per noise level, against denoisers whose error is known, and
through a real (tiny) trained checkpoint and its held-out windows."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.denoise_error import denoising_error, main  # noqa: E402
from dp.cli import main as dp_main  # noqa: E402
from dp.testing.reach_store import make_store  # noqa: E402

X0 = torch.randn(4096, 10, 7, generator=torch.Generator().manual_seed(3))


def test_returning_the_input_removes_no_noise_and_the_oracle_all_of_it():
    keep = denoising_error(lambda x, s: x, X0, [0.01, 0.5], seed=1)
    assert [r["rmse_over_sigma"] for r in keep] == pytest.approx([1.0, 1.0], abs=0.01)
    assert all(r["rmse_over_sigma"] == 0.0 for r in denoising_error(lambda x, s: X0, X0, [0.01, 0.5]))
    halve = denoising_error(lambda x, s: X0 + (x - X0) / 2, X0, [0.1], seed=1)  # removes half the noise
    assert halve[0]["rmse_over_sigma"] == pytest.approx(0.5, abs=0.01) and halve[0]["rmse"] == pytest.approx(0.05, abs=0.001)


def test_the_training_share_below_a_sigma_is_the_log_logistic_cdf():
    rows = denoising_error(lambda x, s: x, X0[:8], [0.5, 0.05], train=(math.log(0.5), 0.5))
    assert rows[0]["train_share_below"] == pytest.approx(0.5)
    assert rows[1]["train_share_below"] == pytest.approx(1 / (1 + math.exp(math.log(10) / 0.5)))  # about 1%


def test_a_trained_checkpoint_is_measured_on_its_held_out_windows(tmp_path, capsys):
    store = make_store(tmp_path / "reach.zarr", episodes=10, length=20)
    run = tmp_path / "run"
    assert dp_main(["train", "--data", str(store), "--preset", "tiny", "--out", str(run), "--no-progress", "train.steps=30",
                    "train.batch_size=16", "data.val_fraction=0.2"]) == 0
    capsys.readouterr()  # the training's output
    out = tmp_path / "err.json"
    assert main([str(run), "--windows", "16", "--sigmas", "0.01,1.0,50", "--json-out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result == json.loads(capsys.readouterr().out)
    (policy,) = result["policies"]
    assert policy["windows"] == 16 and [r["sigma"] for r in policy["rows"]] == [0.01, 1.0, 50.0]
    ratios = [r["rmse_over_sigma"] for r in policy["rows"]]
    assert ratios[2] < 0.1 < ratios[0]  # at sigma 50 any denoiser beats returning the noise; at 0.01 barely
    assert all(r["rmse"] > 0 for r in policy["rows"])

"""bench/average_checkpoints.py: the mean of one run's checkpoints as a policy folder, and refusals that name what
does not fit (another run's checkpoint, a single checkpoint, an occupied output folder)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.average_checkpoints import average_checkpoints, main  # noqa: E402
from dp.cli import main as dp_main  # noqa: E402
from dp.errors import DpError  # noqa: E402
from dp.infer.policy import Policy  # noqa: E402
from dp.models.checkpoint_files import MODEL_FILE, load_weights, verify_checkpoint  # noqa: E402
from dp.testing.reach_store import make_store  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny runs on one store: ``a`` with checkpoints at steps 10 and 20, ``b`` a narrower model."""
    root = tmp_path_factory.mktemp("avg")
    store = make_store(root / "reach.zarr", episodes=6, length=20)
    for name, extra in (("a", []), ("b", ["model.d_model=32"])):
        assert dp_main(["train", "--data", str(store), "--preset", "tiny", "--out", str(root / name), "--no-progress", "train.steps=20",
                        "train.ckpt_every=10", "train.batch_size=8", *extra]) == 0
    return root


def test_the_average_is_the_mean_of_the_weights_and_loads_as_a_policy(runs, tmp_path):
    a10, a20 = runs / "a/checkpoints/step_0000010", runs / "a/checkpoints/step_0000020"
    out = average_checkpoints([a10, a20], tmp_path / "avg")
    verify_checkpoint(out)  # checksums written for the new weights
    w10, w20, avg = (load_weights(p / MODEL_FILE) for p in (a10, a20, out))
    assert avg.keys() == w10.keys()
    changed = [k for k in avg if not torch.equal(w10[k], w20[k])]
    assert changed  # training moved the weights between the two checkpoints
    for k in avg:
        assert torch.allclose(avg[k], (w10[k] + w20[k]) / 2, atol=1e-7)
    policy = Policy.load(out)
    chunk = policy.predict_chunk({k: np.zeros(s, dtype=np.float32) for k, s in policy.cfg.data.shapes.items()})
    assert chunk.shape == (policy.action_horizon, policy.action_dim) and np.isfinite(chunk).all()


def test_checkpoints_of_another_run_or_too_few_are_refused(runs, tmp_path, capsys):
    a20, b20 = runs / "a/checkpoints/step_0000020", runs / "b/checkpoints/step_0000020"
    with pytest.raises(DpError, match="model configuration differs"):
        average_checkpoints([a20, b20], tmp_path / "x")
    with pytest.raises(DpError, match="at least two checkpoints"):
        average_checkpoints([a20], tmp_path / "x")
    with pytest.raises(DpError, match="listed twice"):
        average_checkpoints([a20, runs / "a"], tmp_path / "x")  # the run folder resolves to its latest checkpoint
    (tmp_path / "full").mkdir()
    (tmp_path / "full/keep.txt").write_text("mine")
    assert main([str(runs / "a/checkpoints/step_0000010"), str(a20), "--out", str(tmp_path / "full")]) == 2
    assert "not an empty folder" in capsys.readouterr().err and (tmp_path / "full/keep.txt").read_text() == "mine"
    assert not (tmp_path / "x").exists()

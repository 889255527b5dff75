"""data.task_weights: multitask windows drawn per task in proportion to their weight, per (seed, epoch),
sharded across ranks, resumable mid-epoch; a named task the data lacks, or a negative weight, is refused."""

from __future__ import annotations

import numpy as np
import pytest

from dp.config import build_config
from dp.errors import DpError
from dp.testing.reach_store import make_store
from dp.train.data import build_data, resolve, window_weights
from dp.train.resumable_sampler import ResumableSampler


def _counts(order: list[int], weights: np.ndarray) -> dict[float, int]:
    drawn = weights[np.asarray(order)]
    return {float(w): int((drawn == w).sum()) for w in np.unique(weights)}


def test_weighted_epoch_shares_draws_by_total_weight():
    weights = np.array([1.0] * 300 + [3.0] * 100)  # two groups of equal total weight: 300 x 1 and 100 x 3
    sampler = ResumableSampler(list(range(400)), num_replicas=1, rank=0, seed=7, weights=weights)
    order = list(sampler)
    assert len(order) == 400 == len(sampler)
    assert _counts(order, weights) == {1.0: 200, 3.0: 200}  # half the draws each
    heavy = [i for i in order if i >= 300]
    assert sorted(heavy) == sorted(list(range(300, 400)) * 2)  # the small group repeated whole, twice
    light = [i for i in order if i < 300]
    assert len(set(light)) == 200  # the large group without repeats
    assert list(sampler) == order  # a function of (seed, epoch)
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_weighted_epoch_resumes_mid_epoch_and_shards_across_ranks():
    weights = np.array([1.0] * 50 + [0.0] * 20 + [2.0] * 30)
    full = ResumableSampler(list(range(100)), num_replicas=1, rank=0, seed=3, weights=weights)
    full.set_position(2, 0)
    order = list(full)
    assert not set(order) & set(range(50, 70))  # weight 0: never drawn
    resumed = ResumableSampler(list(range(100)), num_replicas=1, rank=0, seed=3, weights=weights)
    resumed.set_position(2, 37)
    assert list(resumed) == order[37:] and len(resumed) == len(order) - 37
    ranks = [ResumableSampler(list(range(100)), num_replicas=2, rank=r, seed=3, weights=weights) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(2)
    shards = [list(r) for r in ranks]
    assert len(shards[0]) == len(shards[1]) == 50
    assert sorted(shards[0] + shards[1]) == sorted(order)  # the ranks split the same epoch


def test_unweighted_order_is_unchanged():
    """Without task weights the order is DistributedSampler's, so runs trained before the option resume alike."""
    plain = ResumableSampler(list(range(60)), num_replicas=1, rank=0, seed=5)
    plain.set_epoch(4)
    from torch.utils.data import DistributedSampler

    reference = DistributedSampler(list(range(60)), num_replicas=1, rank=0, shuffle=True, seed=5)
    reference.set_epoch(4)
    assert list(plain) == list(reference)


def test_task_weights_map_to_windows_and_bad_weights_are_refused(tmp_path):
    a = make_store(tmp_path / "reach.zarr", episodes=3, length=20, tasks=("reach",), seed=1)
    b = make_store(tmp_path / "retreat.zarr", episodes=3, length=20, tasks=("retreat",), seed=2)
    cfg, stores = resolve(build_config("tiny", ["data.val_fraction=0"]), [str(a), str(b)])
    train = build_data(cfg, stores).train
    assert window_weights({}, train) is None
    weights = window_weights({"retreat": 4.0}, train)
    names = np.asarray(train.tasks)[train.task_ids]
    assert (weights[names == "retreat"] == 4.0).all() and (weights[names == "reach"] == 1.0).all()
    with pytest.raises(DpError, match="open_door, not a task of the training data"):
        window_weights({"open_door": 2.0}, train)
    with pytest.raises(DpError, match="finite and >= 0"):
        window_weights({"reach": -1.0}, train)
    with pytest.raises(DpError, match="at least one task above 0"):
        window_weights({"reach": 0.0, "retreat": 0.0}, train)


def test_the_trainer_draws_its_batches_with_the_task_weights(tmp_path):
    from dp.train.trainer import Trainer

    a = make_store(tmp_path / "reach.zarr", episodes=3, length=20, tasks=("reach",), seed=1)
    b = make_store(tmp_path / "retreat.zarr", episodes=3, length=20, tasks=("retreat",), seed=2)
    cfg = build_config("tiny", ["data.val_fraction=0", "data.task_weights={retreat: 3}"])
    trainer = Trainer(cfg, [str(a), str(b)], tmp_path / "run", resume=False, progress=False)
    names = np.asarray(trainer.data.train.tasks)[trainer.data.train.task_ids]
    drawn = names[np.asarray(list(trainer.sampler))]
    assert (drawn == "retreat").sum() == pytest.approx(3 * (drawn == "reach").sum(), rel=0.05)  # equal windows per task: 3 to 1

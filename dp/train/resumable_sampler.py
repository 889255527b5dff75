"""The training data order: a torch Sampler that shuffles per (seed, epoch) and can start mid-epoch,
optionally drawing each window with a weight (multitask task balance)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DistributedSampler


class ResumableSampler(DistributedSampler):
    """DistributedSampler (seeded shuffle per epoch, one shard per rank) that can start mid-epoch.

    With ``weights`` (one non-negative value per window) an epoch still holds ``len(dataset)`` draws, but
    each group of equally weighted windows gets a share of them proportional to its total weight: its
    windows are drawn in seeded shuffles, a group larger than its share without repeats, a smaller one
    repeated whole before any window is drawn a further time. Written here because torch's
    WeightedRandomSampler neither shards across ranks nor starts mid-epoch."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int, weights: np.ndarray | None = None):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.skip = 0
        self.groups: list[tuple[np.ndarray, float]] = []
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float64)
            if weights.shape != (len(dataset),) or not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
                raise ValueError(f"window weights: expected {len(dataset)} finite non-negative values with a positive sum")
            self.groups = [(np.flatnonzero(weights == w), float(w)) for w in np.unique(weights) if w > 0]

    def set_position(self, epoch: int, skip_samples: int) -> None:
        """Start the next iteration at ``epoch``'s order, ``skip_samples`` into this rank's shard."""
        self.set_epoch(epoch)
        self.skip = skip_samples

    def _weighted_order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        total = len(self.dataset)
        mass = sum(len(idx) * w for idx, w in self.groups)
        shares = [int(round(total * len(idx) * w / mass)) for idx, w in self.groups]
        draws = []
        for (idx, _), share in zip(self.groups, shares):
            rounds = [idx[torch.randperm(len(idx), generator=generator).numpy()] for _ in range(math.ceil(share / len(idx)))]
            draws.append(np.concatenate(rounds)[:share] if rounds else idx[:0])
        order = np.concatenate(draws)
        order = order[torch.randperm(len(order), generator=generator).numpy()]
        padded = np.resize(order, self.total_size) if len(order) else order  # as DistributedSampler: wrap to a multiple of the ranks
        return padded[self.rank : self.total_size : self.num_replicas].tolist()

    def __iter__(self):
        order = self._weighted_order() if self.groups else list(super().__iter__())
        return iter(order[self.skip :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)

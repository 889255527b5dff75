"""The training data order: a torch Sampler that shuffles per (seed, epoch) and can start mid-epoch."""

from __future__ import annotations

from torch.utils.data import DistributedSampler


class ResumableSampler(DistributedSampler):
    """DistributedSampler (seeded shuffle per epoch, one shard per rank) that can start mid-epoch."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.skip = 0

    def set_position(self, epoch: int, skip_samples: int) -> None:
        """Start the next iteration at ``epoch``'s order, ``skip_samples`` into this rank's shard."""
        self.set_epoch(epoch)
        self.skip = skip_samples

    def __iter__(self):
        return iter(list(super().__iter__())[self.skip :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)

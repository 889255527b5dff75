"""Where a training process runs: its rank in the torchrun job and its device."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dp.devices import check_local_processes, torch_device


@dataclass
class DistInfo:
    """This process's place in the job (rank 0 alone writes files)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun set up (gloo on CPU, NCCL on GPU, where each of a machine's
    processes takes cuda:LOCAL_RANK), or run alone on ``device_pref`` (train.device: cpu, cuda,
    cuda:N, mps or auto, see :mod:`dp.devices`). A DpError before any work when the device is not
    here or the machine has fewer GPUs than processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    if world > 1:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        check_local_processes(device_pref, local, f"train.device={device_pref} with {local} training processes on this machine")
    device = torch.device(torch_device(device_pref, "train.device"))
    if device.type == "cuda":
        if world > 1:
            device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device

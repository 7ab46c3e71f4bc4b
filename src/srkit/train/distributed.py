"""Multi-process training through PyTorch's own runtime (launched by ``torchrun``).

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK; without them srkit runs as one process. CPU
runs use the gloo backend, CUDA runs NCCL. Only rank 0 logs, validates and writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessGroup:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> ProcessGroup:
    """Join the process group described by torchrun's environment, if there is one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ProcessGroup()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return ProcessGroup(rank, world_size, local_rank)


def average_across_processes(
    values: dict[str, float], group: ProcessGroup, device: torch.device
) -> dict[str, float]:
    """Mean of each scalar over all processes (identity in a single process)."""
    if not group.distributed or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    tensor /= group.world_size
    return dict(zip(keys, tensor.tolist(), strict=True))


def barrier(group: ProcessGroup) -> None:
    if group.distributed:
        dist.barrier()


def shutdown(group: ProcessGroup) -> None:
    if group.distributed and dist.is_initialized():
        dist.destroy_process_group()

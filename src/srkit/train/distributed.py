"""Multi-process training through PyTorch's own runtime (launched by ``torchrun``).

``torchrun --nproc_per_node N -m srkit train CONFIG`` (or ``srkit train CONFIG --nproc N``, which
starts the same launcher) runs N copies of the trainer. torchrun sets RANK / WORLD_SIZE /
LOCAL_RANK; without them srkit runs as one process. The backend follows the device: NCCL for
CUDA, gloo for CPU. Only rank 0 logs, validates and writes files.

Batch layout: ``data.train.batch_size`` is the *global* batch of one optimizer step, over all
processes. Each process takes ``batch_size / processes`` images of it (a contiguous slice, see
:mod:`srkit.data.sampler`) and splits them into ``train.megabatch`` chunks. Because the data stream
is a function of (seed, step) for the global batch, a run with P processes and megabatch M sees
the same images per step as one with 1 process and megabatch P x M, and a run can resume with a
different process count (see ``docs/scaling.md``).
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from srkit.errors import ConfigError

# Rank 0 validates and writes checkpoints while the others wait at a barrier; validation of a
# large set can take long, so the collective timeout is generous.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)


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


def backend_for(device_type: str) -> str:
    """The collective backend for a device type: NCCL on CUDA, gloo otherwise."""
    return "nccl" if device_type == "cuda" else "gloo"


def launched_world_size() -> int:
    """Processes of the job this process belongs to (1 when not started by torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def check_batch_layout(batch_size: int, processes: int, megabatch: int) -> int:
    """The per-process batch, or a one-line ConfigError when the global batch does not split
    evenly over ``processes`` and then into ``megabatch`` chunks."""
    if batch_size % processes:
        raise ConfigError(
            f"data.train.batch_size: {batch_size} is the global batch (all processes "
            f"together) and must be divisible by the {processes} training processes"
        )
    local = batch_size // processes
    if local % megabatch:
        raise ConfigError(
            f"train.megabatch: {megabatch} does not divide the per-process batch {local} "
            f"(data.train.batch_size {batch_size} / {processes} processes)"
        )
    return local


def init_distributed(device_type: str) -> ProcessGroup:
    """Join the process group described by torchrun's environment, if there is one."""
    world_size = launched_world_size()
    if world_size <= 1:
        return ProcessGroup()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        available = torch.cuda.device_count()
        if local_rank >= available:
            raise ConfigError(
                f"process {rank} has local rank {local_rank} but this machine has only "
                f"{available} CUDA device(s); start at most {available} processes per node"
            )
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        kwargs = {"backend": backend_for(device_type), "timeout": COLLECTIVE_TIMEOUT}
        if device_type == "cuda":
            kwargs["device_id"] = torch.device("cuda", local_rank)
        dist.init_process_group(**kwargs)
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


def launch_processes(nproc: int, srkit_arguments: Sequence[str]) -> int:
    """Run ``python -m srkit <srkit_arguments>`` in ``nproc`` processes on this machine through
    torchrun's launcher (``--standalone``: a local rendezvous on a free port); returns the
    exit code (the first failed process's, 0 when all succeeded)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if launched_world_size() > 1:
        raise ConfigError(
            "--nproc: this process was already started by torchrun (WORLD_SIZE is set); "
            "use either torchrun or --nproc, not both"
        )
    arguments = parse_args(
        ["--standalone", "--nproc_per_node", str(nproc), "-m", "srkit", *srkit_arguments]
    )
    try:
        run(arguments)
    except ChildFailedError as failure:
        codes = [f.exitcode for f in failure.failures.values() if f.exitcode]
        code = codes[0] if codes else 1
        print(
            f"srkit: error: a training process failed (exit code {code}); its message is above",
            file=sys.stderr,
        )
        return code if 0 < code < 256 else 1
    return 0


def wrap_for_training(
    module: nn.Module,
    group: ProcessGroup,
    device: torch.device,
    compile_it: bool,
    find_unused: bool = True,
) -> nn.Module:
    """A trained network as the step calls it: DDP around it when distributed, then
    torch.compile around that (the order PyTorch recommends: the compiler sees DDP's bucket
    boundaries and can overlap gradient communication with the backward)."""
    wrapped = module
    if group.distributed:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        # find_unused_parameters: only where a step may leave parameters without gradients
        # (build.may_leave_parameters_unused): DDP must not wait for those, but the search
        # costs an extra autograd traversal per step where there are none.
        # gradient_as_bucket_view: gradients live in the communication buckets, no copy.
        wrapped = DistributedDataParallel(
            wrapped,
            device_ids=ids,
            find_unused_parameters=find_unused,
            gradient_as_bucket_view=True,
        )
    if compile_it:
        wrapped = torch.compile(wrapped)
    return wrapped


def any_process(flag: bool, group: ProcessGroup, device: torch.device) -> bool:
    """Whether ``flag`` is true on any process (the flag itself in a single process)."""
    if not group.distributed:
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())

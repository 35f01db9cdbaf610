"""Data-parallel training under `torchrun` (DDP): one process per device, each taking its
contiguous share of every global batch; rank 0 alone logs and writes checkpoints.

Every rank draws the same epoch order and augmentation from the shared (seed, epoch)
generator and slices its part, so no DistributedSampler is needed and a 2-process run sees
exactly the global batches of a 1-process run (BatchNorm statistics are per rank, the one
difference).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from rotnet.errors import RotnetError


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, start: int, stop: int) -> tuple[int, int]:
        """This rank's part of the global batch [start, stop)."""
        per_rank = (stop - start) // self.world_size
        begin = start + self.rank * per_rank
        return begin, begin + per_rank

    def sum(self, *values: torch.Tensor) -> list[torch.Tensor]:
        """All-reduce (sum) of a few scalars, in one collective."""
        if not self.enabled:
            return list(values)
        packed = torch.stack([v.double() for v in values])
        dist.all_reduce(packed)
        return list(packed.unbind())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def from_environment() -> Distributed:
    """The process group torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK (if any)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    return Distributed(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def join(world: Distributed, device_type: str) -> None:
    """Join torchrun's process group (gloo on CPU, NCCL on GPUs), once per process."""
    if world.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")


def check_batch(batch_size: int, world: Distributed) -> None:
    if batch_size % world.world_size:
        raise RotnetError(f"batch size {batch_size} is not divisible by the world size "
                          f"{world.world_size}; choose a batch size that is")

"""Which process am I? torchrun's environment, read with the standard library.

`torchrun --nproc_per_node=N -m microgpt train --engine torch ...` starts N copies of the
program and tells each one its place through environment variables (RANK, WORLD_SIZE,
LOCAL_RANK; https://pytorch.org/docs/stable/elastic/run.html). The CLI reads them here to
decide who prints and writes files; the torch engine reads them to join the process group
and to wrap its model in DistributedDataParallel. Nothing here imports torch.

How a global batch is split: `Trainer.batch(step)` gives every rank the same B sequences
(the same seed, the same shuffle). Rank r trains on sequences r, r + W, r + 2W, ... of it,
so the W ranks together see exactly the batch a single process would see with the same
--batch-size.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from .config import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Launch:
    """This process's place among the processes torchrun started (1 of 1 without torchrun)."""

    rank: int = 0  # 0 .. world_size - 1, across all machines
    world_size: int = 1  # processes in the job
    local_rank: int = 0  # index among this machine's processes (picks the GPU)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 prints the run's output and writes its metrics and checkpoints."""
        return self.rank == 0


def from_env(environ: Mapping[str, str] | None = None) -> Launch:
    """The launch torchrun describes in `environ` (default: os.environ)."""
    env = os.environ if environ is None else environ
    try:
        world_size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun)"
        ) from None
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ConfigError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world_size}")
    return Launch(rank=rank, world_size=world_size, local_rank=local_rank)


def shard(batch: list[T], rank: int, world_size: int) -> list[T]:
    """Rank `rank`'s part of a global batch: items rank, rank + W, rank + 2W, ..."""
    return batch[rank::world_size]


def check_batch(launch: Launch, batch_size: int) -> None:
    """Every rank needs at least one sequence per step (DDP runs backward on all of them)."""
    if batch_size < launch.world_size:
        raise ConfigError(
            f"--batch-size {batch_size} is smaller than the {launch.world_size} processes; "
            f"use --batch-size {launch.world_size} or more (the batch is split across processes)"
        )


def describe(launch: Launch, batch_size: int) -> str:
    """One line on how a global batch of `batch_size` sequences is split."""
    W = launch.world_size
    per_rank = [len(range(r, batch_size, W)) for r in range(W)]
    each = f"{per_rank[0]} each" if len(set(per_rank)) == 1 else "/".join(map(str, per_rank))
    return (
        f"ddp: {W} processes; effective batch {batch_size} sequences per step "
        f"(as one process with --batch-size {batch_size}); rank r trains on sequences "
        f"r, r+{W}, ... of each batch ({each}); gradients averaged by DDP over all tokens"
    )

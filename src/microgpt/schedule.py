"""Learning-rate schedules of the two revisions, with the original's operation order."""

from __future__ import annotations

import math

from .config import OptimConfig


def learning_rate(optim: OptimConfig, step: int, num_steps: int) -> float:
    """The learning rate for 0-based `step` of `num_steps`."""
    lr = optim.learning_rate
    if optim.schedule == "linear":
        return lr * (1 - step / num_steps)  # final revision: linear decay to zero
    if optim.schedule == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * step / num_steps))  # first revision
    raise ValueError(f"unknown schedule {optim.schedule!r}")

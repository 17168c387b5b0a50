"""The learning-rate schedule: linear warmup, then constant, cosine or linear decay."""

from __future__ import annotations

import math

from trainer.config import TrainConfig
from trainer.lr_finder import sweep_lr


def lr_at(
    step: int,
    max_lr: float,
    min_lr: float,
    warmup_steps: int,
    total_steps: int,
    schedule: str = "cosine",
) -> float:
    """Learning rate for 0-based `step`.

    Warmup is max_lr * (step + 1) / warmup_steps, so step 0 already moves the weights.
    After warmup, progress runs from 0 to 1 over the remaining steps.
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return max_lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return max_lr - (max_lr - min_lr) * progress
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def config_lr(config: TrainConfig, step: int) -> float:
    if config.lr_finder is not None:
        return sweep_lr(config.lr_finder, step, config.max_steps)
    return lr_at(
        step, config.lr, config.min_lr, config.warmup_steps, config.max_steps, config.schedule
    )

"""The learning rate of each step: linear warmup, then constant, cosine or linear decay;
or, for an LR range test, an exponential sweep and the observer that ends it.

The LR range test (Smith 2017, "Cyclical Learning Rates"; fastai's lr_find): from a
fresh model the LR grows exponentially, one value per step, from start_lr to end_lr
over max_steps steps. The loss is smoothed with a bias-corrected EMA; the test ends when
the smoothed loss exceeds `divergence` times its minimum (or is non-finite).

The suggestion: one tenth of the LR at the minimum of the smoothed loss. At the minimum
the LR is already at the edge of stability; a tenth of it sits in the steep, still
stable descent. (The steepest-descent point is the other common heuristic; on short,
noisy sweeps its argmax of a derivative jumps around, while the minimum is robust.)
Torch-free.
"""

from __future__ import annotations

import math

import torch

from trainer.config import LRFinderConfig, TrainConfig


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


# -- the LR range test ------------------------------------------------------------------

SUGGESTION_FRACTION = 0.1  # of the LR at the smoothed loss's minimum
MIN_STEPS_BEFORE_DIVERGENCE = 10  # the EMA needs a few points before it means anything


def sweep_lr(finder: LRFinderConfig, step: int, max_steps: int) -> float:
    """start_lr at step 0, end_lr at the last step, exponential in between."""
    progress = step / max(1, max_steps - 1)
    return finder.start_lr * (finder.end_lr / finder.start_lr) ** progress


class LRRangeTest:
    """Follows the sweep's losses: smoothed loss, its minimum, divergence, suggestion."""

    def __init__(self, finder: LRFinderConfig) -> None:
        self.finder = finder
        self.average = 0.0
        self.count = 0
        self.smoothed: float | None = None
        self.best_loss = math.inf
        self.best_lr: float | None = None

    def observe(self, lr: float, loss: float) -> bool:
        """Record one step's loss at lr; True when the loss has diverged."""
        if not math.isfinite(loss):
            return True
        beta = self.finder.smoothing
        self.count += 1
        self.average = beta * self.average + (1 - beta) * loss
        self.smoothed = self.average / (1 - beta**self.count)
        if self.smoothed < self.best_loss:
            self.best_loss, self.best_lr = self.smoothed, lr
        return (
            self.count >= MIN_STEPS_BEFORE_DIVERGENCE
            and self.smoothed > self.finder.divergence * self.best_loss
        )

    def suggestion(self) -> float | None:
        return None if self.best_lr is None else self.best_lr * SUGGESTION_FRACTION


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the LR on every group, every step, so a resumed run cannot keep a stale one."""
    for group in optimizer.param_groups:
        group["lr"] = lr

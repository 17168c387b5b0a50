"""The LR range test (Smith 2017, "Cyclical Learning Rates"; fastai's lr_find).

From a fresh model the LR grows exponentially, one value per step, from start_lr to
end_lr over max_steps steps. The loss is smoothed with a bias-corrected EMA; the test
ends when the smoothed loss exceeds `divergence` times its minimum (or is non-finite).

The suggestion: one tenth of the LR at the minimum of the smoothed loss. At the minimum
the LR is already at the edge of stability; a tenth of it sits in the steep, still
stable descent. (The steepest-descent point is the other common heuristic; on short,
noisy sweeps its argmax of a derivative jumps around, while the minimum is robust.)
Torch-free.
"""

from __future__ import annotations

import math

from trainer.config import LRFinderConfig

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

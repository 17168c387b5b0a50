"""train_val_leak: val loss equals the train loss, evaluation after evaluation, as both fall."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from app.rules.base import Observation, Rule, RunView, Thresholds


class TrainValLeakThresholds(Thresholds):
    # |val - train| / train at or below this counts as equal
    tolerance: float = Field(default=0.001, ge=0)
    # consecutive equal evaluations before it is a pattern rather than a coincidence
    evaluations: int = Field(default=3, ge=2)
    # the val loss must fall by this fraction across those evaluations: at init every
    # model scores the same on any text, so equality there says nothing about the split
    min_fall: float = Field(default=0.02, ge=0)


class TrainValLeak(Rule):
    """The validation loss equals the training loss at evaluation after evaluation while
    both fall. Held-out text scores worse than text the model trains on, and the gap
    grows with every pass over the training data; a val loss that matches the train
    loss this closely suggests the validation set is drawn from the training data or
    shares duplicated documents with it. Such a val loss cannot show overfitting, and
    the best-by-val checkpoint is chosen blindly."""

    code = "train_val_leak"
    title = "Val loss identical to train loss (possible leak)"
    severity = "info"
    fix = (
        "Check the train/val split: the validation text must be held out from training "
        "(no val windows drawn from the train split, no documents duplicated across both). "
        "Deduplicate the corpus before splitting."
    )
    thresholds = TrainValLeakThresholds

    def check(self, view: RunView, limits: TrainValLeakThresholds) -> list[Observation]:
        val = view.series("val/loss")
        if not len(view.new("val/loss")):
            return []
        train = _train_at(view, val.steps)
        if train is None:
            return []
        ok = np.isfinite(val.values) & np.isfinite(train) & (train > 0)
        steps, val_loss, train_loss = val.steps[ok], val.values[ok], train[ok]
        if not len(steps):
            return []
        gap = np.abs(val_loss - train_loss) / train_loss
        close = gap <= limits.tolerance
        # streak[i]: how many evaluations in a row, ending at i, were equal
        index = np.arange(len(steps))
        breaks = np.where(close, -1, index)
        streak = index - np.maximum.accumulate(breaks)
        first = np.minimum(index - streak + 1, index)  # where the streak began
        fall = 1 - val_loss / val_loss[first]
        active = (streak >= limits.evaluations) & (fall >= limits.min_fall)
        observations = []
        for i in np.flatnonzero(steps > view.since_of("val/loss")):
            step = int(steps[i])
            if not active[i]:
                observations.append(Observation(step, False))
                continue
            n, start = int(streak[i]), int(first[i])
            observations.append(
                Observation(
                    step,
                    True,
                    evidence={
                        "val_loss": float(val_loss[i]),
                        "train_loss": float(train_loss[i]),
                        "relative_gap": float(gap[i]),
                        "max_relative_gap": float(gap[start : i + 1].max()),
                        "equal_evaluations": n,
                        "since_step": int(steps[start]),
                        "val_loss_fall": float(fall[i]),
                        "tolerance": limits.tolerance,
                        "evaluations": limits.evaluations,
                    },
                    detail=(
                        f"val/loss ({val_loss[i]:.4g}) matched the train loss "
                        f"({train_loss[i]:.4g}) within {100 * gap[start : i + 1].max():.2f}% "
                        f"at {n} evaluations in a row since step {int(steps[start])}, while "
                        f"falling {100 * fall[i]:.0f}%."
                    ),
                )
            )
        return observations


def _train_at(view: RunView, eval_steps: np.ndarray) -> np.ndarray | None:
    """train/loss_eval at the eval steps, else train/loss at those steps."""
    for key in ("train/loss_eval", "train/loss"):
        series = view.series(key)
        if len(series):
            values = series.at(eval_steps)
            if np.isfinite(values).any():
                return values
    return None

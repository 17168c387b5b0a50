"""overfit: val loss climbs for several evaluations while the train loss keeps falling."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from app.rules.base import Observation, Rule, RunView, Thresholds


class OverfitThresholds(Thresholds):
    # consecutive evaluations above the best val/loss, across which it rose
    evaluations: int = Field(default=3, ge=2)
    # val/loss must sit this fraction above its best so far (noise on a plateau is not a rise)
    min_rise: float = Field(default=0.01, ge=0)
    # train/loss points (ending at the eval step) whose median stands in for train/loss_eval
    smooth_window: int = Field(default=25, ge=1)


class Overfit(Rule):
    """The validation loss has been rising for several evaluations in a row while the
    training loss keeps falling: the model is memorising its training data rather than
    learning what generalises. Every further step makes the weights worse on unseen
    text; the checkpoint at the best validation loss is the one to keep."""

    code = "overfit"
    title = "Overfitting: val loss rising while train loss falls"
    severity = "warning"
    fix = (
        "Stop early and keep the checkpoint at the best val loss (the trainer keeps it as "
        "ckpt_best); a launched run can do this by itself with the early-stopping action, "
        'actions.early_stop: {"patience": 5, "min_delta": 0.0}. To train longer without '
        "overfitting, use more data, add dropout, raise "
        "weight_decay, or use a smaller model."
    )
    fix_external = (
        "Stop early and keep the weights from the evaluation with the best val loss (save "
        "a checkpoint whenever val loss improves). To train longer without overfitting, use "
        "more data, add dropout, raise weight_decay, or use a smaller model."
    )
    thresholds = OverfitThresholds
    keep_firing_for = 1  # clear only when val loss is back near its best

    def check(self, view: RunView, limits: OverfitThresholds) -> list[Observation]:
        val = view.series("val/loss")
        if not len(view.new("val/loss")):
            return []
        train = _train_at(view, val.steps, limits.smooth_window)
        if train is None:
            return []
        ok = np.isfinite(val.values) & np.isfinite(train)
        steps, val_loss, train_loss = val.steps[ok], val.values[ok], train[ok]
        if not len(steps):
            return []
        k = limits.evaluations
        best = np.minimum.accumulate(val_loss)
        best_index = _running_argmin(val_loss)
        # onset[i]: the last k evals all sat above the best so far (so the best came before
        # them) and val rose across them while train fell. Not k strict rises in a row:
        # eval noise breaks those while the trend is plain.
        above = val_loss > best * (1 + limits.min_rise)
        onset = np.zeros(len(steps), dtype=bool)
        if len(steps) > k:
            run = np.convolve(above.astype(int), np.ones(k, dtype=int), mode="valid")[1:] == k
            rose = val_loss[k:] > val_loss[:-k]
            onset[k:] = run & rose & (train_loss[k:] < train_loss[:-k])
        # The latest onset at or before each eval; the episode lasts while it follows the best.
        last_onset = np.maximum.accumulate(np.where(onset, np.arange(len(steps)), -1))
        active = above & (last_onset > best_index)
        observations = []
        for i in np.flatnonzero(steps > view.since_of("val/loss")):
            step = int(steps[i])
            if not active[i]:
                observations.append(Observation(step, False))
                continue
            b, start = int(best_index[i]), int(last_onset[i]) - k
            observations.append(
                Observation(
                    step,
                    True,
                    evidence={
                        "val_loss": float(val_loss[i]),
                        "best_step": int(steps[b]),
                        "best_val_loss": float(val_loss[b]),
                        "rise_from_best": float(val_loss[i] / val_loss[b] - 1),
                        "train_loss": float(train_loss[i]),
                        "train_loss_at_best": float(train_loss[b]),
                        "rising_since_step": int(steps[start]),
                        "evaluations": k,
                        "min_rise": limits.min_rise,
                    },
                    detail=(
                        f"val/loss rose to {val_loss[i]:.4g} at step {step}, "
                        f"{100 * (val_loss[i] / val_loss[b] - 1):.1f}% above its best "
                        f"({val_loss[b]:.4g} at step {int(steps[b])}), while the train loss "
                        f"fell from {train_loss[b]:.4g} to {train_loss[i]:.4g}."
                    ),
                )
            )
        return observations


def _train_at(view: RunView, eval_steps: np.ndarray, smooth_window: int) -> np.ndarray | None:
    """The train loss at each eval step: train/loss_eval when logged there, else the
    median of the train/loss points up to that step."""
    loss_eval = view.series("train/loss_eval")
    if len(loss_eval):
        return loss_eval.at(eval_steps)
    loss = view.series("train/loss")
    if not len(loss):
        return None
    ends = np.searchsorted(loss.steps, eval_steps, side="right")
    result = np.full(len(eval_steps), np.nan)
    for i, end in enumerate(ends):
        window = loss.values[max(0, end - smooth_window) : end]
        window = window[np.isfinite(window)]
        if len(window):
            result[i] = float(np.median(window))
    return result


def _running_argmin(values: np.ndarray) -> np.ndarray:
    """Index of the (first) minimum of values[: i + 1] for each i."""
    best = np.minimum.accumulate(values)
    is_new_best = np.r_[True, values[1:] < best[:-1]]
    return np.maximum.accumulate(np.where(is_new_best, np.arange(len(values)), 0))

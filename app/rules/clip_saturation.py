"""clip_saturation: after warmup, most steps have their gradient clipped."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from app.rules.base import Observation, Rule, RunView, SeriesView, Thresholds
from app.rules.stats import trailing_baseline


class ClipSaturationThresholds(Thresholds):
    # steps (logged points) over which the clipped fraction is measured
    window: int = Field(default=100, ge=1)
    # fire when more than this fraction of the window was clipped
    fraction: float = Field(default=0.5, ge=0, le=1)
    # where warmup_steps is not in the config, judge only after this many steps: early
    # gradients are large in every run
    default_warmup: int = Field(default=100, ge=0)
    # judge only while train/lr is at least this share of its peak (see `check`)
    min_lr_share: float = Field(default=0.5, ge=0, le=1)
    # ... and once the loss (median of the window) is this fraction below its first value
    min_loss_drop: float = Field(default=0.05, ge=0, lt=1)


class ClipSaturation(Rule):
    """After warmup, most optimizer steps have their gradient norm clipped. Clipping is
    meant to catch the occasional outlier; when it acts on most steps, the update's size
    is set by the clip threshold rather than by the gradient, which usually means the
    learning rate is too high for the model (or the threshold far too low), and the run
    is one unlucky batch away from diverging."""

    code = "clip_saturation"
    title = "Gradient clipping on most steps"
    severity = "warning"
    fix = (
        "Lower the learning rate (try 3-10x lower) or lengthen warmup. If the loss is "
        "healthy and only the threshold is tight, raise grad_clip to about the typical "
        "pre-clip gradient norm after warmup."
    )
    thresholds = ClipSaturationThresholds
    keep_firing_for = 10  # the fraction hovers around the threshold: do not flap

    def check(self, view: RunView, limits: ClipSaturationThresholds) -> list[Observation]:
        source = _clip_source(view)
        if source is None:
            return []
        key, series, above = source
        warmup = view.config_number("warmup_steps")
        start_step = int(np.ceil(warmup)) if warmup is not None else limits.default_warmup
        window = limits.window
        # Judged once a full window after warmup ends at the point; slice what it needs.
        first_judged = max(
            view.first_new(key), series.index_of(start_step) + window - 1
        )
        if first_judged >= len(series):
            return []
        clipped = series.values[first_judged - window + 1 :] > above
        counts = np.cumsum(np.r_[0, clipped.astype(np.int64)])
        fractions = (counts[window:] - counts[:-window]) / window
        steps = series.steps[first_judged:]
        # Two cases where heavy clipping does not mean an LR too high. Past its peak: late
        # in a decaying schedule the gradient norm grows as the LR falls (weight decay
        # against normalised layers), and a healthy run can clip on every step there.
        # Before the loss has left its initial value: gradients are still at the init
        # scale, as in a run whose LR is far too low to move it.
        lr_share = _lr_share(view, steps)
        with np.errstate(invalid="ignore"):
            active = (fractions > limits.fraction) & ~(lr_share < limits.min_lr_share)
        candidates = np.flatnonzero(active)  # the loss level costs a median per point
        if len(candidates):
            loss_drop = _loss_drop(view, steps[candidates], window)
            with np.errstate(invalid="ignore"):
                active[candidates] = ~(loss_drop < limits.min_loss_drop)
        observations = []
        for i, (step, fraction) in enumerate(zip(steps.tolist(), fractions.tolist(), strict=True)):
            if not active[i]:
                observations.append(Observation(step, False, evidence={"clip_fraction": fraction}))
                continue
            evidence = {
                "clip_fraction": fraction,
                "window": window,
                "threshold": limits.fraction,
                "grad_clip": view.config_number("grad_clip"),
                "warmup_steps": int(start_step),
                "lr_share_of_peak": None if np.isnan(lr_share[i]) else float(lr_share[i]),
            }
            detail = (
                f"{100 * fraction:.0f}% of the last {window} steps to step {step} had their "
                f"gradient clipped (threshold {100 * limits.fraction:.0f}%)."
            )
            observations.append(Observation(step, True, evidence=evidence, detail=detail))
        return observations


def _clip_source(view: RunView) -> tuple[str, SeriesView, float] | None:
    """The series that says whether a step was clipped, and the value above which it was:
    train/grad_clipped (0/1), else the pre-clip train/grad_norm against the config's
    grad_clip. None when neither is derivable."""
    marker = view.series("train/grad_clipped")
    if len(marker):
        return "train/grad_clipped", marker, 0.5
    grad_clip = view.config_number("grad_clip")
    norm = view.series("train/grad_norm")
    if grad_clip is None or grad_clip <= 0 or not len(norm):
        return None
    return "train/grad_norm", norm, grad_clip


def _lr_share(view: RunView, steps: np.ndarray) -> np.ndarray:
    """train/lr at each step over its peak (the config's lr, else the largest LR logged
    up to that step); NaN where unknown."""
    lr = view.series("train/lr")
    share = np.full(len(steps), np.nan)
    if not len(lr):
        return share
    index = np.clip(np.searchsorted(lr.steps, steps), 0, len(lr) - 1)
    found = lr.steps[index] == steps
    peak = view.config_number("lr")
    if peak is not None:
        peaks = np.full(len(steps), peak)
    else:
        logged = lr.values[: index[-1] + 1]
        peaks = np.maximum.accumulate(np.where(np.isfinite(logged), logged, 0.0))[index]
    with np.errstate(all="ignore"):
        share[found] = lr.values[index[found]] / peaks[found]
    return share


def _loss_drop(view: RunView, steps: np.ndarray, window: int) -> np.ndarray:
    """How far the median train/loss of the `window` points before each step lies below
    the run's first loss (median of its first 5 points), as a fraction; NaN if unknown."""
    loss = view.series("train/loss")
    drop = np.full(len(steps), np.nan)
    first = loss.values[:5][np.isfinite(loss.values[:5])]
    if not len(first) or float(np.median(first)) <= 0:
        return drop
    index = np.clip(np.searchsorted(loss.steps, steps), 0, len(loss) - 1)
    found = loss.steps[index] == steps
    if not found.any():
        return drop
    low, high = int(index[found].min()), int(index[found].max())
    offset = max(0, low - window)
    level = trailing_baseline(loss.values[offset : high + 1], low - offset, window).median
    drop[found] = 1 - level[index[found] - low] / float(np.median(first))
    return drop

"""clip_saturation: after warmup, most steps have their gradient clipped."""

from __future__ import annotations

from typing import ClassVar

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
    # Evidence that the LR hurts (a warning, not an info): the median loss of the window
    # sits this fraction above the median of the window before it (rising, not falling) ...
    loss_rise: float = Field(default=0.02, ge=0)
    # ... or the median update ratio ||dW||/||W|| of any layer is above this (healthy ~1e-3)
    high_update_ratio: float = Field(default=3e-2, gt=0)


class ClipSaturation(Rule):
    """After warmup, most optimizer steps have their gradient norm clipped. Clipping is
    meant to catch the occasional outlier; when it acts on most steps, the update's size
    is set by the clip threshold rather than by the gradient. While the loss falls
    normally that is harmless: the threshold is simply below the typical gradient norm
    (an info). Only with evidence that the learning rate hurts (the loss rising instead
    of falling, or very large weight updates) is it a warning that the learning rate is
    too high."""

    code = "clip_saturation"
    title = "Gradient clipping on most steps"
    severity = "info"
    fix = (
        "The loss is falling normally: the clip threshold is just below the typical "
        "gradient norm. Raise grad_clip to about the typical pre-clip gradient norm if you "
        "want clipping to catch only outliers, or leave it: the run is not harmed."
    )
    lr_fix: ClassVar[str] = (
        "Lower the learning rate (try 3-10x lower) or lengthen warmup: the loss is not "
        "improving while clipping sets the size of nearly every update."
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
        first_judged = max(view.first_new(key), series.index_of(start_step) + window - 1)
        if first_judged >= len(series):
            return []
        clipped = series.values[first_judged - window + 1 :] > above
        counts = np.cumsum(np.r_[0, clipped.astype(np.int64)])
        fractions = (counts[window:] - counts[:-window]) / window
        steps = series.steps[first_judged:]
        # Two cases where heavy clipping does not mean an LR too high. Past its peak: late
        # in a decaying schedule the gradient norm grows as the LR falls (weight decay
        # against normalised layers), and a healthy run can clip on every step there.
        # While the loss sits near its initial value: gradients are still at the init
        # scale, as in a run whose LR is far too low to move it. (A loss that went up
        # from its start is judged: that is the LR hurting.)
        lr_share = _lr_share(view, steps)
        with np.errstate(invalid="ignore"):
            active = (fractions > limits.fraction) & ~(lr_share < limits.min_lr_share)
        candidates = np.flatnonzero(active)  # the loss level costs a median per point
        rise = np.full(len(steps), np.nan)
        if len(candidates):
            loss_drop = _loss_drop(view, steps[candidates], window)
            with np.errstate(invalid="ignore"):
                near_start = (loss_drop < limits.min_loss_drop) & (loss_drop >= -limits.loss_rise)
                active[candidates] = ~near_start
                # Rising over the window, or stuck above where it started.
                rise[candidates] = np.fmax(_loss_rise(view, steps[candidates], window), -loss_drop)
        candidates = np.flatnonzero(active)
        update_ratio = _update_ratio(view) if len(candidates) else None
        grad_clip = view.config_number("grad_clip")
        norm = view.series("train/grad_norm")
        observations = []
        for i, (step, fraction) in enumerate(zip(steps.tolist(), fractions.tolist(), strict=True)):
            if not active[i]:
                observations.append(Observation(step, False, evidence={"clip_fraction": fraction}))
                continue
            typical = _typical_norm(norm, step, window)
            hurts = bool(rise[i] > limits.loss_rise) or (
                update_ratio is not None and update_ratio > limits.high_update_ratio
            )
            evidence = {
                "clip_fraction": fraction,
                "window": window,
                "threshold": limits.fraction,
                "grad_clip": grad_clip,
                "typical_grad_norm": typical,
                "warmup_steps": int(start_step),
                "lr_share_of_peak": None if np.isnan(lr_share[i]) else float(lr_share[i]),
                "loss_change": None if np.isnan(rise[i]) else float(rise[i]),
                "update_ratio_median": update_ratio,
                "cause": "lr_too_high" if hurts else "clip_threshold_low",
            }
            clipped_text = (
                f"{100 * fraction:.0f}% of the last {window} steps to step {step} had their "
                f"gradient clipped (threshold {100 * limits.fraction:.0f}%)"
            )
            if hurts:
                why = (
                    f"the loss is {100 * rise[i]:.0f}% higher than before (over the window, "
                    "or against its start)"
                    if rise[i] > limits.loss_rise
                    else f"the median update ratio is {update_ratio:.2g}"
                )
                detail = f"{clipped_text}, and {why}: the learning rate looks too high."
                observations.append(
                    Observation(
                        step,
                        True,
                        severity="warning",
                        evidence=evidence,
                        detail=detail,
                        fix=self.lr_fix,
                    )
                )
                continue
            advice = (
                f"; the typical pre-clip norm is {typical:.3g} against grad_clip {grad_clip:g}"
                if typical is not None and grad_clip is not None
                else ""
            )
            detail = (
                f"{clipped_text} while the loss keeps falling: the threshold is below the "
                f"typical gradient norm{advice}."
            )
            fix = (
                f"Raise grad_clip to about {typical:.2g} (the typical pre-clip gradient norm) "
                "so clipping catches only outliers, or leave it: the loss is falling normally."
                if typical is not None
                else None
            )
            observations.append(Observation(step, True, evidence=evidence, detail=detail, fix=fix))
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


def _typical_norm(norm: SeriesView, step: int, window: int) -> float | None:
    """Median pre-clip gradient norm of the `window` points up to `step`."""
    if not len(norm):
        return None
    end = int(np.searchsorted(norm.steps, step, side="right"))
    values = norm.values[max(0, end - window) : end]
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else None


def _loss_rise(view: RunView, steps: np.ndarray, window: int) -> np.ndarray:
    """Median train/loss of the `window` points to each step over the median of the
    `window` before them, minus 1 (positive: the loss is rising); NaN if unknown."""
    loss = view.series("train/loss")
    result = np.full(len(steps), np.nan)
    ends = np.searchsorted(loss.steps, steps, side="right")
    for i, end in enumerate(ends.tolist()):
        if end < 2 * window:
            continue
        recent = loss.values[end - window : end]
        before = loss.values[end - 2 * window : end - window]
        recent, before = recent[np.isfinite(recent)], before[np.isfinite(before)]
        if len(recent) and len(before) and float(np.median(before)) > 0:
            result[i] = float(np.median(recent)) / float(np.median(before)) - 1
    return result


def _update_ratio(view: RunView) -> float | None:
    """The largest, over layers, median of the last 5 logged update ratios."""
    best = None
    for key in view.keys("update/*/ratio"):
        values = view.series(key).values[-5:]
        values = values[np.isfinite(values)]
        if len(values):
            level = float(np.median(values))
            best = level if best is None else max(best, level)
    return best


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
    the run's first loss (the median of its first 5 points, or the first point when
    lower: a loss that shot up within those points), as a fraction; NaN if unknown."""
    loss = view.series("train/loss")
    drop = np.full(len(steps), np.nan)
    head = loss.values[:5][np.isfinite(loss.values[:5])]
    if not len(head):
        return drop
    start = min(float(np.median(head)), float(head[0]))
    if start <= 0:
        return drop
    index = np.clip(np.searchsorted(loss.steps, steps), 0, len(loss) - 1)
    found = loss.steps[index] == steps
    if not found.any():
        return drop
    low, high = int(index[found].min()), int(index[found].max())
    offset = max(0, low - window)
    level = trailing_baseline(loss.values[offset : high + 1], low - offset, window).median
    drop[found] = 1 - level[index[found] - low] / start
    return drop

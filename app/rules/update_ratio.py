"""update_ratio: a layer's optimizer updates are persistently too small or too large
relative to its weights."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from app.rules.base import Observation, Rule, RunView, SeriesView, Severity, Thresholds
from app.rules.layers import layer_keys, new_positions, runs_ending_at, trailing_median

TOO_SMALL_FIX = (
    "Raise the learning rate (for Adam, ~1e-3 for small GPTs, ~6e-4 for GPT-2 small) and "
    "check that the layer is not frozen or its gradients clipped to nothing. A single "
    "layer out of line points at its init scale or its weight decay."
)
TOO_LARGE_FIX = (
    "Lower the learning rate, lengthen warmup and set grad_clip (1.0). A single layer out "
    "of line points at its init scale or its weight decay."
)


class UpdateRatioThresholds(Thresholds):
    # The healthy band for ||dW|| / ||W|| per step (about 1e-3 is typical). The lower
    # bound is scaled by train/lr over its peak, so a decaying schedule is not "too low".
    low: float = 1e-4
    high: float = 1e-2
    # The ratio judged is the median of the last `window` instrument points.
    window: int = Field(default=5, ge=1)
    # Warning instead of info when that median is this many times beyond the band...
    far_factor: float = 10.0
    # ... or has been below it for this many instrument points in a row (a layer that
    # barely moves for that long is not learning). Above the band only far_factor
    # escalates: a healthy run at peak lr can sit just above 1e-2 for a long time.
    long_points: int = Field(default=20, ge=1)
    # LayerNorm-only groups: their gains start at 1, so the ratio is the raw per-element
    # step and sits below `low` at ordinary learning rates. Judged against `high` only.
    gain_layers: list[str] = ["ln_f"]
    # The first instrument points (the first optimizer steps) are not judged, nor any
    # window that reaches into warmup_steps (from the run's config; 0 when absent).
    skip_points: int = 3


class UpdateRatio(Rule):
    """The size of each optimizer step relative to the weights it changes,
    ||dW|| / ||W|| per layer, stays outside the range where training works well
    (around 1e-3 per step). Far below it the layer barely moves: the learning rate is
    too low for it and the run will plateau. Far above it every step rewrites a large
    part of the layer: training is noisy or unstable and usually ends in a loss spike or
    divergence. The ratio naturally falls as the learning rate decays, which this rule
    allows for."""

    code = "update_ratio"
    title = "Update-to-weight ratio out of range"
    severity = "info"
    fix = f"Too small: {TOO_SMALL_FIX} Too large: {TOO_LARGE_FIX}"  # each case gets its own
    per_layer = True
    thresholds = UpdateRatioThresholds
    pending_for = 3  # three instrument points in a row
    keep_firing_for = 3

    def check(self, view: RunView, limits: UpdateRatioThresholds) -> list[Observation]:
        lr = view.series("train/lr")
        peak = view.config_number("lr")
        warmup = view.config_number("warmup_steps") or 0.0
        observations: list[Observation] = []
        for layer, key in layer_keys(view, "update", "ratio").items():
            points = view.series(key)
            settled = max(limits.skip_points, int(np.searchsorted(points.steps, warmup)))
            first = settled + limits.window - 1  # the first full window past warmup
            positions = new_positions(points, view.since_of(key), first=first)
            if not len(positions):
                continue
            # Enough history before the new points to count a run of long_points.
            start = max(first, int(positions[0]) - limits.long_points + 1)
            history = np.arange(start, int(positions[-1]) + 1)
            low = limits.low * _lr_scale(lr, points.steps[history], peak)
            if layer in limits.gain_layers:
                low = np.zeros(len(history))
            judged = _judge(layer, key, points, history, low, limits)
            new = judged[len(history) - len(positions) :]
            observations.extend(observation for observation in new if observation is not None)
        return observations


def _judge(
    layer: str,
    key: str,
    points: SeriesView,
    history: np.ndarray,
    low: np.ndarray,
    limits: UpdateRatioThresholds,
) -> list[Observation | None]:
    """An observation per position in `history` (None where its window is incomplete)."""
    medians = trailing_median(points.values, history, limits.window)
    below, above = medians < low, medians > limits.high
    far = (medians < low / limits.far_factor) | (medians > limits.high * limits.far_factor)
    runs = runs_ending_at(below | above, limits.long_points)
    judged: list[Observation | None] = []
    for index, position in enumerate(history):
        step, median = int(points.steps[position]), float(medians[index])
        if not np.isfinite(median):
            judged.append(None)
        elif not (below[index] or above[index]):
            judged.append(Observation(step, False, subject=layer))
        else:
            long = bool(below[index] and runs[index] >= limits.long_points)
            evidence = {
                "key": key,
                "median_ratio": median,
                "step": step,
                "window": limits.window,
                "points_outside": int(runs[index]),
                "low": float(low[index]),
                "high": limits.high,
                "far_factor": limits.far_factor,
                "long_points": limits.long_points,
            }
            detail = _describe(key, median, step, limits, float(low[index]), int(runs[index]))
            severity: Severity = "warning" if far[index] or long else "info"
            fix = TOO_SMALL_FIX if below[index] else TOO_LARGE_FIX
            judged.append(Observation(step, True, layer, severity, evidence, detail, fix))
    return judged


def _describe(
    key: str, median: float, step: int, limits: UpdateRatioThresholds, low: float, run: int
) -> str:
    side = (
        f"below the floor {low:.3g} ({limits.low:g} x lr / peak lr)"
        if median < low
        else f"above the ceiling {limits.high:g}"
    )
    points = "1 instrument point" if run == 1 else f"{run} instrument points in a row"
    return (
        f"{key} had a median of {median:.3g} over the {limits.window} instrument points "
        f"up to step {step}, {side} for {points}."
    )


def _lr_scale(lr: SeriesView, steps: np.ndarray, peak: float | None) -> np.ndarray:
    """train/lr at each step over its peak (the config's lr, else the largest logged up
    to that step), in [0, 1]; 1 where the learning rate was not logged."""
    scale = np.ones(len(steps))
    at = np.searchsorted(lr.steps, steps, side="right") - 1
    known = at >= 0
    if not known.any():
        return scale
    at = at[known]
    current = lr.values[at]
    if peak is None:  # the running peak: only what was logged up to each step
        prefix = lr.values[: at.max() + 1]
        peaks = np.fmax.accumulate(np.where(np.isfinite(prefix), prefix, np.nan))[at]
    else:
        peaks = np.full(len(at), peak)
    with np.errstate(all="ignore"):
        ratio = current / peaks
    scale[known] = np.where(np.isfinite(ratio) & (ratio >= 0), np.minimum(ratio, 1.0), 1.0)
    return scale

"""Spike episodes on one series, shared by `loss_spike` and `grad_norm_spike`.

A point is a spike when it sits far above the robust baseline of the window before it:
more than `zscore` robust sigmas (once the window holds `min_history` values), or more
than `ratio` times the window's median and `recover_zscore` sigmas above it (once it
holds `ratio_min_history` values: a jump in the first steps). The episode lasts while
the series stays above its pre-spike level: `recover_zscore` sigmas above the trailing
median, the lowest such level of the last `window` points (the windows of the points
after a spike hold the spike). So it resolves when the series is back near where it was,
`steps_to_resolve` says how long recovery took, and it lasts at most `window` steps
after its latest spike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import Field

from app.rules.base import Observation, RunView, Thresholds
from app.rules.stats import Baseline, floored_sigma, robust_z, trailing_baseline

_MIN_SIGMA = 1e-12  # absolute floor, so a flat window at zero cannot divide by zero


class SpikeThresholds(Thresholds):
    # robust standard deviations above the median of the window that make a spike
    zscore: float = Field(default=6.0, gt=0)
    # points before the judged one that form its baseline
    window: int = Field(default=128, ge=8)
    # finite values the window must hold before the z-score test is applied
    min_history: int = Field(default=64, ge=2)
    # a point above this multiple of the window's median (and recover_zscore sigmas above
    # it) is a spike, with less history than the z-score test needs
    ratio: float = Field(default=2.0, gt=1)
    # finite values the window must hold before the ratio test is applied
    ratio_min_history: int = Field(default=8, ge=1)
    # the robust sigma is at least this fraction of the median (smooth curves, tiny jumps)
    sigma_floor: float = Field(default=0.01, ge=0)
    # the episode lasts while the series stays this many sigmas above its pre-spike median
    recover_zscore: float = Field(default=3.0, gt=0)


@dataclass(frozen=True, slots=True)
class _Flags:
    """Per point from the chain start on: the verdicts and the numbers behind them."""

    spike: np.ndarray
    active: np.ndarray
    finite: np.ndarray
    median: np.ndarray
    sigma: np.ndarray  # floored
    count: np.ndarray  # finite values in the window


def spike_observations(view: RunView, key: str, limits: SpikeThresholds) -> list[Observation]:
    """Observations for the new finite points of `key` (non-finite ones are `nonfinite`'s)."""
    series = view.series(key)
    first_new = view.first_new(key)
    if first_new >= len(series):
        return []
    # A new point's episode began at most `window` points back; the recovery level of
    # those points looks `window` further back, and each baseline one more window: slice
    # that much history, never the whole series.
    window = limits.window
    chain_start = max(0, first_new - window)
    level_start = max(0, chain_start - window)
    tail_start = max(0, level_start - window)
    values = series.values[tail_start:]
    flags = _flags(values, level_start - tail_start, chain_start - level_start, limits)
    offset = first_new - chain_start  # index of the first new point in the flags
    steps = series.steps[first_new:]
    new_values = series.values[first_new:]
    observations: list[Observation] = []
    for k in range(len(steps)):
        j = offset + k
        if not flags.finite[j]:
            continue
        step, value = int(steps[k]), float(new_values[k])
        after_active = j > 0 and bool(flags.active[j - 1])
        if not flags.active[j]:
            evidence = {"recovered_value": value} if after_active else {}
            observations.append(Observation(step, False, evidence=evidence))
        elif flags.spike[j] and not after_active:
            observations.append(_onset(key, step, value, flags, j, limits))
        else:
            observations.append(Observation(step, True, evidence={"key": key}))
    return observations


def _flags(
    values: np.ndarray, level_start: int, chain_offset: int, limits: SpikeThresholds
) -> _Flags:
    """Verdicts for values[level_start + chain_offset:]; the `chain_offset` points before
    them only lend their recovery levels."""
    window, chain_start = limits.window, level_start + chain_offset
    baseline, sigma = _baseline(values, chain_start, limits)
    median, count = baseline.median, baseline.count
    judged = values[chain_start:]
    finite = np.isfinite(judged)
    z = robust_z(judged, baseline, sigma)
    with np.errstate(all="ignore"):
        by_z = (count >= limits.min_history) & (z > limits.zscore)
        by_ratio = (count >= limits.ratio_min_history) & (median > 0)
        by_ratio &= (judged > limits.ratio * median) & (z > limits.recover_zscore)
    spike = finite & (by_z | by_ratio)
    if not spike.any():  # the usual case: no episode can be open, skip the recovery levels
        return _Flags(spike, spike, finite, median, sigma, count)
    # Recovery means back near the pre-spike level: the lowest recovery level of the last
    # `window` points, since the windows of the points after a spike hold the spike.
    early, early_sigma = _baseline(values[:chain_start], level_start, limits)
    levels = [
        np.where(n >= limits.ratio_min_history, m + limits.recover_zscore * s, np.nan)
        for m, s, n in ((early.median, early_sigma, early.count), (median, sigma, count))
    ]
    padded = np.concatenate([np.full(window, np.nan), *levels])
    recovery = np.fmin.reduce(sliding_window_view(padded, window + 1), axis=1)[chain_offset:]
    with np.errstate(invalid="ignore"):
        elevated = finite & ((judged > recovery) | spike)
    index = np.arange(len(judged))
    last_spike = np.maximum.accumulate(np.where(spike, index, -1))
    last_break = np.maximum.accumulate(np.where(finite & ~elevated, index, -1))
    active = elevated & (last_spike > last_break) & (index - last_spike <= window)
    return _Flags(spike, active, finite, median, sigma, count)


def _baseline(
    values: np.ndarray, start: int, limits: SpikeThresholds
) -> tuple[Baseline, np.ndarray]:
    """The window before each point, and its robust sigma floored (a share of the median)."""
    baseline = trailing_baseline(values, start, limits.window)
    with np.errstate(invalid="ignore"):
        floor = np.fmax(limits.sigma_floor * np.abs(baseline.median), _MIN_SIGMA)
    return baseline, floored_sigma(baseline.sigma, floor)


def _onset(
    key: str, step: int, value: float, flags: _Flags, j: int, limits: SpikeThresholds
) -> Observation:
    median, sigma, count = float(flags.median[j]), float(flags.sigma[j]), int(flags.count[j])
    zscore = (value - median) / sigma
    ratio = value / median if median > 0 else None
    times = f", {ratio:.1f}x" if ratio is not None else ""
    evidence = {
        "key": key,
        "step": step,
        "value": value,
        "median": median,
        "sigma": sigma,
        "zscore": round(zscore, 2),
        "ratio": round(ratio, 3) if ratio is not None else None,
        "zscore_threshold": limits.zscore,
        "ratio_threshold": limits.ratio,
        "window_points": count,
    }
    detail = (
        f"{key} jumped to {value:.4g} at step {step}, {zscore:.1f} robust sigma above the "
        f"previous {_steps(count)} (median {median:.4g}{times})."
    )
    return Observation(step, True, evidence=evidence, detail=detail)


def _steps(count: int) -> str:
    return "step" if count == 1 else f"{count} steps"

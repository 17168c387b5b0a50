"""Window statistics shared by the rules. Every window excludes the point it judges:
a z-score whose window holds the point itself can never exceed sqrt(n - 1)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from trainer.stats import MAD_TO_STD

_CHUNK = 8192  # judged points per vectorised block: bounds memory at window * chunk


@dataclass(frozen=True, slots=True)
class Baseline:
    """For each judged point: the median and robust sigma of the window before it, and
    how many finite values that window held."""

    median: np.ndarray
    sigma: np.ndarray
    count: np.ndarray


def trailing_baseline(values: np.ndarray, start: int, window: int) -> Baseline:
    """Robust baseline of values[i - window : i] for each i in [start, len(values)).
    Non-finite values in a window are ignored."""
    n = len(values)
    start = max(start, 0)
    medians, sigmas, counts = [], [], []
    finite = np.where(np.isfinite(values), values, np.nan)
    padded = np.concatenate([np.full(window, np.nan), finite])
    for block_start in range(start, n, _CHUNK):
        block_end = min(block_start + _CHUNK, n)
        # Row j holds the `window` values before point block_start + j.
        windows = sliding_window_view(padded[block_start : block_end + window - 1], window)
        windows = windows[: block_end - block_start]
        count = np.sum(np.isfinite(windows), axis=1)
        # A window with no finite value has no baseline (NaN). Those rows are left out of
        # nanmedian rather than silenced: warning filters are process-wide, not per thread.
        median = np.full(len(windows), np.nan)
        mad = np.full(len(windows), np.nan)
        some = count > 0
        if some.any():
            with np.errstate(all="ignore"):
                median[some] = np.nanmedian(windows[some], axis=1)
                mad[some] = np.nanmedian(np.abs(windows[some] - median[some, None]), axis=1)
        medians.append(median)
        sigmas.append(mad * MAD_TO_STD)
        counts.append(count)
    if not medians:
        empty = np.empty(0)
        return Baseline(empty, empty, np.empty(0, np.int64))
    return Baseline(np.concatenate(medians), np.concatenate(sigmas), np.concatenate(counts))


def floored_sigma(sigma: np.ndarray | float, floor: np.ndarray | float) -> np.ndarray:
    """The robust sigma, at least `floor`, so a perfectly flat window does not turn a
    rounding error into a huge score (NaN only where both are unknown)."""
    with np.errstate(invalid="ignore"):
        return np.fmax(sigma, floor)


def robust_z(values: np.ndarray, baseline: Baseline, sigma_floor: np.ndarray | float) -> np.ndarray:
    """(value - median) / sigma with the sigma floored: the one robust z-score of the
    rules (a trailing window that excludes the point judged)."""
    with np.errstate(all="ignore"):
        return (values - baseline.median) / floored_sigma(baseline.sigma, sigma_floor)


def robust_level(values: np.ndarray) -> tuple[float, float]:
    """Median and robust sigma (MAD-based) of one window's finite values; NaN if none."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return float("nan"), float("nan")
    median = float(np.median(finite))
    return median, float(np.median(np.abs(finite - median))) * MAD_TO_STD

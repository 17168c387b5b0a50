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


def robust_z(values: np.ndarray, baseline: Baseline, sigma_floor: np.ndarray | float) -> np.ndarray:
    """(value - median) / sigma, the sigma floored so a perfectly flat window does not
    turn a rounding error into a huge score."""
    sigma = np.maximum(baseline.sigma, sigma_floor)
    with np.errstate(all="ignore"):
        return (values - baseline.median) / sigma

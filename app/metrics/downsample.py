"""Extreme-preserving downsampling with tsdownsample.

A plot must never hide a spike: every method here keeps each bucket's minimum and
maximum (M4 also its first and last point, so a line drawn through the result matches
the full-resolution line pixel for pixel). Non-finite points are downsampled on their
own so that a NaN or an infinity always shows.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
from tsdownsample import M4Downsampler, MinMaxDownsampler, MinMaxLTTBDownsampler


class Method(StrEnum):
    m4 = "m4"
    minmax = "minmax"
    minmaxlttb = "minmaxlttb"


# n_out must be a multiple of this for each method.
_N_OUT_MULTIPLE = {Method.m4: 4, Method.minmax: 2, Method.minmaxlttb: 1}
_DOWNSAMPLERS = {
    Method.m4: M4Downsampler,
    Method.minmax: MinMaxDownsampler,
    Method.minmaxlttb: MinMaxLTTBDownsampler,
}


def _select(method: Method, x: np.ndarray, y: np.ndarray, n_out: int) -> np.ndarray:
    multiple = _N_OUT_MULTIPLE[method]
    n_out = max(multiple * 2, n_out - n_out % multiple)
    if len(x) <= n_out:
        return np.arange(len(x))
    return _DOWNSAMPLERS[method]().downsample(x, y, n_out=n_out).astype(np.int64)


def downsample_indices(
    steps: np.ndarray, values: np.ndarray, max_points: int, method: Method = Method.m4
) -> np.ndarray:
    """Sorted indices of the points to keep, about max_points of them (never more than
    max_points plus a few for non-finite values)."""
    if len(steps) <= max_points:
        return np.arange(len(steps))
    finite = np.isfinite(values)
    if finite.all():
        return _select(method, steps, values, max_points)
    finite_idx = np.flatnonzero(finite)
    special_idx = np.flatnonzero(~finite)
    # A small share of the budget goes to the non-finite points; they are usually few,
    # and when a run has diverged to NaN they are one long stretch.
    special_budget = min(len(special_idx), max(8, max_points // 10))
    # Encode the kind (NaN, +Inf, -Inf) as a number so MinMax keeps each kind per bucket.
    special_codes = np.where(
        np.isnan(values[special_idx]), 0.0, np.sign(values[special_idx])
    ).astype(np.float64)
    kept_special = special_idx[
        _select(Method.minmax, steps[special_idx], special_codes, special_budget)
    ]
    kept_finite = (
        finite_idx[
            _select(method, steps[finite_idx], values[finite_idx], max_points - special_budget)
        ]
        if len(finite_idx)
        else np.empty(0, np.int64)
    )
    return np.union1d(kept_finite, kept_special)

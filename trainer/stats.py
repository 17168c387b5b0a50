"""Robust statistics shared by the trainer and the rule engine (numpy only)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

# Scales the median absolute deviation to a standard deviation for normal data.
MAD_TO_STD = 1.4826


def robust_zscore(history: Iterable[float], value: float) -> float:
    """How many robust standard deviations `value` lies above the median of `history`.

    `history` is the reference window and must not contain `value` itself. The scale
    is MAD * 1.4826. Non-finite history entries are ignored. Returns nan when `value`
    is nan or the history has no finite entries; +-inf when the history has zero spread
    and `value` differs from its median; 0.0 when it equals it.
    """
    window = np.asarray(list(history), dtype=np.float64)
    window = window[np.isfinite(window)]
    if window.size == 0 or np.isnan(value):
        return float("nan")
    median = float(np.median(window))
    scale = MAD_TO_STD * float(np.median(np.abs(window - median)))
    deviation = value - median
    if scale == 0.0:
        if deviation == 0.0:
            return 0.0
        return float("inf") if deviation > 0 else float("-inf")
    return deviation / scale


def is_loss_spike(
    history: Sequence[float], loss: float, zscore: float, min_history: int = 64
) -> bool:
    """True when `loss` is non-finite, or more than `zscore` robust standard deviations
    above `history` (which excludes it) once the history holds `min_history` values."""
    if not math.isfinite(loss):
        return True
    if len(history) < min_history:
        return False
    return robust_zscore(history, loss) > zscore

"""Per-layer series for the layer rules (activation_saturation, dead_units,
activation_scale, update_ratio): which layers a run logged, which of their points are
new, and which are past the initialisation transient.

Per-layer metrics are logged every `instrument_interval` steps, so a layer's series is
sparse and its positions (0, 1, 2, ...) count instrument points, not steps. The first
few points are the init transient: statistics move fast while the first updates undo
the random initialisation, and a threshold judged there would fire on healthy runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from app.rules.base import RunView, SeriesView

_BLOCK = re.compile(r"h(\d+)(.*)")


def depth_order(layer: str) -> tuple[int, int, str]:
    """Sort key from input to output: wte, wpe, h0, h1, ..., h10, ..., ln_f, others."""
    if layer in ("wte", "wpe"):
        return (0, ("wte", "wpe").index(layer), "")
    block = _BLOCK.fullmatch(layer)
    if block:
        return (1, int(block.group(1)), block.group(2))
    return (2, 0, layer)


def layer_keys(view: RunView, prefix: str, suffix: str) -> dict[str, str]:
    """{layer: key} for the run's keys `{prefix}/{layer}/{suffix}`, in depth order."""
    head, tail = f"{prefix}/", f"/{suffix}"
    layers = {key[len(head) : -len(tail)]: key for key in view.keys(f"{head}*{tail}")}
    return {layer: layers[layer] for layer in sorted(layers, key=depth_order) if layer}


def new_positions(points: SeriesView, since: int, first: int = 0) -> np.ndarray:
    """Positions of the points after `since`, from position `first` on."""
    start = max(int(np.searchsorted(points.steps, since, side="right")), first)
    return np.arange(start, len(points), dtype=np.int64)


def over_limit(
    view: RunView, stat: str, limit: float, early_limit: float, skip_points: int
) -> Iterator[tuple[str, str, int, float, bool]]:
    """(layer, key, step, value, active) for each new finite point of `act/{layer}/{stat}`:
    active when the value is above `limit`, or above `early_limit` during the init
    transient. Non-finite points are skipped: they are nonfinite's finding."""
    for layer, key in layer_keys(view, "act", stat).items():
        points = view.series(key)
        positions = new_positions(points, view.since_of(key))
        limits = np.where(positions >= skip_points, limit, early_limit)
        for position, threshold in zip(positions, limits, strict=True):
            value = float(points.values[position])
            if np.isfinite(value):
                yield layer, key, int(points.steps[position]), value, value > threshold


def trailing_median(values: np.ndarray, positions: np.ndarray, window: int) -> np.ndarray:
    """Median of values[p - window + 1 : p + 1] for each position p (the point itself
    and the points before it: a persistence filter, not a baseline to compare it to).
    NaN where the window is incomplete or holds a non-finite value."""
    if not len(positions):
        return np.empty(0)
    lo = int(positions[0]) - window + 1
    padded = np.concatenate([np.full(max(-lo, 0), np.nan), values[max(lo, 0) :]])
    padded = np.where(np.isfinite(padded), padded, np.nan)
    windows = sliding_window_view(padded, window)[positions - int(positions[0])]
    return np.median(windows, axis=1)


def runs_ending_at(flags: np.ndarray, cap: int) -> np.ndarray:
    """For each index i, how many flags in a row are True ending at i, counted up to `cap`
    (callers pass `cap` flags of history before the points they judge)."""
    lengths = np.zeros(len(flags), dtype=np.int64)
    count = 0
    for index, flag in enumerate(flags):
        count = min(count + 1, cap) if flag else 0
        lengths[index] = count
    return lengths

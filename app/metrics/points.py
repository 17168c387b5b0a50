"""Metric points as numpy columns, and the stored encoding of non-finite values."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

from app.models import NonFinite

NONFINITE_VALUES = {
    NonFinite.nan: math.nan,
    NonFinite.pos_inf: math.inf,
    NonFinite.neg_inf: -math.inf,
}


def apply_nonfinite(values: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Stored values (NULL, read as NaN, where not finite) with the real nan/inf put back
    from the nonfinite flags; modifies and returns values."""
    for flag, special in NONFINITE_VALUES.items():
        values[flags == flag] = special
    return values


def nonfinite_flags(values: np.ndarray) -> np.ndarray:
    """The stored flag of every value (0 for finite)."""
    flags = np.zeros(len(values), np.int64)
    flags[np.isnan(values)] = NonFinite.nan
    flags[values == np.inf] = NonFinite.pos_inf
    flags[values == -np.inf] = NonFinite.neg_inf
    return flags


@dataclass(slots=True)
class Points:
    """Step-sorted points of one or more series (sorted by key, then step)."""

    keys: np.ndarray  # int64 key ids
    steps: np.ndarray  # int64
    values: np.ndarray  # float64, real nan/inf
    times: np.ndarray  # float64
    weights: np.ndarray  # int64: raw points each point stands for in counts

    def __len__(self) -> int:
        return len(self.steps)

    def take(self, index: np.ndarray) -> Points:
        return Points(
            self.keys[index],
            self.steps[index],
            self.values[index],
            self.times[index],
            self.weights[index],
        )

    @classmethod
    def empty(cls) -> Points:
        no_ints, no_floats = np.empty(0, np.int64), np.empty(0, np.float64)
        return cls(no_ints, no_ints, no_floats, no_floats, no_ints)

    @classmethod
    def concat(cls, parts: Sequence[Points]) -> Points:
        if not parts:
            return cls.empty()
        fields = ("keys", "steps", "values", "times", "weights")
        return cls(*(np.concatenate([getattr(part, name) for part in parts]) for name in fields))


def float_table(rows: Sequence[Sequence[float]], width: int) -> np.ndarray:
    """Rows of numbers (no NULLs: select coalesce(value, 0.0)) as a float64 table;
    fromiter over the flattened rows is several times faster than np.array(rows)."""
    flat = np.fromiter(chain.from_iterable(rows), np.float64, len(rows) * width)
    return flat.reshape(len(rows), width)


def raw_points(rows: Sequence[tuple[int, int, float, int, float]]) -> Points:
    """Stored rows (key_id, step, value, nonfinite, wall_time) to points; the value of a
    non-finite point (NULL, read as 0.0) comes from its flag."""
    if not rows:
        return Points.empty()
    table = float_table(rows, 5)
    values = apply_nonfinite(table[:, 2].copy(), table[:, 3])
    keys = table[:, 0].astype(np.int64)
    return Points(
        keys, table[:, 1].astype(np.int64), values, table[:, 4].copy(), np.ones(len(rows), np.int64)
    )

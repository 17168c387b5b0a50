"""Metric points as numpy columns: the stored encoding of non-finite values, and raw
reads of stored points straight through the database driver."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
from sqlalchemy import Connection

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


def sql_for(connection: Connection, sql: str) -> str:
    """SQL written with ? markers, for the connection's driver."""
    return sql if connection.dialect.name == "sqlite" else sql.replace("?", "%s")


def cursor_rows(connection: Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    # Straight through the driver: SQLAlchemy rows would cost more than the reads.
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql_for(connection, sql), tuple(params))
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _range_rows(
    connection: Connection,
    columns: str,
    series: tuple[int, int, int, int | None],
    limit: int | None,
) -> list[Any]:
    """Rows of one series (run_id, key_id, lo, hi or None) in step order."""
    run_id, key_id, lo, hi = series
    sql = f"SELECT {columns} FROM metrics WHERE run_id = ? AND key_id = ? AND step >= ?"
    params: list[int] = [run_id, key_id, lo]
    if hi is not None:
        sql += " AND step <= ?"
        params.append(hi)
    sql += " ORDER BY step"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return cursor_rows(connection, sql, params)


def read_page(
    connection: Connection, run_id: int, key_id: int, lo: int, hi: int | None, limit: int
) -> Points:
    """Like read_rows, for long reads (exports): three columns instead of five cross
    from the driver into Python, the rare non-finite flags come from a second query."""
    series = (run_id, key_id, lo, hi)
    rows = _range_rows(connection, "step, coalesce(value, 0.0), wall_time", series, limit)
    if not rows:
        return Points.empty()
    table = float_table(rows, 3)
    steps = table[:, 0].astype(np.int64)
    values = table[:, 1].copy()
    flagged = cursor_rows(
        connection,
        "SELECT step, nonfinite FROM metrics WHERE run_id = ? AND key_id = ? "
        "AND step BETWEEN ? AND ? AND nonfinite <> 0",
        [run_id, key_id, int(steps[0]), int(steps[-1])],
    )
    if flagged:
        special = np.array(flagged, np.int64)
        at = np.searchsorted(steps, special[:, 0])
        values[at] = apply_nonfinite(np.full(len(at), np.nan), special[:, 1])
    ones = np.ones(len(steps), np.int64)
    return Points(ones * key_id, steps, values, table[:, 2].copy(), ones)


def read_rows(
    connection: Connection,
    run_id: int,
    key_id: int,
    lo: int,
    hi: int | None = None,
    limit: int | None = None,
) -> Points:
    """Raw points of a series with lo <= step (<= hi), in step order, at most limit."""
    if hi is not None and hi < lo:
        return Points.empty()
    columns = "key_id, step, coalesce(value, 0.0), nonfinite, wall_time"
    return raw_points(_range_rows(connection, columns, (run_id, key_id, lo, hi), limit))

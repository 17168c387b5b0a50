"""The level-of-detail summary: what lets a chart of a million-point series open in
milliseconds without reading the million points.

Each series is cut into buckets of fixed step width at LEVELS resolutions (32 steps at
level 0, eight times wider at each level above). One row per (series, level, bucket)
holds the number of raw points in the bucket and, packed in a small blob, the raw points
that matter for a plot: the first, the last, the smallest and largest finite value and
the first NaN, +Inf and -Inf (so at most seven, usually four). Those are real points
(step, value, wall time), so a view built from them shows true values, and every bucket's
extremes at every level are exactly the raw data's: no spike is averaged away.

Why points rather than aggregate columns: the extremes of a union of buckets are among
the extremes of its parts, so a level is built from the level below with the same
function that builds level 0 from raw points, and a query hands the points it reads to
the same extreme-preserving downsampler a raw read uses.

Maintained at write time, inside the write's transaction: the buckets a batch touched
are rebuilt from the rows below them. A pure append (the common case) builds its new
level-0 buckets from the batch in memory and reads at most one partly filled bucket back;
a rewrite of older steps (a resumed run, a late row) reads the buckets it touched back
from the database, so the summary never depends on arrival order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection

from app.metrics import pgcopy
from app.metrics.points import Points, cursor_rows, raw_points, read_rows

# The summary's geometry is part of what is stored: changing it needs a migration that
# rebuilds every summary (lod.rebuild), as 0003 builds them.
BASE_WIDTH = 32
FANOUT = 8
LEVELS = 10  # the widest bucket spans 32 * 8**9 (about 4.3e9) steps
WIDTHS = [BASE_WIDTH * FANOUT**level for level in range(LEVELS)]

POINT = np.dtype([("step", "<i8"), ("value", "<f8"), ("time", "<f8")])
# Bound on the rows a query reads from one level (per series): a level is chosen when
# its buckets over the asked range number at most this many times max_points.
ROWS_PER_POINT = 4


@dataclass(slots=True)
class Buckets:
    """Summaries of buckets at one level: parallel arrays, plus each bucket's packed points."""

    keys: np.ndarray
    buckets: np.ndarray
    counts: np.ndarray
    blobs: list[bytes]


def summarize(points: Points, width: int) -> Buckets:
    """One bucket summary per (key, step // width) present in the points, which must be
    sorted by (key, step)."""
    n = len(points)
    if n == 0:
        empty = np.empty(0, np.int64)
        return Buckets(empty, empty, empty, [])
    buckets = points.steps // width
    change = np.empty(n, bool)
    change[0] = True
    change[1:] = (buckets[1:] != buckets[:-1]) | (points.keys[1:] != points.keys[:-1])
    starts = np.flatnonzero(change)
    group = np.cumsum(change) - 1  # bucket number of every point
    ends = np.append(starts[1:], n)
    chosen = [starts, ends - 1]
    finite = np.isfinite(points.values)
    for fill, reduce in ((np.inf, np.minimum), (-np.inf, np.maximum)):
        masked = np.where(finite, points.values, fill)
        extreme = reduce.reduceat(masked, starts)
        hits = np.flatnonzero(finite & (masked == extreme[group]))
        chosen.append(hits[_first_per_group(group[hits])])
    for special in (np.isnan(points.values), points.values == np.inf, points.values == -np.inf):
        hits = np.flatnonzero(special)
        chosen.append(hits[_first_per_group(group[hits])])
    keep = np.unique(np.concatenate(chosen))
    packed = np.empty(len(keep), POINT)
    packed["step"] = points.steps[keep]
    packed["value"] = points.values[keep]
    packed["time"] = points.times[keep]
    raw = packed.tobytes()
    bounds = np.searchsorted(group[keep], np.arange(len(starts) + 1)) * POINT.itemsize
    blobs = [raw[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)]
    counts = np.add.reduceat(points.weights, starts)
    return Buckets(points.keys[starts], buckets[starts], counts, blobs)


def _first_per_group(groups: np.ndarray) -> np.ndarray:
    """Positions of the first element of each run of equal values."""
    if len(groups) == 0:
        return np.empty(0, np.int64)
    first = np.empty(len(groups), bool)
    first[0] = True
    first[1:] = groups[1:] != groups[:-1]
    return np.flatnonzero(first)


def unpack(rows: Sequence[tuple[int, int, bytes]]) -> Points:
    """Rows of (key_id, count, blob) in (key, bucket) order to points; each bucket's
    count rides on its first point, so summarizing them again sums counts correctly."""
    blobs = [bytes(row[2]) for row in rows]
    packed = np.frombuffer(b"".join(blobs), POINT)
    lengths = np.array([len(blob) // POINT.itemsize for blob in blobs], np.int64)
    weights = np.zeros(len(packed), np.int64)
    if len(rows):
        firsts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        weights[firsts] = [row[1] for row in rows]
    keys = np.repeat(np.array([row[0] for row in rows], np.int64), lengths)
    return Points(
        keys,
        packed["step"].astype(np.int64),
        packed["value"].astype(np.float64),
        packed["time"].astype(np.float64),
        weights,
    )


# -- database access --------------------------------------------------------------------


def _ranges(keys: np.ndarray, buckets: np.ndarray) -> list[tuple[int, int, int]]:
    """(key, first bucket, last bucket) runs of consecutive buckets, for sorted input."""
    if len(keys) == 0:
        return []
    breaks = np.flatnonzero((np.diff(buckets) != 1) | (np.diff(keys) != 0)) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(keys)]]) - 1
    return list(
        zip(keys[starts].tolist(), buckets[starts].tolist(), buckets[ends].tolist(), strict=True)
    )


# One statement per level reads every range it needs; SQLite's parameter limit caps it.
_RANGES_PER_STATEMENT = 200


def _read_raw(connection: Connection, run_id: int, ranges: list[tuple[int, int, int]]) -> Points:
    parts = []
    for lo in range(0, len(ranges), _RANGES_PER_STATEMENT):
        chunk = ranges[lo : lo + _RANGES_PER_STATEMENT]
        wanted = ",".join(["(?, ?, ?)"] * len(chunk))
        params: list[int] = []
        for key_id, first, last in chunk:
            params += [key_id, first * BASE_WIDTH, (last + 1) * BASE_WIDTH - 1]
        rows = cursor_rows(
            connection,
            f"WITH wanted(key_id, lo, hi) AS (VALUES {wanted}) "
            "SELECT m.key_id, m.step, coalesce(m.value, 0.0), m.nonfinite, m.wall_time "
            "FROM wanted JOIN metrics m ON m.run_id = ? AND m.key_id = wanted.key_id "
            "AND m.step BETWEEN wanted.lo AND wanted.hi ORDER BY m.key_id, m.step",
            [*params, run_id],
        )
        parts.append(raw_points(rows))
    return Points.concat(parts)


def _read_level(
    connection: Connection, run_id: int, level: int, ranges: list[tuple[int, int, int]]
) -> Points:
    parts = []
    for lo in range(0, len(ranges), _RANGES_PER_STATEMENT):
        chunk = ranges[lo : lo + _RANGES_PER_STATEMENT]
        wanted = ",".join(["(?, ?, ?)"] * len(chunk))
        params = [value for item in chunk for value in item]
        rows = cursor_rows(
            connection,
            f"WITH wanted(key_id, lo, hi) AS (VALUES {wanted}) "
            "SELECT l.key_id, l.n_points, l.points FROM wanted JOIN metric_lod l "
            "ON l.run_id = ? AND l.key_id = wanted.key_id AND l.level = ? "
            "AND l.bucket BETWEEN wanted.lo AND wanted.hi ORDER BY l.key_id, l.bucket",
            [*params, run_id, level],
        )
        parts.append(unpack(rows))
    return Points.concat(parts)


def _write_level(connection: Connection, run_id: int, level: int, summary: Buckets) -> None:
    if not len(summary.keys):
        return
    columns = ("run_id", "key_id", "level", "bucket", "n_points", "points")
    rows = zip(
        [run_id] * len(summary.keys),
        summary.keys.tolist(),
        [level] * len(summary.keys),
        summary.buckets.tolist(),
        summary.counts.tolist(),
        summary.blobs,
        strict=True,
    )
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if connection.dialect.name == "sqlite":
            cursor.executemany(
                "INSERT INTO metric_lod (run_id, key_id, level, bucket, n_points, points) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, key_id, level, bucket) "
                "DO UPDATE SET n_points = excluded.n_points, points = excluded.points",
                rows,
            )
        else:
            types = ("int4", "int4", "int2", "int8", "int8", "bytea")
            pgcopy.upsert_via_temp(
                cursor,
                "metric_lod",
                columns,
                columns[:4],
                lambda table: pgcopy.copy_rows(cursor, table, columns, types, rows),
            )
    finally:
        cursor.close()


def update(connection: Connection, run_id: int, batch: Points, boundary: np.ndarray) -> None:
    """Rebuild every bucket, at every level, that the batch's points fall in. Call after
    the points are stored, in the same transaction. boundary: per point, its key's last
    step before this write (-1 for a key new to the run)."""
    if not len(batch):
        return
    # Buckets wholly after a key's previous last step hold only this batch's points.
    boundary_bucket = np.where(boundary < 0, -1, boundary // BASE_WIDTH)
    fresh = batch.steps // BASE_WIDTH > boundary_bucket
    parts = [summarize(batch.take(np.flatnonzero(fresh)), BASE_WIDTH)]
    stale = batch.take(np.flatnonzero(~fresh))
    if len(stale):
        touched = _distinct(stale.keys, stale.steps // BASE_WIDTH)
        parts.append(summarize(_read_raw(connection, run_id, _ranges(*touched)), BASE_WIDTH))
    summary = _merge(parts)
    _write_level(connection, run_id, 0, summary)
    for level in range(1, LEVELS):
        parents = _distinct(summary.keys, summary.buckets // FANOUT)
        ranges = [(key, lo * FANOUT, (hi + 1) * FANOUT - 1) for key, lo, hi in _ranges(*parents)]
        summary = summarize(_read_level(connection, run_id, level - 1, ranges), WIDTHS[level])
        _write_level(connection, run_id, level, summary)


def _distinct(keys: np.ndarray, buckets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (key, bucket) pairs of input sorted by both."""
    if len(keys) == 0:
        return keys, buckets
    new = np.empty(len(keys), bool)
    new[0] = True
    new[1:] = (keys[1:] != keys[:-1]) | (buckets[1:] != buckets[:-1])
    return keys[new], buckets[new]


def _merge(parts: list[Buckets]) -> Buckets:
    parts = [part for part in parts if len(part.keys)]
    if len(parts) == 1:
        return parts[0]
    if not parts:
        empty = np.empty(0, np.int64)
        return Buckets(empty, empty, empty, [])
    keys = np.concatenate([p.keys for p in parts])
    buckets = np.concatenate([p.buckets for p in parts])
    counts = np.concatenate([p.counts for p in parts])
    blobs = [blob for p in parts for blob in p.blobs]
    order = np.lexsort((buckets, keys))
    return Buckets(keys[order], buckets[order], counts[order], [blobs[i] for i in order.tolist()])


def rebuild(connection: Connection, run_id: int, key_id: int) -> None:
    """Build a series' whole summary from its stored points (for data written before the
    summary existed)."""
    rows = cursor_rows(
        connection,
        "SELECT key_id, step, coalesce(value, 0.0), nonfinite, wall_time FROM metrics "
        "WHERE run_id = ? AND key_id = ? ORDER BY step",
        [run_id, key_id],
    )
    points = raw_points(rows)
    update(connection, run_id, points, np.full(len(points), -1, np.int64))


# -- reading ------------------------------------------------------------------------------


@dataclass(slots=True)
class View:
    """What a query needs: the candidate points of a range, and how many raw points it
    holds. exact: the points are all the raw points (no summary was used)."""

    points: Points
    total: int
    exact: bool


def choose_level(span: int, max_points: int) -> int | None:
    """The finest level whose buckets over `span` steps number at most
    ROWS_PER_POINT * max_points; None when raw points are few enough to read directly."""
    budget = ROWS_PER_POINT * max_points
    if span <= budget:
        return None
    for level, width in enumerate(WIDTHS):
        if span // width <= budget:
            return level
    return LEVELS - 1


def read_view(
    connection: Connection, run_id: int, key_id: int, lo: int, hi: int, max_points: int
) -> View:
    """Points standing for [lo, hi]: raw points in the partly covered buckets at both
    ends, summary points for the buckets in between."""
    level = choose_level(hi - lo + 1, max_points)
    if level is None:
        raw = read_rows(connection, run_id, key_id, lo, hi)
        return View(raw, len(raw), True)
    width = WIDTHS[level]
    first = -(-lo // width)
    last = (hi + 1) // width - 1
    if first > last:
        raw = read_rows(connection, run_id, key_id, lo, hi)
        return View(raw, len(raw), True)
    head = read_rows(connection, run_id, key_id, lo, first * width - 1)
    tail = read_rows(connection, run_id, key_id, (last + 1) * width, hi)
    middle = _read_level(connection, run_id, level, [(key_id, first, last)])
    total = len(head) + int(middle.weights.sum()) + len(tail)
    if total <= max_points:
        raw = read_rows(connection, run_id, key_id, lo, hi)
        return View(raw, len(raw), True)
    return View(Points.concat([head, middle, tail]), total, False)

"""Full-resolution reads: CSV (long and wide), Parquet, and pages of history.

Everything here reads in keyset pages (`step > last ORDER BY step LIMIT n`), each page in
its own short read transaction, and writes each page out before reading the next, so
memory stays flat for a run of any length and no long read holds the database.

Numbers are written in their shortest round-trip form (orjson formats a whole column in
C), so a value read back from a CSV is bit-for-bit the stored one; non-finite values as
NaN / Infinity / -Infinity (which float() and pandas read back), an empty cell where a
wide row's key has no point.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from app.db import Database
from app.jsonutil import encode_float
from app.metrics.points import Points, read_page
from app.metrics.store import MetricStore
from app.spreadsheet import formula_safe

PAGE_POINTS = 100_000


def csv_text_cell(text: str) -> str:
    """A text cell (a metric name) safe to open in a spreadsheet, CSV-quoted when it
    needs it."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([formula_safe(text)])
    return buffer.getvalue()


def _cells(column: np.ndarray) -> list[bytes]:
    """A numeric column as CSV cells, shortest round-trip form."""
    if not len(column):
        return []
    return orjson.dumps(column, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")


def _value_cells(values: np.ndarray, present: np.ndarray | None = None) -> list[bytes]:
    """Values as cells: NaN / Infinity / -Infinity spelled out, empty where not present."""
    cells = _cells(values)
    for index in np.flatnonzero(~np.isfinite(values)).tolist():
        cells[index] = str(encode_float(float(values[index]))).encode()
    if present is not None:
        for index in np.flatnonzero(~present).tolist():
            cells[index] = b""
    return cells


def _lines(columns: list[Any]) -> bytes:
    return b"\n".join(map(b",".join, zip(*columns, strict=False))) + b"\n"


def series_keys(
    db: Database, store: MetricStore, run_id: int, keys: list[str] | None
) -> dict[str, int]:
    """The run's keys (all, or those named that it has), name -> key id, in name order."""
    with db.session() as session:
        present = {name: row.key_id for name, row in store.run_keys(session, run_id).items()}
    names = sorted(present) if keys is None else [name for name in keys if name in present]
    return {name: present[name] for name in names}


def _key_page(
    db: Database, run_id: int, key_id: int, start: int, end: int | None, limit: int
) -> Points:
    with db.session() as session:
        return read_page(session.connection(), run_id, key_id, start, end, limit)


def long_pages(db: Database, run_id: int, key_ids: dict[str, int]) -> Iterator[tuple[str, Points]]:
    for name, key_id in key_ids.items():
        start = 0
        while True:
            page = _key_page(db, run_id, key_id, start, None, PAGE_POINTS)
            if len(page):
                yield name, page
            if len(page) < PAGE_POINTS:
                break
            start = int(page.steps[-1]) + 1


def csv_long(db: Database, run_id: int, key_ids: dict[str, int]) -> Iterator[bytes]:
    """key,step,value,wall_time: one line per point, keys in name order, steps ascending."""
    yield b"key,step,value,wall_time\n"
    for name, page in long_pages(db, run_id, key_ids):
        cell = csv_text_cell(name).encode()
        yield _lines(
            [repeat(cell), _cells(page.steps), _value_cells(page.values), _cells(page.times)]
        )


@dataclass(slots=True)
class WidePage:
    """Rows of steps; per key the values (NaN where absent) and which are present."""

    steps: np.ndarray
    wall_times: np.ndarray  # the latest wall time among the step's points
    values: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    next_start: int | None


def wide_page(
    db: Database, run_id: int, key_ids: dict[str, int], start: int, end: int | None, limit: int
) -> WidePage:
    """At most `limit` steps from `start` (inclusive) up to `end` (inclusive), every
    key's point at each of them, and where the next page starts."""
    pages = {
        name: _key_page(db, run_id, key_id, start, end, limit) for name, key_id in key_ids.items()
    }
    full = [page for page in pages.values() if len(page) == limit]
    # A key that filled its page may have more points after its last one: the page may
    # not go beyond the earliest such last step, or rows would be missing that key.
    cut = min((int(page.steps[-1]) for page in full), default=None)
    steps = _union([page.steps for page in pages.values()])
    if cut is not None:
        steps = steps[steps <= cut]
    more = cut is not None
    if len(steps) > limit:
        steps, more = steps[:limit], True
    wall_times = np.full(len(steps), -np.inf)
    values: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    for name, page in pages.items():
        inside = page.steps <= (steps[-1] if len(steps) else -1)
        where = np.searchsorted(steps, page.steps[inside])
        column = np.full(len(steps), np.nan)
        column[where] = page.values[inside]
        mask = np.zeros(len(steps), bool)
        mask[where] = True
        np.maximum.at(wall_times, where, page.times[inside])
        values[name], present[name] = column, mask
    next_start = int(steps[-1]) + 1 if more and len(steps) else None
    return WidePage(steps, wall_times, values, present, next_start)


def _union(step_arrays: list[np.ndarray]) -> np.ndarray:
    """Sorted distinct steps of several sorted arrays."""
    if len(step_arrays) == 1:
        return step_arrays[0]
    merged = np.sort(np.concatenate(step_arrays or [np.empty(0, np.int64)]), kind="stable")
    if not len(merged):
        return merged
    return merged[np.append(True, merged[1:] != merged[:-1])]


def wide_pages(
    db: Database, run_id: int, key_ids: dict[str, int], rows_per_page: int
) -> Iterator[WidePage]:
    start: int | None = 0
    while start is not None:
        page = wide_page(db, run_id, key_ids, start, None, rows_per_page)
        if len(page.steps):
            yield page
        start = page.next_start


def _wide_rows_per_page(key_count: int) -> int:
    return max(1_000, PAGE_POINTS // max(1, key_count))


def csv_wide(db: Database, run_id: int, key_ids: dict[str, int]) -> Iterator[bytes]:
    """step,wall_time,<key>...: one line per step, an empty cell where a key has no point."""
    yield (",".join(["step", "wall_time", *map(csv_text_cell, key_ids)]) + "\n").encode()
    for page in wide_pages(db, run_id, key_ids, _wide_rows_per_page(len(key_ids))):
        columns = [_cells(page.steps), _cells(page.wall_times)]
        columns += [_value_cells(page.values[name], page.present[name]) for name in key_ids]
        yield _lines(columns)


class _Chunks:
    """A write-only file for ParquetWriter that hands back what was written so far."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.closed = False
        self.position = 0

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.parts.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


LONG_SCHEMA = pa.schema(
    [
        ("key", pa.dictionary(pa.int32(), pa.string())),
        ("step", pa.int64()),
        ("value", pa.float64()),
        ("wall_time", pa.float64()),
    ]
)


def parquet_long(db: Database, run_id: int, key_ids: dict[str, int]) -> Iterator[bytes]:
    """The long table (key, step, value, wall_time) as Parquet, a row group per page;
    NaN and infinities are stored as themselves."""
    sink = _Chunks()
    with pq.ParquetWriter(pa.PythonFile(sink, mode="w"), LONG_SCHEMA) as writer:
        for name, page in long_pages(db, run_id, key_ids):
            key = pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(len(page), np.int32)), pa.array([name])
            )
            writer.write_table(
                pa.table([key, page.steps, page.values, page.times], schema=LONG_SCHEMA)
            )
            yield sink.take()
    yield sink.take()


def parquet_wide(db: Database, run_id: int, key_ids: dict[str, int]) -> Iterator[bytes]:
    """One row per step: step, wall_time and a float64 column per key, null where the
    key has no point at that step."""
    schema = pa.schema(
        [("step", pa.int64()), ("wall_time", pa.float64())]
        + [(name, pa.float64()) for name in key_ids]
    )
    sink = _Chunks()
    with pq.ParquetWriter(pa.PythonFile(sink, mode="w"), schema) as writer:
        for page in wide_pages(db, run_id, key_ids, _wide_rows_per_page(len(key_ids))):
            columns = [pa.array(page.steps), pa.array(page.wall_times)]
            columns += [pa.array(page.values[name], mask=~page.present[name]) for name in key_ids]
            writer.write_table(pa.table(columns, schema=schema))
            yield sink.take()
    yield sink.take()


def history(
    db: Database,
    run_id: int,
    key_ids: dict[str, int],
    start: int,
    end: int | None,
    limit: int,
) -> dict[str, Any]:
    page = wide_page(db, run_id, key_ids, start, end, limit)
    columns: dict[str, list[float | str | None]] = {}
    for name in key_ids:
        cells: list[float | str | None] = page.values[name].tolist()
        for index in np.flatnonzero(~np.isfinite(page.values[name])).tolist():
            cells[index] = encode_float(cells[index]) if page.present[name][index] else None  # type: ignore[arg-type]
        columns[name] = cells
    return {
        "run_id": run_id,
        "keys": list(key_ids),
        "steps": page.steps.tolist(),
        "wall_times": page.wall_times.tolist(),
        "columns": columns,
        "next_start": page.next_start,
    }

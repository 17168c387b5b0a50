"""PostgreSQL bulk writes through binary COPY: the fastest way rows enter PostgreSQL.

A batch whose every point is new (an append) is copied straight into `metrics`; a batch
that may rewrite rows is copied into a temporary table and upserted from there, since
COPY itself cannot resolve conflicts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from app.metrics.points import Points, nonfinite_flags

_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_TRAILER = (-1).to_bytes(2, "big", signed=True)
# One tuple of `metrics` in COPY's binary format: a field count, then per field its
# length and big-endian bytes. Every field has a fixed width, so numpy packs a batch.
_METRIC_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("run_id_len", ">i4"), ("run_id", ">i4"),
        ("key_id_len", ">i4"), ("key_id", ">i4"),
        ("step_len", ">i4"), ("step", ">i8"),
        ("value_len", ">i4"), ("value", ">f8"),
        ("nonfinite_len", ">i4"), ("nonfinite", ">i2"),
        ("wall_time_len", ">i4"), ("wall_time", ">f8"),
    ]
)  # fmt: skip
METRIC_COLUMNS = "run_id, key_id, step, value, nonfinite, wall_time"


def metrics_copy_data(run_id: int, batch: Points) -> bytes:
    """The batch in COPY binary format. Non-finite values are stored as themselves
    (PostgreSQL keeps NaN and infinities), with their flag as on SQLite."""
    rows = np.empty(len(batch), _METRIC_ROW)
    rows["fields"] = 6
    for name, width in (
        ("run_id", 4), ("key_id", 4), ("step", 8), ("value", 8), ("nonfinite", 2), ("wall_time", 8)
    ):  # fmt: skip
        rows[f"{name}_len"] = width
    rows["run_id"] = run_id
    rows["key_id"] = batch.keys
    rows["step"] = batch.steps
    rows["value"] = batch.values
    rows["nonfinite"] = nonfinite_flags(batch.values)
    rows["wall_time"] = batch.times
    return _HEADER + rows.tobytes() + _TRAILER


def copy_rows(
    cursor: Any,
    table: str,
    columns: Sequence[str],
    types: Sequence[str],
    rows: Iterable[Sequence[Any]],
) -> None:
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)


def upsert_via_temp(
    cursor: Any,
    table: str,
    columns: Sequence[str],
    key: Sequence[str],
    fill: Any,
) -> None:
    """Create (once per connection) an empty temporary twin of `table`, let `fill(name)`
    COPY into it, upsert everything into `table`, and empty it again."""
    incoming = f"{table}_incoming"
    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {incoming} "
        f"(LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    fill(incoming)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    listed = ", ".join(columns)
    cursor.execute(
        f"INSERT INTO {table} ({listed}) SELECT {listed} FROM {incoming} "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )
    cursor.execute(f"DELETE FROM {incoming}")

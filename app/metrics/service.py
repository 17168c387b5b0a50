"""Metric ingest and queries over a run's series."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.db import Database
from app.errors import invalid, not_found
from app.jsonutil import encode_float
from app.metrics.cache import SeriesCache
from app.metrics.downsample import Method, downsample_indices
from app.metrics.schemas import IngestRow
from app.metrics.store import MetricRow, MetricStore, Series, WriteResult, metric_names
from app.models import Run, RunSource, RunStatus
from app.models.base import now
from app.spreadsheet import formula_safe


def ingest(
    store: MetricStore, run_id: int, rows: Sequence[IngestRow], max_rows: int
) -> WriteResult:
    if len(rows) > max_rows:
        raise invalid("rows", f"at most {max_rows} rows per request, got {len(rows)}")
    with store.db.session() as session:
        if session.get(Run, run_id) is None:
            raise not_found("run", run_id)
    batch = [MetricRow(row.step, row.metrics, row.time) for row in rows]
    key_ids = store.key_ids(metric_names(batch))
    with store.db.session(write=True) as session:
        run = session.get(Run, run_id)
        if run is None:  # deleted meanwhile
            raise not_found("run", run_id)
        result = store.write_rows(session, run_id, batch, key_ids)
        if run.source == RunSource.external and run.status == RunStatus.running:
            # For a script-fed run, arriving data is its sign of life.
            run.heartbeat_at = now()
    return result


def query(
    session: Session,
    store: MetricStore,
    cache: SeriesCache,
    run_id: int,
    keys: list[str] | None,
    start: int | None,
    end: int | None,
    max_points: int,
    method: Method,
) -> dict[str, Any]:
    if session.get(Run, run_id) is None:
        raise not_found("run", run_id)
    if keys is None:
        keys = sorted(store.run_keys(session, run_id))
    key_ids = store.known_key_ids(session, keys)
    loaded = cache.get_many(session, run_id, key_ids.values())
    series = {}
    for name in keys:
        whole = loaded.get(key_ids[name]) if name in key_ids else None
        series[name] = _window(whole or Series.empty(), start, end, max_points, method)
    return {
        "run_id": run_id,
        "start": start,
        "end": end,
        "max_points": max_points,
        "series": series,
    }


def _window(
    series: Series, start: int | None, end: int | None, max_points: int, method: Method
) -> dict[str, Any]:
    lo = 0 if start is None else int(np.searchsorted(series.steps, start, side="left"))
    hi = len(series.steps) if end is None else int(np.searchsorted(series.steps, end, side="right"))
    steps, values, times = series.steps[lo:hi], series.values[lo:hi], series.times[lo:hi]
    total = len(steps)
    downsampled = total > max_points
    if downsampled:
        keep = downsample_indices(steps, values, max_points, method)
        steps, values, times = steps[keep], values[keep], times[keep]
    return {
        "steps": steps.tolist(),
        "values": _encode_values(values),
        "times": times.tolist(),
        "downsampled": downsampled,
        "method": method.value if downsampled else "none",
        "total_points": total,
    }


def _encode_values(values: np.ndarray) -> list[float | str]:
    encoded: list[float | str] = values.tolist()
    for index in np.flatnonzero(~np.isfinite(values)).tolist():
        encoded[index] = encode_float(values[index])
    return encoded


CSV_BATCH = 50_000


def export_csv(
    db: Database, store: MetricStore, run_id: int, keys: list[str] | None
) -> Iterator[str]:
    """Full resolution, one line per point: key,step,value,wall_time. Streams from the
    database in primary-key order, so memory stays flat for any run size."""
    with db.session() as session:
        names = {row.key_id: name for name, row in store.run_keys(session, run_id).items()}
    if keys is not None:
        names = {key_id: name for key_id, name in names.items() if name in set(keys)}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["key", "step", "value", "wall_time"])
    yield buffer.getvalue()
    for key_id in sorted(names, key=names.__getitem__):
        with db.session() as session:
            result = session.execute(
                text(
                    "SELECT step, value, nonfinite, wall_time FROM metrics "
                    "WHERE run_id = :run_id AND key_id = :key_id ORDER BY step"
                ),
                {"run_id": run_id, "key_id": key_id},
            )
            while chunk := result.fetchmany(CSV_BATCH):
                series = Series.from_rows(chunk)  # type: ignore[arg-type]
                buffer.seek(0)
                buffer.truncate()
                writer.writerows(
                    zip(
                        [formula_safe(names[key_id])] * len(chunk),
                        series.steps.tolist(),
                        _encode_values(series.values),
                        series.times.tolist(),
                        strict=True,
                    )
                )
                yield buffer.getvalue()

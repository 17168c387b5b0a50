"""Metric ingest and queries over a run's series."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.errors import not_found
from app.jsonutil import encode_float
from app.metrics import lod
from app.metrics.downsample import Method, downsample_indices
from app.metrics.ingest import decode_rows
from app.metrics.points import Points
from app.metrics.schemas import IngestResponse
from app.metrics.store import MetricStore, RunGone, metric_names
from app.models import Run, RunSource, RunStatus
from app.models.base import now


def ingest(store: MetricStore, run_id: int, body: bytes, max_rows: int) -> IngestResponse:
    """Decode, check and write one ingest body. Runs in a worker thread: parsing a
    ten-megabyte body must not hold up the event loop."""
    with store.db.session() as session:
        if session.get(Run, run_id) is None:
            raise not_found("run", run_id)
    rows = decode_rows(body, max_rows)
    key_ids = store.key_ids(metric_names(rows))
    with store.db.session(write=True) as session:
        run = session.get(Run, run_id)
        if run is None:  # deleted meanwhile
            raise not_found("run", run_id)
        try:
            result = store.write_rows(session, run_id, rows, key_ids)
        except RunGone:
            raise not_found("run", run_id) from None
        if run.source == RunSource.external and run.status == RunStatus.running:
            # For a script-fed run, arriving data is its sign of life.
            run.heartbeat_at = now()
    return IngestResponse(
        run_id=run_id, rows=len(rows), points=result.points, last_step=result.last_step
    )


def query(
    session: Session,
    store: MetricStore,
    run_id: int,
    keys: list[str] | None,
    start: int | None,
    end: int | None,
    max_points: int,
    method: Method,
) -> dict[str, Any]:
    """Each series over [start, end], read through the level-of-detail summary: the
    rows read grow with max_points, not with the series."""
    if session.get(Run, run_id) is None:
        raise not_found("run", run_id)
    present = store.run_keys(session, run_id)
    if keys is None:
        keys = sorted(present)
    connection = session.connection()
    series = {}
    for name in keys:
        info = present.get(name)
        if info is None:
            view = lod.View(Points.empty(), 0, True)
        else:
            lo = info.first_step if start is None else max(start, info.first_step)
            hi = info.last_step if end is None else min(end, info.last_step)
            view = lod.read_view(connection, run_id, info.key_id, lo, hi, max_points)
        series[name] = _window(view, max_points, method)
    return {
        "run_id": run_id,
        "start": start,
        "end": end,
        "max_points": max_points,
        "series": series,
    }


def _window(view: lod.View, max_points: int, method: Method) -> dict[str, Any]:
    steps, values, times = view.points.steps, view.points.values, view.points.times
    downsampled = view.total > max_points
    if downsampled:
        keep = downsample_indices(steps, values, max_points, method)
        steps, values, times = steps[keep], values[keep], times[keep]
    return {
        "steps": steps.tolist(),
        "values": encode_values(values),
        "times": times.tolist(),
        "downsampled": downsampled,
        "method": method.value if downsampled else "none",
        "total_points": view.total,
    }


def encode_values(values: np.ndarray) -> list[float | str]:
    encoded: list[float | str] = values.tolist()
    for index in np.flatnonzero(~np.isfinite(values)).tolist():
        encoded[index] = encode_float(values[index])
    return encoded

"""Metric endpoints: ingest, spike-preserving queries, CSV export."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from app.deps import CacheDep, DatabaseDep, ReadSession, SettingsDep, StoreDep
from app.errors import invalid, not_found
from app.jsonutil import dumps
from app.metrics import service
from app.metrics.downsample import Method
from app.metrics.schemas import IngestRequest, IngestResponse, SeriesResponse
from app.models import Run
from app.strict import RunId, StepBound

router = APIRouter(tags=["metrics"])


@router.post("/runs/{run_id}/metrics", response_model=IngestResponse)
def ingest_metrics(
    run_id: RunId, body: IngestRequest, store: StoreDep, settings: SettingsDep
) -> IngestResponse:
    """Write rows of metrics; a (key, step) written again replaces the earlier value.

    The whole batch is one transaction: a rejected batch writes nothing."""
    result = service.ingest(store, run_id, body.rows, settings.ingest_max_rows)
    return IngestResponse(
        run_id=run_id, rows=len(body.rows), points=result.points, last_step=result.last_step
    )


def _split_keys(keys: str | None) -> list[str] | None:
    if keys is None:
        return None
    names = [name.strip() for name in keys.split(",") if name.strip()]
    if not names:
        raise invalid("keys", "names no metric")
    return names


@router.get(
    "/runs/{run_id}/metrics", response_model=None, responses={200: {"model": SeriesResponse}}
)
def query_metrics(
    run_id: RunId,
    session: ReadSession,
    store: StoreDep,
    cache: CacheDep,
    settings: SettingsDep,
    keys: Annotated[str | None, Query(description="comma-separated metric names")] = None,
    start: Annotated[StepBound | None, Query(description="first step, inclusive")] = None,
    end: Annotated[StepBound | None, Query(description="last step, inclusive")] = None,
    max_points: Annotated[int | None, Query(ge=8)] = None,
    method: Method = Method.m4,
) -> Response:
    """Each series over [start, end]: at full resolution when it holds at most
    max_points points, otherwise downsampled with an extreme-preserving method (every
    bucket's minimum and maximum are kept, so no spike disappears)."""
    if start is not None and end is not None and end < start:
        raise invalid("end", f"must not be before start ({start})")
    points = settings.default_max_points if max_points is None else max_points
    if points > settings.max_points_limit:
        raise invalid("max_points", f"must be at most {settings.max_points_limit}")
    result: dict[str, Any] = service.query(
        session, store, cache, run_id, _split_keys(keys), start, end, points, method
    )
    # Values are already RFC 8259-safe; dumps() would refuse any stray NaN.
    return Response(content=dumps(result), media_type="application/json")


@router.get("/runs/{run_id}/metrics.csv", response_class=StreamingResponse)
def export_metrics_csv(
    run_id: RunId,
    session: ReadSession,
    db: DatabaseDep,
    store: StoreDep,
    keys: Annotated[str | None, Query(description="comma-separated metric names")] = None,
) -> StreamingResponse:
    """Every point of the run at full resolution: key,step,value,wall_time."""
    if session.get(Run, run_id) is None:
        raise not_found("run", run_id)
    lines: Iterator[str] = service.export_csv(db, store, run_id, _split_keys(keys))
    return StreamingResponse(
        lines,
        media_type="text/csv",
        headers={"content-disposition": f'attachment; filename="run-{run_id}-metrics.csv"'},
    )

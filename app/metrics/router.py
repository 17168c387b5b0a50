"""Metric endpoints: ingest, spike-preserving queries, full-resolution exports and history."""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from app.deps import DatabaseDep, ReadSession, SettingsDep, StoreDep
from app.errors import invalid, not_found
from app.jsonutil import dumps
from app.metrics import export, service
from app.metrics.downsample import Method
from app.metrics.schemas import HistoryResponse, IngestRequest, IngestResponse, SeriesResponse
from app.models import Run
from app.strict import RunId, StepBound

router = APIRouter(tags=["metrics"])


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its $defs written in place, for openapi_extra."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)  # type: ignore[no-any-return]


INGEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inline_refs(IngestRequest.model_json_schema())}
        },
    }
}


@router.post("/runs/{run_id}/metrics", response_model=IngestResponse, openapi_extra=INGEST_BODY)
async def ingest_metrics(
    run_id: RunId, request: Request, store: StoreDep, settings: SettingsDep
) -> IngestResponse:
    """Write rows of metrics; a (key, step) written again replaces the earlier value.

    The whole batch is one transaction: a rejected batch writes nothing."""
    body = await request.body()
    # Decoding and writing run in a worker thread: a big body must not stall the loop.
    return await run_in_threadpool(service.ingest, store, run_id, body, settings.ingest_max_rows)


def _split_keys(keys: str | None) -> list[str] | None:
    if keys is None:
        return None
    names = [name.strip() for name in keys.split(",") if name.strip()]
    if not names:
        raise invalid("keys", "names no metric")
    return names


KeysQuery = Annotated[str | None, Query(description="comma-separated metric names")]


@router.get(
    "/runs/{run_id}/metrics", response_model=None, responses={200: {"model": SeriesResponse}}
)
def query_metrics(
    run_id: RunId,
    session: ReadSession,
    store: StoreDep,
    settings: SettingsDep,
    keys: KeysQuery = None,
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
        session, store, run_id, _split_keys(keys), start, end, points, method
    )
    # Values are already RFC 8259-safe; dumps() would refuse any stray NaN.
    return Response(content=dumps(result), media_type="application/json")


class Layout(StrEnum):
    long = "long"
    wide = "wide"


def _export_keys(
    session: ReadSession, db: DatabaseDep, store: StoreDep, run_id: RunId, keys: str | None
) -> dict[str, int]:
    if session.get(Run, run_id) is None:
        raise not_found("run", run_id)
    return export.series_keys(db, store, run_id, _split_keys(keys))


@router.get("/runs/{run_id}/metrics.csv", response_class=StreamingResponse)
def export_metrics_csv(
    run_id: RunId,
    session: ReadSession,
    db: DatabaseDep,
    store: StoreDep,
    keys: KeysQuery = None,
    layout: Layout = Layout.long,
) -> StreamingResponse:
    """Every point of the run at full resolution. long: key,step,value,wall_time, a
    line per point; wide: step,wall_time,<key>..., a line per step."""
    key_ids = _export_keys(session, db, store, run_id, keys)
    lines: Iterator[bytes] = (
        export.csv_long(db, run_id, key_ids)
        if layout == Layout.long
        else export.csv_wide(db, run_id, key_ids)
    )
    return StreamingResponse(
        lines,
        media_type="text/csv",
        headers={
            "content-disposition": f'attachment; filename="run-{run_id}-metrics-{layout.value}.csv"'
        },
    )


@router.get("/runs/{run_id}/metrics.parquet", response_class=StreamingResponse)
def export_metrics_parquet(
    run_id: RunId,
    session: ReadSession,
    db: DatabaseDep,
    store: StoreDep,
    keys: KeysQuery = None,
    layout: Layout = Layout.long,
) -> StreamingResponse:
    """Every point of the run as Parquet: long (key, step, value, wall_time) or wide
    (step, wall_time, a column per key, null where a key has no point)."""
    key_ids = _export_keys(session, db, store, run_id, keys)
    chunks: Iterator[bytes] = (
        export.parquet_long(db, run_id, key_ids)
        if layout == Layout.long
        else export.parquet_wide(db, run_id, key_ids)
    )
    return StreamingResponse(
        chunks,
        media_type="application/vnd.apache.parquet",
        headers={"content-disposition": f'attachment; filename="run-{run_id}-metrics.parquet"'},
    )


@router.get(
    "/runs/{run_id}/history", response_model=None, responses={200: {"model": HistoryResponse}}
)
def metric_history(
    run_id: RunId,
    session: ReadSession,
    db: DatabaseDep,
    store: StoreDep,
    keys: KeysQuery = None,
    start: Annotated[StepBound, Query(description="first step, inclusive")] = 0,
    end: Annotated[StepBound | None, Query(description="last step, inclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000, description="at most this many steps")] = 10_000,
) -> Response:
    """A page of full-resolution history, one row per step and one column per key;
    fetch the next page with start=next_start until it is null."""
    if end is not None and end < start:
        raise invalid("end", f"must not be before start ({start})")
    key_ids = _export_keys(session, db, store, run_id, keys)
    page = export.history(db, run_id, key_ids, start, end, limit)
    return Response(content=dumps(page), media_type="application/json")

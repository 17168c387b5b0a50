"""Run endpoints: create, list, read, stop, resume, finish, delete; samples; presets."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from fastapi.responses import FileResponse
from sqlalchemy import select

from app.deps import CacheDep, ReadSession, SettingsDep, StoreDep, WriteSession
from app.errors import invalid, quote
from app.metrics import store as metric_store
from app.models import RunSource, RunStatus, Sample
from app.runs import files, service
from app.runs.query import RunListSpec, parse_filters, parse_sort
from app.runs.schemas import (
    CheckpointOut,
    LogChunk,
    Preset,
    RunColumns,
    RunCreate,
    RunDetail,
    RunFinish,
    RunList,
    RunUpdate,
    SampleIn,
    SampleOut,
)
from app.strict import INT64_MAX, Offset, PlainName, RunId
from trainer.config import TrainConfig
from trainer.presets import list_presets, preset_config

router = APIRouter(tags=["runs"])


@router.post("/runs", status_code=201, response_model=RunDetail)
def create_run(
    body: RunCreate, session: WriteSession, store: StoreDep, settings: SettingsDep
) -> RunDetail:
    """Queue a launched run for a worker, or open an external run for a script. A
    launched config whose memory estimate exceeds its device is refused (422)."""
    run = service.create_run(session, settings, body)
    return service.run_detail(session, settings, store, run)


def _parse_statuses(status: str | None) -> list[RunStatus] | None:
    if not status:
        return None
    parsed = []
    for name in status.split(","):
        try:
            parsed.append(RunStatus(name.strip()))
        except ValueError:
            allowed = ", ".join(s.value for s in RunStatus)
            message = f"unknown status {quote(name.strip())}; one of {allowed}"
            raise invalid("status", message) from None
    return parsed


@router.get("/runs", response_model=RunList)
def list_runs(
    session: ReadSession,
    settings: SettingsDep,
    status: Annotated[str | None, Query(description="comma-separated statuses")] = None,
    source: RunSource | None = None,
    q: Annotated[PlainName | None, Query(max_length=200, description="name contains")] = None,
    filter: Annotated[  # noqa: A002 - the query parameter's name
        list[str] | None,
        Query(
            max_length=300,
            description="NAME OP VALUE, repeatable: `lr > 1e-3`, `val/loss < 1.6`, "
            "`tags ~ baseline`; a name with a slash is a metric's latest value, `name`, "
            "`status`, `preset`, `source`, `step`, `tags`, `notes` are the run's fields, "
            "any other name a config key (`faults.nan_step`)",
        ),
    ] = None,
    sort: Annotated[
        str | None, Query(max_length=200, description="a name as in filter; `-` first: descending")
    ] = None,
    metrics: Annotated[
        str | None,
        Query(max_length=4000, description="comma-separated metric keys whose latest value to add"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> RunList:
    """Runs, newest first (or by `sort`), filtered by status, name and any condition."""
    spec = RunListSpec(
        statuses=_parse_statuses(status),
        source=source,
        name_contains=q,
        conditions=tuple(parse_filters(filter or [])),
        sort=parse_sort(sort),
        metric_columns=frozenset(k.strip() for k in (metrics or "").split(",") if k.strip()),
    )
    runs, total = service.list_runs(session, settings, spec, limit, offset)
    return RunList(runs=runs, total=total, limit=limit, offset=offset)


@router.get("/runs/columns", response_model=RunColumns)
def run_columns(session: ReadSession) -> RunColumns:
    """What the runs table can show, filter and sort by: run fields, config keys and
    metric keys across all runs, tags and presets in use."""
    return service.run_columns(session)


@router.get("/runs/{run_id}", response_model=RunDetail)
def get_run(
    run_id: RunId, session: ReadSession, store: StoreDep, settings: SettingsDep
) -> RunDetail:
    """Status, config, last step, the latest value of every key, finding counts."""
    return service.run_detail(session, settings, store, service.get_run(session, run_id))


@router.patch("/runs/{run_id}", response_model=RunDetail)
def update_run(
    run_id: RunId, body: RunUpdate, session: WriteSession, store: StoreDep, settings: SettingsDep
) -> RunDetail:
    """Rename a run, replace its tags, or write its notes."""
    run = service.update_run(session, service.get_run(session, run_id), body)
    return service.run_detail(session, settings, store, run)


@router.get("/runs/{run_id}/log", response_model=LogChunk)
def run_log(
    run_id: RunId,
    session: ReadSession,
    settings: SettingsDep,
    offset: Annotated[
        int | None, Query(ge=0, le=INT64_MAX, description="continue from here")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1024 * 1024)] = files.LOG_TAIL_BYTES,
) -> LogChunk:
    """The run's output log (the trainer's stdout and stderr): its tail, or what follows
    `offset` (pass the previous answer's next_offset to follow it live)."""
    service.get_run(session, run_id)
    return files.read_log(settings, run_id, offset, limit)


@router.get("/runs/{run_id}/checkpoints", response_model=list[CheckpointOut])
def list_checkpoints(
    run_id: RunId, session: ReadSession, settings: SettingsDep
) -> list[CheckpointOut]:
    """The run's checkpoints (latest, best by val loss) with step, size and val loss."""
    service.get_run(session, run_id)
    return files.list_checkpoints(settings, run_id)


@router.get("/runs/{run_id}/checkpoints/{name}", response_class=FileResponse)
def download_checkpoint(
    run_id: RunId, name: str, session: ReadSession, settings: SettingsDep
) -> FileResponse:
    """Download one checkpoint (a torch file: `torch.load(path, weights_only=True)`)."""
    service.get_run(session, run_id)
    path = files.checkpoint_path(settings, run_id, name)
    return FileResponse(
        path, media_type="application/octet-stream", filename=f"run-{run_id}-{name}"
    )


@router.post("/runs/{run_id}/stop", response_model=RunDetail)
def stop_run(
    run_id: RunId, session: WriteSession, store: StoreDep, settings: SettingsDep
) -> RunDetail:
    """A queued run stops at once; a running one finishes its step, checkpoints and stops."""
    run = service.stop_run(session, service.get_run(session, run_id))
    return service.run_detail(session, settings, store, run)


@router.post("/runs/{run_id}/resume", response_model=RunDetail)
def resume_run(
    run_id: RunId, session: WriteSession, store: StoreDep, settings: SettingsDep
) -> RunDetail:
    """Queue a stopped, interrupted or failed run to continue from its latest checkpoint."""
    run = service.resume_run(session, settings, service.get_run(session, run_id))
    return service.run_detail(session, settings, store, run)


@router.post("/runs/{run_id}/finish", response_model=RunDetail)
def finish_run(
    run_id: RunId,
    session: WriteSession,
    store: StoreDep,
    settings: SettingsDep,
    body: Annotated[RunFinish | None, Body()] = None,
) -> RunDetail:
    """An external run's script reports that it ended (default: completed)."""
    body = body or RunFinish()
    run = service.finish_run(
        session, service.get_run(session, run_id), RunStatus(body.status), body.error
    )
    return service.run_detail(session, settings, store, run)


@router.post("/runs/{run_id}/heartbeat", status_code=204)
def heartbeat(run_id: RunId, session: WriteSession) -> Response:
    """A running run's process is alive (for scripts that log rarely)."""
    service.heartbeat(session, service.get_run(session, run_id))
    return Response(status_code=204)


@router.delete("/runs/{run_id}", status_code=204)
def delete_run(
    run_id: RunId, session: WriteSession, settings: SettingsDep, cache: CacheDep
) -> Response:
    """Delete the run with its metrics, findings, samples and checkpoints."""
    service.delete_run(session, settings, cache, service.get_run(session, run_id))
    return Response(status_code=204)


@router.get("/runs/{run_id}/samples", response_model=list[SampleOut])
def list_samples(
    run_id: RunId, session: ReadSession, limit: Annotated[int, Query(ge=1, le=1000)] = 20
) -> list[SampleOut]:
    """The latest text samples, newest first."""
    service.get_run(session, run_id)
    rows = session.scalars(
        select(Sample)
        .where(Sample.run_id == run_id)
        .order_by(Sample.step.desc(), Sample.id.desc())
        .limit(limit)
    ).all()
    return [SampleOut(step=row.step, text=row.text, created_at=row.created_at) for row in rows]


@router.post("/runs/{run_id}/samples", status_code=201, response_model=SampleOut)
def post_sample(run_id: RunId, body: SampleIn, session: WriteSession) -> SampleOut:
    service.get_run(session, run_id)
    sample = metric_store.add_sample(session, run_id, body.step, body.text)
    return SampleOut(step=sample.step, text=sample.text, created_at=sample.created_at)


@router.get("/config-schema")
def config_schema() -> dict[str, Any]:
    """The JSON schema of a launched run's config (TrainConfig), with defaults: the
    dashboard builds its launch form from it."""
    return TrainConfig.model_json_schema()


@router.get("/presets", response_model=list[Preset])
def presets() -> list[Preset]:
    """The trainer's scenario presets: a healthy run and one per failure mode."""
    return [
        Preset(
            name=preset.name,
            title=preset.title,
            description=preset.description,
            expected_findings=list(preset.expected_findings),
            overrides=preset.overrides,
            config=preset_config(preset.name).model_dump(mode="json"),
        )
        for preset in list_presets()
    ]

"""Run endpoints: create, list, read, stop, resume, finish, delete; samples; presets."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from sqlalchemy import select

from app.deps import CacheDep, ReadSession, SettingsDep, StoreDep, WriteSession
from app.errors import invalid
from app.metrics import store as metric_store
from app.models import RunSource, RunStatus, Sample
from app.runs import service
from app.runs.schemas import (
    Preset,
    RunCreate,
    RunDetail,
    RunFinish,
    RunList,
    SampleIn,
    SampleOut,
)
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
    return service.run_detail(session, store, run)


def _parse_statuses(status: str | None) -> list[RunStatus] | None:
    if not status:
        return None
    parsed = []
    for name in status.split(","):
        try:
            parsed.append(RunStatus(name.strip()))
        except ValueError:
            allowed = ", ".join(s.value for s in RunStatus)
            raise invalid("status", f"unknown status {name.strip()!r}; one of {allowed}") from None
    return parsed


@router.get("/runs", response_model=RunList)
def list_runs(
    session: ReadSession,
    status: Annotated[str | None, Query(description="comma-separated statuses")] = None,
    source: RunSource | None = None,
    q: Annotated[str | None, Query(max_length=200, description="name contains")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> RunList:
    """Runs, newest first."""
    runs, total = service.list_runs(session, _parse_statuses(status), source, q, limit, offset)
    return RunList(runs=runs, total=total, limit=limit, offset=offset)


@router.get("/runs/{run_id}", response_model=RunDetail)
def get_run(run_id: int, session: ReadSession, store: StoreDep) -> RunDetail:
    """Status, config, last step, the latest value of every key, finding counts."""
    return service.run_detail(session, store, service.get_run(session, run_id))


@router.post("/runs/{run_id}/stop", response_model=RunDetail)
def stop_run(run_id: int, session: WriteSession, store: StoreDep) -> RunDetail:
    """A queued run stops at once; a running one finishes its step, checkpoints and stops."""
    run = service.stop_run(session, service.get_run(session, run_id))
    return service.run_detail(session, store, run)


@router.post("/runs/{run_id}/resume", response_model=RunDetail)
def resume_run(
    run_id: int, session: WriteSession, store: StoreDep, settings: SettingsDep
) -> RunDetail:
    """Queue a stopped, interrupted or failed run to continue from its latest checkpoint."""
    run = service.resume_run(session, settings, service.get_run(session, run_id))
    return service.run_detail(session, store, run)


@router.post("/runs/{run_id}/finish", response_model=RunDetail)
def finish_run(
    run_id: int,
    session: WriteSession,
    store: StoreDep,
    body: Annotated[RunFinish | None, Body()] = None,
) -> RunDetail:
    """An external run's script reports that it ended (default: completed)."""
    body = body or RunFinish()
    run = service.finish_run(
        session, service.get_run(session, run_id), RunStatus(body.status), body.error
    )
    return service.run_detail(session, store, run)


@router.post("/runs/{run_id}/heartbeat", status_code=204)
def heartbeat(run_id: int, session: WriteSession) -> Response:
    """A running run's process is alive (for scripts that log rarely)."""
    service.heartbeat(session, service.get_run(session, run_id))
    return Response(status_code=204)


@router.delete("/runs/{run_id}", status_code=204)
def delete_run(
    run_id: int, session: WriteSession, settings: SettingsDep, cache: CacheDep
) -> Response:
    """Delete the run with its metrics, findings, samples and checkpoints."""
    service.delete_run(session, settings, cache, service.get_run(session, run_id))
    return Response(status_code=204)


@router.get("/runs/{run_id}/samples", response_model=list[SampleOut])
def list_samples(
    run_id: int, session: ReadSession, limit: Annotated[int, Query(ge=1, le=1000)] = 20
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
def post_sample(run_id: int, body: SampleIn, session: WriteSession) -> SampleOut:
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

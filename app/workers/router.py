"""Worker endpoints: the only way a worker reaches the database. Authenticated by the
main token or the worker token (TRAINLENS_WORKER_TOKEN), which reaches nothing else
but the metric and sample ingest."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import FileResponse
from sqlalchemy import select

from app.deps import DatabaseDep, ReadSession, SettingsDep, WriteSession
from app.errors import AppError, not_found
from app.models import Dataset, Run
from app.runs.files import exchanged_file, store_run_file
from app.runs.schemas import RunFile
from app.strict import RunId
from app.workers import service
from app.workers.schemas import (
    Beat,
    ClaimedRun,
    ClaimRequest,
    Directives,
    Lease,
    Outcome,
    RunState,
    WorkerHello,
    WorkerOut,
)

router = APIRouter(prefix="/workers", tags=["workers"])

Name = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:@\-]+$")]
SHA256_HEADER = "X-Trainlens-Sha256"


@router.get("", response_model=list[WorkerOut])
def list_workers(session: ReadSession, settings: SettingsDep) -> list[WorkerOut]:
    """Every worker that has registered, and whether its lease is fresh."""
    return service.list_workers(session, settings)


@router.post("/register", response_model=Lease)
def register(body: WorkerHello, session: WriteSession, settings: SettingsDep) -> Lease:
    """Take the lease on a worker name; 409 while another live process holds it."""
    return service.register(session, settings, body)


@router.post("/{name}/heartbeat", response_model=Directives)
def heartbeat(name: Name, body: Beat, session: WriteSession) -> Directives:
    """Renew the lease and the runs' heartbeats; the answer says which runs to stop
    (gracefully) and which to kill (deleted, or given to another worker)."""
    return service.heartbeat(session, name, body)


@router.post("/{name}/release", status_code=204)
def release(name: Name, body: Beat, session: WriteSession) -> None:
    """Give the name's lease back (a worker shutting down)."""
    service.release(session, name, body.instance)


@router.post("/{name}/claim", response_model=ClaimedRun, responses={204: {"description": "none"}})
def claim(
    name: Name, body: ClaimRequest, session: WriteSession, settings: SettingsDep
) -> ClaimedRun | Response:
    """Take the oldest queued launched run, atomically; 204 when there is none. The
    answer lists the run's files the API holds: a resume fetches its checkpoint."""
    claimed = service.claim(session, settings, name, body)
    return claimed if claimed is not None else Response(status_code=204)


@router.post("/{name}/runs/{run_id}/outcome", status_code=204)
def outcome(name: Name, run_id: RunId, body: Outcome, session: WriteSession) -> None:
    """How the run's training process ended; the API settles the run's status."""
    service.report_outcome(session, name, run_id, body)


@router.get("/runs/{run_id}", response_model=RunState)
def run_state(run_id: RunId, session: ReadSession) -> RunState:
    """A launched run's status, for its training process: one that is no longer
    `running` (stopped, deleted, given up on after its worker vanished) stops itself,
    even when its worker is not there to tell it."""
    run = session.get(Run, run_id)
    if run is None:
        raise not_found("run", run_id)
    return RunState(id=run.id, status=run.status, worker_id=run.worker_id)


RUN_FILE_PATH = r"/api/workers/[^/]+/runs/[0-9]+/files/[^/]+"


@router.put("/{name}/runs/{run_id}/files/{filename}", response_model=RunFile)
async def upload_run_file(
    name: Name,
    run_id: RunId,
    filename: str,
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    instance: Annotated[str, Query(min_length=8, max_length=64)],
) -> RunFile:
    """A checkpoint (or its info, or the output log) from the worker that ran the run,
    streamed as the raw body: the run can be resumed on any host, and the dashboard
    lists and serves it. Replaced whole or not at all."""
    path = exchanged_file(settings, run_id, filename)

    def check() -> None:
        with db.session() as session:
            service.check_uploader(session, name, instance, run_id)

    await anyio.to_thread.run_sync(check)
    return await store_run_file(path, request.stream())


@router.get("/runs/{run_id}/files/{filename}", response_class=FileResponse)
def download_run_file(run_id: RunId, filename: str, settings: SettingsDep) -> FileResponse:
    """A file of the run held at the API (to resume it on another host)."""
    path = exchanged_file(settings, run_id, filename)
    if not path.is_file():
        raise not_found("file", filename)
    return FileResponse(path, media_type="application/octet-stream")


@router.get("/datasets/{dataset_name}", response_class=FileResponse)
def dataset_text(dataset_name: str, session: ReadSession, settings: SettingsDep) -> FileResponse:
    """An uploaded corpus's text, with its sha256 in a header: a worker on another host
    keeps a cache of corpora by hash and checks what it downloaded."""
    dataset = session.scalar(select(Dataset).where(Dataset.name == dataset_name))
    if dataset is None:
        raise not_found("dataset", repr(dataset_name))
    path = settings.datasets_dir / dataset.filename
    if not path.is_file():
        raise AppError(410, f"dataset {dataset_name!r}: its text is missing on the server")
    return FileResponse(
        path,
        media_type="text/plain; charset=utf-8",
        headers={SHA256_HEADER: dataset.sha256},
    )

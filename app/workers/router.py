"""Worker endpoints: the only way a worker reaches the database. Authenticated by the
main token or the worker token (TRAINLENS_WORKER_TOKEN), which reaches nothing else
but the metric and sample ingest."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from fastapi.responses import FileResponse
from sqlalchemy import select

from app.deps import ReadSession, SettingsDep, WriteSession
from app.errors import AppError, not_found
from app.models import Dataset, Run
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
def heartbeat(name: Name, body: Beat, session: WriteSession, settings: SettingsDep) -> Directives:
    """Renew the lease and the runs' heartbeats; the answer says which runs to stop
    (gracefully) and which to kill (deleted, or given to another worker)."""
    return service.heartbeat(session, settings, name, body)


@router.post("/{name}/release", status_code=204)
def release(name: Name, body: Beat, session: WriteSession) -> None:
    """Give the name's lease back (a worker shutting down)."""
    service.release(session, name, body.instance)


@router.post("/{name}/claim", response_model=ClaimedRun, responses={204: {"description": "none"}})
def claim(name: Name, body: ClaimRequest, session: WriteSession) -> ClaimedRun | Response:
    """Take the oldest queued launched run, atomically; 204 when there is none."""
    claimed = service.claim(session, name, body)
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

"""Run status transitions, shared by the API and the worker (no FastAPI here).

Every change of status goes through `transition`, which keeps the timestamps right
and tells live viewers through the change feed."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.events import EventKind, publish
from app.models import FINISHED_STATUSES, Run, RunSource, RunStatus
from app.models.base import now


def transition(session: Session, run: Run, status: RunStatus, error: str | None = None) -> None:
    timestamp = now()
    run.status = status.value
    if status == RunStatus.running:
        run.started_at = run.started_at or timestamp
        run.heartbeat_at = timestamp
        run.finished_at = None
    if status == RunStatus.queued:
        run.finished_at = None
        run.worker_id = None
    if status in FINISHED_STATUSES:
        run.finished_at = timestamp
    if error is not None or status in (RunStatus.queued, RunStatus.running):
        run.error = error
    publish(
        session,
        run.id,
        EventKind.status,
        {
            "status": run.status,
            "error": run.error,
            "last_step": run.last_step,
            "attempt": run.attempt,
        },
    )


def claim_next_run(session: Session, worker_id: str, max_nproc: int | None = None) -> Run | None:
    """Atomically take the oldest queued run for this worker.

    One statement: UPDATE ... WHERE id = (oldest queued) RETURNING id. On PostgreSQL the
    subquery locks its row FOR UPDATE SKIP LOCKED, so concurrent workers each get a
    different run; on SQLite the write transaction (BEGIN IMMEDIATE) serialises them.
    """
    oldest = (
        select(Run.id)
        .where(Run.status == RunStatus.queued.value, Run.source == RunSource.launched.value)
        .order_by(Run.created_at, Run.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    claimed = session.execute(
        update(Run)
        .where(Run.id == oldest, Run.status == RunStatus.queued.value)
        .values(status=RunStatus.running.value, worker_id=worker_id)
        .returning(Run.id)
    ).scalar_one_or_none()
    if claimed is None:
        return None
    run = session.get(Run, claimed, populate_existing=True)
    assert run is not None
    transition(session, run, RunStatus.running)
    return run


def beat(session: Session, worker_id: str, run_ids: list[int]) -> None:
    """The worker's sign of life for the runs it holds."""
    if run_ids:
        session.execute(
            update(Run)
            .where(Run.id.in_(run_ids), Run.worker_id == worker_id)
            .values(heartbeat_at=now())
        )


def mark_stale_runs(session: Session, timeout_seconds: float) -> list[int]:
    """Launched runs whose worker stopped beating become `interrupted` (resumable).

    Called by every worker and by the API; whichever notices first does it."""
    cutoff = now() - timeout_seconds
    stale = session.scalars(
        select(Run)
        .where(
            Run.source == RunSource.launched.value,
            Run.status.in_([RunStatus.running.value, RunStatus.stopping.value]),
            Run.heartbeat_at < cutoff,
        )
        .with_for_update(skip_locked=True)
    ).all()
    for run in stale:
        silent = now() - (run.heartbeat_at or cutoff)
        transition(
            session,
            run,
            RunStatus.interrupted,
            f"no heartbeat from worker {run.worker_id} for {silent:.0f} s "
            f"(timeout {timeout_seconds:.0f} s); resume to continue from its latest checkpoint",
        )
    return [run.id for run in stale]

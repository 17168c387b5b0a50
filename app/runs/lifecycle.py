"""Run status transitions, shared by the API and the worker (no FastAPI here).

Every change of status goes through `transition`, which keeps the timestamps right
and tells live viewers through the change feed."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.events import EventKind, publish
from app.models import FINISHED_STATUSES, Run, RunStatus
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
    if status in FINISHED_STATUSES or status == RunStatus.completed:
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

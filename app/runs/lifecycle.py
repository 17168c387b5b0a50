"""Run status transitions, shared by the API and the worker (no FastAPI here).

Every change of status goes through `transition`, which keeps the timestamps right
and tells live viewers through the change feed."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import case, func, select, update
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


def claim_next_run(
    session: Session,
    worker_id: str,
    max_nproc: int | None = None,
    prefer: Sequence[int] = (),
) -> Run | None:
    """Atomically take the oldest queued run for this worker that asks for at most
    `max_nproc` ranks, or the oldest of `prefer` (runs whose checkpoints it holds) when
    one of those is queued.

    One statement: UPDATE ... WHERE id = (oldest queued) RETURNING id. On PostgreSQL the
    subquery locks its row FOR UPDATE SKIP LOCKED, so concurrent workers each get a
    different run; on SQLite the write transaction (BEGIN IMMEDIATE) serialises them.
    """
    held_here_first = [case((Run.id.in_(prefer), 0), else_=1)] if prefer else []
    wanted = [Run.status == RunStatus.queued.value, Run.source == RunSource.launched.value]
    if max_nproc is not None:  # a DDP run needs a GPU per rank: only what fits now
        wanted.append(func.coalesce(Run.config["nproc"].as_integer(), 1) <= max_nproc)
    oldest = (
        select(Run.id)
        .where(*wanted)
        .order_by(*held_here_first, Run.created_at, Run.id)
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


def _silent_runs(
    session: Session, source: RunSource, statuses: tuple[RunStatus, ...], timeout_seconds: float
) -> list[tuple[Run, float]]:
    """Runs of `source` in `statuses` with no heartbeat for `timeout_seconds`, locked,
    each with how long it has been silent."""
    cutoff = now() - timeout_seconds
    runs = session.scalars(
        select(Run)
        .where(
            Run.source == source.value,
            Run.status.in_([status.value for status in statuses]),
            Run.heartbeat_at < cutoff,
        )
        .with_for_update(skip_locked=True)
    ).all()
    return [(run, now() - (run.heartbeat_at or cutoff)) for run in runs]


def mark_stale_runs(session: Session, timeout_seconds: float) -> list[int]:
    """Launched runs whose worker stopped beating become `interrupted` (resumable).

    Called by every worker and by the API; whichever notices first does it."""
    stale = _silent_runs(
        session, RunSource.launched, (RunStatus.running, RunStatus.stopping), timeout_seconds
    )
    for run, silent in stale:
        transition(
            session,
            run,
            RunStatus.interrupted,
            f"no heartbeat from worker {run.worker_id} for {silent:.0f} s "
            f"(timeout {timeout_seconds:.0f} s); resume to continue from its latest checkpoint",
        )
    return [run.id for run, _ in stale]


def mark_crashed_scripts(session: Session, timeout_seconds: float) -> list[int]:
    """External runs whose script sent neither a heartbeat nor data for
    `timeout_seconds` become `crashed`: the process died without finishing the run. A
    script that is alive but stuck keeps beating and stays running (the `stalled` rule
    judges it by `last_step_at`). Only the API runs this: no worker holds such a run."""
    silent = _silent_runs(session, RunSource.external, (RunStatus.running,), timeout_seconds)
    for run, quiet in silent:
        transition(
            session,
            run,
            RunStatus.crashed,
            f"no heartbeat from the script for {quiet:.0f} s (timeout {timeout_seconds:.0f} s): "
            "it was killed or lost its host. If it comes back, the run continues; a journal "
            "it left can be uploaded with `trainlens sync`.",
        )
    return [run.id for run, _ in silent]

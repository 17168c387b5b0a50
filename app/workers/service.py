"""Workers through the API: leases, claims, heartbeats with directives, and outcomes.

A worker process holds a lease on its name and renews it with each heartbeat; the
heartbeat answers which of its runs to stop or kill. When a run's child exits, the
worker reports what it saw and the API decides the run's status here: the rules for
"completed", "stopped", "interrupted" and "failed" live in one place."""

from __future__ import annotations

import signal

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.datasets.service import BUILTIN_DATASET
from app.errors import AppError, conflict, not_found
from app.models import Dataset, Run, RunStatus, WorkerLease
from app.models.base import now
from app.runs.files import run_files
from app.runs.lifecycle import beat, claim_next_run, transition
from app.workers.schemas import (
    Beat,
    ClaimedRun,
    ClaimRequest,
    DatasetRef,
    Directives,
    Lease,
    Outcome,
    WorkerHello,
    WorkerOut,
)


def _lease_lost(name: str) -> AppError:
    return conflict(
        f"worker {name!r} no longer holds its lease (it expired, or another process took "
        "the name): register again"
    )


def register(session: Session, settings: Settings, hello: WorkerHello) -> Lease:
    """Take the name's lease, unless another live process holds it."""
    lease = session.get(WorkerLease, hello.name, with_for_update=True)
    timeout = settings.heartbeat_timeout_seconds
    if lease is not None and lease.instance != hello.instance:
        silent = now() - lease.seen_at
        if silent < timeout:
            raise conflict(
                f"worker name {hello.name!r} is held by a live process (pid {lease.pid} on "
                f"{lease.host}, seen {silent:.0f} s ago); its lease expires after "
                f"{timeout:.0f} s of silence"
            )
    if lease is None:
        lease = WorkerLease(name=hello.name)
        session.add(lease)
    lease.instance, lease.host, lease.pid, lease.slots = (
        hello.instance,
        hello.host,
        hello.pid,
        hello.slots,
    )
    lease.started_at = lease.seen_at = now()
    return Lease(name=hello.name, instance=hello.instance, lease_seconds=timeout)


def _held(session: Session, name: str, instance: str) -> WorkerLease:
    lease = session.get(WorkerLease, name)
    if lease is None or lease.instance != instance:
        raise _lease_lost(name)
    return lease


def heartbeat(session: Session, name: str, body: Beat) -> Directives:
    """Renew the lease and the runs' heartbeats; say which runs to stop or kill. (Runs
    whose worker went silent are marked by the API's watchdog, not here.)"""
    lease = _held(session, name, body.instance)
    lease.seen_at = now()
    beat(session, name, body.runs)
    if not body.runs:
        return Directives(stop=[], kill=[])
    held = dict(
        session.execute(
            select(Run.id, Run.status).where(Run.id.in_(body.runs), Run.worker_id == name)
        ).all()
    )
    stop = [run_id for run_id, status in held.items() if status != RunStatus.running]
    kill = [run_id for run_id in body.runs if run_id not in held]
    return Directives(stop=sorted(stop), kill=sorted(kill))


def release(session: Session, name: str, instance: str) -> None:
    """A worker shutting down gives its name back at once."""
    session.execute(
        delete(WorkerLease).where(WorkerLease.name == name, WorkerLease.instance == instance)
    )


def claim(session: Session, settings: Settings, name: str, body: ClaimRequest) -> ClaimedRun | None:
    _held(session, name, body.instance).seen_at = now()
    run = claim_next_run(session, name, body.max_nproc, prefer=body.prefer)
    if run is None:
        return None
    dataset_name = str(run.config.get("dataset", BUILTIN_DATASET))
    sha256 = None
    if dataset_name != BUILTIN_DATASET:
        sha256 = session.scalar(select(Dataset.sha256).where(Dataset.name == dataset_name))
    return ClaimedRun(
        id=run.id,
        attempt=run.attempt,
        config=dict(run.config),
        dataset=DatasetRef(name=dataset_name, sha256=sha256),
        files=run_files(settings, run.id),
    )


def check_uploader(session: Session, name: str, instance: str, run_id: int) -> None:
    """Only the worker that holds the run (and its lease) may replace the run's files."""
    _held(session, name, instance)
    run = session.get(Run, run_id)
    if run is None:
        raise not_found("run", run_id)
    if run.worker_id != name:
        raise conflict(f"run {run_id} is held by worker {run.worker_id!r}, not {name!r}")


def report_outcome(session: Session, name: str, run_id: int, outcome: Outcome) -> None:
    """Settle a run whose child exited, from what its worker saw."""
    _held(session, name, outcome.instance)
    run = session.get(Run, run_id, with_for_update=True)
    if run is None:
        raise not_found("run", run_id)
    if run.worker_id != name:
        return  # given up on (stale) and claimed elsewhere: not this worker's to settle
    status = RunStatus(run.status)
    if status not in (RunStatus.running, RunStatus.stopping):
        return  # already settled (e.g. marked interrupted by the watchdog)
    code = outcome.exit_code
    if outcome.worker_shutdown:
        transition(session, run, RunStatus.interrupted, outcome.reason)
    elif code == 0 and outcome.result == "completed":
        transition(session, run, RunStatus.completed)
    elif code == 0 and outcome.result == "stopped":
        # Asked to stop: a plain stop. Otherwise the trainer stopped on its own (a
        # non-finite loss) and its reason is the run's error text.
        transition(
            session,
            run,
            RunStatus.stopped,
            None if status == RunStatus.stopping else outcome.reason,
        )
    elif status == RunStatus.stopping and (outcome.killed or code == -signal.SIGTERM):
        # Asked to stop and ended by the signal: before training began (nothing to
        # checkpoint yet), or killed after the grace period.
        transition(session, run, RunStatus.stopped, outcome.reason)
    else:
        detail = f"exit code {code}\n{outcome.output_tail}".strip()
        transition(session, run, RunStatus.failed, detail)


def list_workers(session: Session, settings: Settings) -> list[WorkerOut]:
    cutoff = now() - settings.heartbeat_timeout_seconds
    return [
        WorkerOut.model_validate(lease, from_attributes=True).model_copy(
            update={"alive": lease.seen_at >= cutoff}
        )
        for lease in session.scalars(select(WorkerLease).order_by(WorkerLease.name))
    ]

"""Runs: one training run, launched by a worker or fed by an external script."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, JSONDoc, now


class RunSource(StrEnum):
    launched = "launched"
    external = "external"


class RunStatus(StrEnum):
    queued = "queued"
    running = "running"
    stopping = "stopping"
    stopped = "stopped"
    completed = "completed"
    failed = "failed"
    interrupted = "interrupted"


ACTIVE_STATUSES = (RunStatus.queued, RunStatus.running, RunStatus.stopping)
RESUMABLE_STATUSES = (RunStatus.stopped, RunStatus.interrupted, RunStatus.failed)
FINISHED_STATUSES = (
    RunStatus.stopped,
    RunStatus.completed,
    RunStatus.failed,
    RunStatus.interrupted,
)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_status_created", "status", "created_at"),
        # Ids are never reused, so a deleted run's events and URLs never alias a new run.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    preset: Mapped[str | None] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[float] = mapped_column(default=now)
    started_at: Mapped[float | None]
    finished_at: Mapped[float | None]
    heartbeat_at: Mapped[float | None]
    error: Mapped[str | None] = mapped_column(Text)
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    # Which worker holds the run, and how many times it has been (re)started.
    worker_id: Mapped[str | None] = mapped_column(String(200))
    attempt: Mapped[int] = mapped_column(default=0)
    # The user's own labels and words about the run (the runs table groups by tag).
    tags: Mapped[list[str]] = mapped_column(JSONDoc, default=list, server_default=text("'[]'"))
    notes: Mapped[str] = mapped_column(Text, default="", server_default=text("''"))

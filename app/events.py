"""The change feed. Every write that a viewer or the rule engine cares about appends an
event in the same transaction; live streams and the engine follow the feed by id.

This works across processes (a worker writing, the API streaming) because the feed is a
table: no in-process signal can be missed.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.jsonutil import dumps
from app.models import Event
from app.models.base import now


class EventKind(StrEnum):
    points = "points"
    status = "status"
    finding = "finding"
    diagnosis = "diagnosis"
    sample = "sample"
    created = "created"
    deleted = "deleted"
    updated = "updated"  # renamed, tagged or annotated


def publish(session: Session, run_id: int, kind: EventKind, payload: dict[str, Any]) -> None:
    # The run id travels inside the payload too, so a stream across runs can pass the
    # stored JSON through untouched.
    document = dumps({"run_id": run_id, **payload})
    session.add(Event(run_id=run_id, kind=kind.value, payload=document, created_at=now()))


def prune(session: Session, older_than_seconds: float) -> int:
    """Drop events past retention; a client resuming from before them is told to reload."""
    result = session.execute(delete(Event).where(Event.created_at < now() - older_than_seconds))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def latest_event_id(session: Session) -> int:
    return int(session.scalar(select(func.max(Event.id))) or 0)


def oldest_event_id(session: Session) -> int | None:
    return session.scalar(select(func.min(Event.id)))

"""Server-Sent Events: one stream per page, resumable with Last-Event-ID."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy import select

from app.db import Database
from app.deps import DatabaseDep, HubDep, ReadSession
from app.errors import invalid, not_found
from app.events import latest_event_id, oldest_event_id
from app.models import Event, Run
from app.stream.hub import EventHub, StreamEvent, Subscription, condense
from app.strict import EVENT_ID_MAX, RunId

router = APIRouter(tags=["stream"])

REPLAY_LIMIT = 20_000
# Browsers reconnect after this many milliseconds when the connection drops.
RETRY_MS = 1000


def _resume_from(last_event_id: Annotated[str | None, Header()] = None) -> int | None:
    if last_event_id is None or last_event_id == "":
        return None
    try:
        parsed = int(last_event_id)
    except ValueError:
        raise invalid("Last-Event-ID", "must be an event id (an integer)") from None
    if not 0 <= parsed <= EVENT_ID_MAX:
        raise invalid("Last-Event-ID", f"must be an event id between 0 and {EVENT_ID_MAX}")
    return parsed


def _existing_run(run_id: RunId, session: ReadSession) -> int:
    # Checked in a dependency: once the stream has started, a 404 can no longer be sent.
    if session.get(Run, run_id) is None:
        raise not_found("run", run_id)
    return run_id


ResumeFrom = Annotated[int | None, Depends(_resume_from)]


@router.get("/runs/{run_id}/stream", response_class=EventSourceResponse)
async def run_stream(
    run_id: Annotated[int, Depends(_existing_run)],
    db: DatabaseDep,
    hub: HubDep,
    resume_from: ResumeFrom,
) -> AsyncIterator[ServerSentEvent]:
    """New points, status changes, findings and samples of one run, as they are written.

    The first event, `hello`, carries the feed position; a client that reconnects with
    `Last-Event-ID` receives what it missed, or a `reset` event when that has been
    pruned (reload everything then)."""
    async for event in _stream(db, hub, run_id, resume_from):
        yield event


@router.get("/stream", response_class=EventSourceResponse)
async def all_runs_stream(
    db: DatabaseDep, hub: HubDep, resume_from: ResumeFrom
) -> AsyncIterator[ServerSentEvent]:
    """Every run's status changes, findings and progress (step and latest loss), for the
    runs table."""
    async for event in _stream(db, hub, None, resume_from):
        yield event


def _replay(db: Database, run_id: int | None, after: int) -> tuple[bool, list[StreamEvent], int]:
    """(events were pruned since `after`, the events after it, the feed head)."""
    with db.session() as session:
        oldest = oldest_event_id(session)
        head = latest_event_id(session)
        query = select(Event.id, Event.run_id, Event.kind, Event.payload).where(Event.id > after)
        if run_id is not None:
            query = query.where(Event.run_id == run_id)
        rows = session.execute(query.order_by(Event.id).limit(REPLAY_LIMIT)).all()
    pruned = (oldest is not None and oldest > after + 1) or len(rows) == REPLAY_LIMIT
    return pruned, [StreamEvent(*row) for row in rows], head


def _to_sse(event: StreamEvent) -> ServerSentEvent:
    return ServerSentEvent(raw_data=event.payload, event=event.kind, id=str(event.id))


async def _stream(
    db: Database, hub: EventHub, run_id: int | None, resume_from: int | None
) -> AsyncIterator[ServerSentEvent]:
    # Subscribe before reading the backlog, so nothing written in between is lost;
    # events that arrive both ways are sent once.
    subscription = hub.subscribe(run_id)
    try:
        sent: set[int] = set()
        if resume_from is None:
            head = await anyio.to_thread.run_sync(_head, db)
            yield ServerSentEvent(
                data={"cursor": head, "run_id": run_id}, event="hello", id=str(head), retry=RETRY_MS
            )
        else:
            pruned, backlog, head = await anyio.to_thread.run_sync(_replay, db, run_id, resume_from)
            if pruned:
                yield ServerSentEvent(data={"cursor": head}, event="reset", id=str(head))
                backlog = []
            for missed in backlog:
                sent.add(missed.id)
                yield _to_sse(missed if run_id is not None else condense(missed))
        async for live in _live(subscription):
            if live is None:
                yield ServerSentEvent(data={"reason": "client fell behind"}, event="reset")
            elif live.id not in sent:
                yield _to_sse(live)
    finally:
        hub.unsubscribe(subscription)


async def _live(subscription: Subscription) -> AsyncIterator[StreamEvent | None]:
    while True:
        if subscription.overflowed:
            subscription.overflowed = False
            while not subscription.queue.empty():
                subscription.queue.get_nowait()
            yield None
        try:
            yield await asyncio.wait_for(subscription.queue.get(), timeout=1.0)
        except TimeoutError:
            continue


def _head(db: Database) -> int:
    with db.session() as session:
        return latest_event_id(session)

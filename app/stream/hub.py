"""One poller per API process follows the change feed and fans events out to the
live streams (and to in-process listeners such as the rule engine).

Every stream shares this poller, so a hundred open pages cost one indexed query per
poll interval, not a hundred.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from sqlalchemy import select

from app.db import Database
from app.events import latest_event_id, prune
from app.models import Event
from app.periodic import cancel

log = logging.getLogger(__name__)

# Keys whose latest value the runs table shows; the cross-run stream carries only these.
SUMMARY_KEYS = ("train/loss", "val/loss", "perf/tokens_per_sec", "perf/mfu")
# On PostgreSQL, ids come from a sequence and transactions commit out of order: an id
# below the newest one seen may still appear. Wait this long for such a gap to fill.
GAP_WAIT_SECONDS = 5.0
POLL_BATCH = 1000


@dataclass(frozen=True, slots=True)
class StreamEvent:
    id: int
    run_id: int
    kind: str
    payload: str  # JSON object, as stored

    def data(self) -> dict[str, Any]:
        return json.loads(self.payload)  # type: ignore[no-any-return]


@dataclass(eq=False)
class Subscription:
    """A live stream's queue. run_id None: every run's events, condensed."""

    run_id: int | None
    queue: asyncio.Queue[StreamEvent] = field(default_factory=lambda: asyncio.Queue(10_000))
    overflowed: bool = False


def condense(event: StreamEvent) -> StreamEvent:
    """For the cross-run stream: a points event becomes a small progress event."""
    if event.kind != "points":
        return event
    data = event.data()
    latest = {}
    for key in SUMMARY_KEYS:
        info = data["keys"].get(key)
        if info and "values" in info:
            latest[key] = info["values"][-1]
    payload = {"run_id": event.run_id, "last_step": data["last_step"], "latest": latest}
    return StreamEvent(event.id, event.run_id, "progress", json.dumps(payload))


class EventHub:
    def __init__(self, db: Database, poll_seconds: float, retention_seconds: float) -> None:
        self.db = db
        self.poll_seconds = poll_seconds
        self.retention_seconds = retention_seconds
        self.cursor = 0
        # For listeners that keep their own view of the feed: they hear every event after
        # `listening_from` (the feed's head when the hub started; None before), and every
        # event up to `delivered_through` has reached them (PostgreSQL: below any gap the
        # hub still waits on). Each is one int, replaced whole, so any thread may read it.
        self.listening_from: int | None = None
        self.delivered_through = 0
        self._gaps: dict[int, float] = {}  # missing id -> when first noticed
        self._subscriptions: set[Subscription] = set()
        self._listeners: list[Callable[[list[StreamEvent]], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._last_prune = 0.0
        self.wakeup = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await anyio.to_thread.run_sync(self.seek_head)
        self._task = asyncio.create_task(self._run(), name="event-hub")

    async def stop(self) -> None:
        await cancel(self._task)

    def seek_head(self) -> None:
        """Follow the feed from its head: listeners hear every event after it."""
        with self.db.session() as session:
            head = latest_event_id(session)
        self.cursor = self.delivered_through = head
        self.listening_from = head

    # -- subscribers -------------------------------------------------------------------

    def subscribe(self, run_id: int | None) -> Subscription:
        subscription = Subscription(run_id)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def add_listener(self, listener: Callable[[list[StreamEvent]], None]) -> None:
        """Called on the hub's worker thread with each batch of new events."""
        self._listeners.append(listener)

    # -- polling -----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                events = await anyio.to_thread.run_sync(self.poll)
                if events:
                    self._dispatch(events)
            except Exception:  # a database hiccup must not end live updates for good
                log.exception("event poll failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), self.poll_seconds)
            self.wakeup.clear()

    def poll(self) -> list[StreamEvent]:
        """Read the events after the cursor (and any gap that filled) and hand them to
        the listeners; the loop then fans them out to the streams."""
        floor = self._floor()
        with self.db.session() as session:
            rows = session.execute(
                select(Event.id, Event.run_id, Event.kind, Event.payload)
                .where(Event.id > floor)
                .order_by(Event.id)
                .limit(POLL_BATCH)
            ).all()
        now = time.monotonic()
        fresh = [StreamEvent(*row) for row in rows if row[0] > self.cursor or row[0] in self._gaps]
        for event in fresh:
            self._gaps.pop(event.id, None)
        seen = {event.id for event in fresh}
        newest = max([self.cursor, *seen])
        for missing in range(self.cursor + 1, newest):
            if missing not in seen:
                self._gaps.setdefault(missing, now)
        self._gaps = {i: t for i, t in self._gaps.items() if now - t < GAP_WAIT_SECONDS}
        self.cursor = newest
        if fresh and self._listeners:
            for listener in self._listeners:
                try:
                    listener(fresh)
                except Exception:
                    log.exception("event listener failed")
        self.delivered_through = self._floor()
        self._maybe_prune(now)
        return fresh

    def _floor(self) -> int:
        """Every event up to here has been seen; the next poll reads from here on."""
        return min([self.cursor, *(gap - 1 for gap in self._gaps)])

    def _maybe_prune(self, now: float) -> None:
        if now - self._last_prune < 60:
            return
        self._last_prune = now
        with self.db.session(write=True) as session:
            prune(session, self.retention_seconds)

    def _dispatch(self, events: list[StreamEvent]) -> None:
        condensed: list[StreamEvent] | None = None
        for subscription in list(self._subscriptions):
            if subscription.run_id is None:
                if condensed is None:
                    condensed = [condense(event) for event in events]
                batch = condensed
            else:
                batch = [event for event in events if event.run_id == subscription.run_id]
            for event in batch:
                try:
                    subscription.queue.put_nowait(event)
                except asyncio.QueueFull:
                    subscription.overflowed = True
                    break

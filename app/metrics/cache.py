"""Series held in memory as numpy arrays, kept in step with the database through the
change feed.

Reading a million rows out of SQLite costs about a second; slicing arrays costs
microseconds. The rule engine asks for the same series again and again, so the API
keeps them here (charts read through the level-of-detail summary instead, see lod.py).
Each entry remembers the last event it has seen for its run; on every read it checks
the feed's head for the run (one indexed lookup) and either appends the new tail or,
when a write rewrote older steps (a resumed run), reloads the series.

Which keys the events since an entry's sync touched comes from a small index the event
hub feeds (`follow`): the hub already reads every event, so the cache neither reads nor
parses them again. Where the index cannot answer (no hub, an entry older than the
index's window, events the hub has not delivered yet) the cache reads those events
from the table.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.metrics.store import MetricStore, Series
from app.models import Event
from app.stream.hub import EventHub, StreamEvent

# (event id, {key name: first step written}) for one points event.
Touch = tuple[int, dict[str, int]]

# The index keeps this many latest points events per run (a rule-engine pass needs the
# few since its last pass) for this many runs, the ones written to most recently.
TOUCHES_PER_RUN = 256
INDEXED_RUNS = 1024


@dataclass(slots=True)
class _RunTouches:
    floor: int  # events of the run at or below this id may be missing from `touches`
    touches: deque[Touch] = field(default_factory=lambda: deque(maxlen=TOUCHES_PER_RUN))


class TouchIndex:
    """Per run, the keys each recent points event touched, fed by the hub's listener."""

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub
        self._runs: OrderedDict[int, _RunTouches] = OrderedDict()
        # Events at or below this id may be missing for a run not indexed now: an evicted
        # run's touches are forgotten with it.
        self._forgotten_through = 0
        self._lock = threading.Lock()
        hub.add_listener(self.hear)

    def hear(self, events: list[StreamEvent]) -> None:
        """On the hub's thread: note the keys each points event touched."""
        points = [event for event in events if event.kind == "points"]
        touches = [(event.run_id, _touch(event.id, event.payload)) for event in points]
        with self._lock:
            for run_id, touch in touches:
                record = self._runs.get(run_id)
                if record is None:
                    record = self._runs[run_id] = _RunTouches(self._forgotten_through)
                self._runs.move_to_end(run_id)
                if len(record.touches) == TOUCHES_PER_RUN:
                    record.floor = max(record.floor, record.touches[0][0])
                record.touches.append(touch)
            while len(self._runs) > INDEXED_RUNS:
                _, evicted = self._runs.popitem(last=False)
                self._forget(evicted)

    def touched(self, run_id: int, since: int, head: int) -> tuple[list[Touch], int] | None:
        """The run's touches in (since, through] and `through`, the last event id the
        index answers for (head, or less where the hub has not delivered up to head);
        None when the index does not reach back to `since`."""
        listening_from = self.hub.listening_from
        through = min(head, self.hub.delivered_through)  # read before the touches
        if listening_from is None:
            return None
        with self._lock:
            record = self._runs.get(run_id)
            floor = record.floor if record is not None else self._forgotten_through
            if since < max(floor, listening_from):
                return None
            touches = [t for t in record.touches if since < t[0] <= through] if record else []
        return sorted(touches), max(through, since)

    def drop_run(self, run_id: int) -> None:
        with self._lock:
            record = self._runs.pop(run_id, None)
            if record is not None:
                self._forget(record)

    def _forget(self, record: _RunTouches) -> None:
        newest = max((event_id for event_id, _ in record.touches), default=record.floor)
        self._forgotten_through = max(self._forgotten_through, newest)


def _touch(event_id: int, payload: str) -> Touch:
    keys = json.loads(payload)["keys"]
    return event_id, {name: info["first"] for name, info in keys.items()}


@dataclass(slots=True)
class _Entry:
    series: Series
    synced_event_id: int
    synced_at: float


class SeriesCache:
    def __init__(self, store: MetricStore, max_bytes: int, event_retention_seconds: float) -> None:
        self.store = store
        self.max_bytes = max_bytes
        # Past this age an entry may have missed pruned events, so it is reloaded.
        self.max_age = event_retention_seconds / 2
        self._entries: OrderedDict[tuple[int, int], _Entry] = OrderedDict()
        self._bytes = 0
        # Per run, the last change-feed window read, as (since, head, touched): a reader
        # asking for one key at a time (the rule engine) reads the window once, not per key.
        self._windows: dict[int, tuple[int, int, list[Touch]]] = {}
        self._index: TouchIndex | None = None
        self._lock = threading.Lock()
        self.loads = 0  # full reads from the database, for tests and benchmarks
        self.feed_reads = 0  # reads of the events table, for tests and benchmarks

    def follow(self, hub: EventHub) -> None:
        """Learn which keys each write touched from the hub instead of the table."""
        self._index = TouchIndex(hub)

    def get_many(self, session: Session, run_id: int, key_ids: Iterable[int]) -> dict[int, Series]:
        key_ids = list(key_ids)
        head = session.scalar(select(func.max(Event.id)).where(Event.run_id == run_id)) or 0
        now = time.monotonic()
        stale: list[tuple[int, _Entry]] = []
        result: dict[int, Series] = {}
        for key_id in key_ids:
            entry = self._lookup(run_id, key_id)
            if entry is None or now - entry.synced_at > self.max_age:
                result[key_id] = self._load(session, run_id, key_id, head)
            elif entry.synced_event_id == head:
                result[key_id] = entry.series
            else:
                stale.append((key_id, entry))
        if stale:
            since = min(entry.synced_event_id for _, entry in stale)
            touched = self._touched_since(session, run_id, since, head)
            for key_id, entry in stale:
                result[key_id] = self._catch_up(session, run_id, key_id, entry, touched, head)
        return result

    def drop_run(self, run_id: int) -> None:
        with self._lock:
            for cache_key in [k for k in self._entries if k[0] == run_id]:
                self._bytes -= self._entries.pop(cache_key).series.nbytes
            self._windows.pop(run_id, None)
        if self._index is not None:
            self._index.drop_run(run_id)

    def _lookup(self, run_id: int, key_id: int) -> _Entry | None:
        with self._lock:
            entry = self._entries.get((run_id, key_id))
            if entry is not None:
                self._entries.move_to_end((run_id, key_id))
            return entry

    def _touched_since(self, session: Session, run_id: int, since: int, head: int) -> list[Touch]:
        """(event id, {key name: first step written}) for points events in (since, head]:
        from the index as far as it answers, the rest from the table."""
        indexed = self._index.touched(run_id, since, head) if self._index is not None else None
        if indexed is None:
            return self._read_touched(session, run_id, since, head)
        touched, through = indexed
        if through < head:
            touched += self._read_touched(session, run_id, through, head)
        return touched

    def _read_touched(self, session: Session, run_id: int, since: int, head: int) -> list[Touch]:
        with self._lock:
            window = self._windows.get(run_id)
        if window is not None and window[1] == head and window[0] <= since:
            return [item for item in window[2] if item[0] > since]
        rows = session.execute(
            select(Event.id, Event.payload)
            .where(Event.run_id == run_id, Event.kind == "points")
            .where(Event.id > since, Event.id <= head)
            .order_by(Event.id)
        ).all()
        self.feed_reads += 1
        touched = [_touch(event_id, payload) for event_id, payload in rows]
        with self._lock:
            self._windows[run_id] = (since, head, touched)
        return touched

    def _catch_up(
        self,
        session: Session,
        run_id: int,
        key_id: int,
        entry: _Entry,
        touched: list[Touch],
        head: int,
    ) -> Series:
        name = self.store.key_name(session, key_id)
        firsts = [
            keys[name]
            for event_id, keys in touched
            if event_id > entry.synced_event_id and name in keys
        ]
        if not firsts:
            self._store(run_id, key_id, _Entry(entry.series, head, entry.synced_at))
            return entry.series
        known_last = int(entry.series.steps[-1]) if len(entry.series.steps) else -1
        if min(firsts) <= known_last:
            return self._load(session, run_id, key_id, head)
        tail = self.store.read_series(session, run_id, key_id, after_step=known_last)
        series = entry.series.concat(tail)
        self._store(run_id, key_id, _Entry(series, head, entry.synced_at))
        return series

    def _load(self, session: Session, run_id: int, key_id: int, head: int) -> Series:
        series = self.store.read_series(session, run_id, key_id)
        self.loads += 1
        self._store(run_id, key_id, _Entry(series, head, time.monotonic()))
        return series

    def _store(self, run_id: int, key_id: int, entry: _Entry) -> None:
        if entry.series.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop((run_id, key_id), None)
            if old is not None:
                self._bytes -= old.series.nbytes
            self._entries[(run_id, key_id)] = entry
            self._bytes += entry.series.nbytes
            while self._bytes > self.max_bytes and self._entries:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.series.nbytes

"""Writing and reading metric points. No FastAPI here: the API's ingest endpoint and the
worker's database sink call the same `MetricStore.write`.

Points are narrow rows keyed (run_id, key_id, step); writes are idempotent upserts, so a
retried batch or a resumed run that repeats steps never duplicates a point.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.db import Database
from app.events import EventKind, publish
from app.jsonutil import encode_float
from app.models import MetricKey, NonFinite, Run, RunSeries, Sample
from app.models.base import now

# Above this many points a batch's event carries only per-key step ranges; viewers then
# fetch the range over REST instead of receiving megabytes through the live stream.
EVENT_INLINE_POINTS = 5_000

NONFINITE_VALUES = {
    NonFinite.nan: math.nan,
    NonFinite.pos_inf: math.inf,
    NonFinite.neg_inf: -math.inf,
}


@dataclass(frozen=True, slots=True)
class MetricRow:
    """One step of one run: several metric values logged together."""

    step: int
    metrics: Mapping[str, float]
    time: float | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    points: int
    first_step: int | None
    last_step: int | None


@dataclass(slots=True)
class Series:
    """A series in step order; non-finite values are real float nan/inf here."""

    steps: np.ndarray  # int64
    values: np.ndarray  # float64
    times: np.ndarray  # float64

    @property
    def nbytes(self) -> int:
        return int(self.steps.nbytes + self.values.nbytes + self.times.nbytes)

    @classmethod
    def empty(cls) -> Series:
        return cls(np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.float64))

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[int, float | None, int, float]]) -> Series:
        """Rows of (step, value, nonfinite, wall_time) as stored."""
        if not rows:
            return cls.empty()
        # One C-level conversion of the whole table; a NULL value (non-finite) becomes NaN.
        table = np.array(rows, dtype=np.float64)
        values = table[:, 1]
        flags = table[:, 2]
        for flag, special in NONFINITE_VALUES.items():
            values[flags == flag] = special
        return cls(table[:, 0].astype(np.int64), values.copy(), table[:, 3].copy())

    def concat(self, other: Series) -> Series:
        return Series(
            np.concatenate([self.steps, other.steps]),
            np.concatenate([self.values, other.values]),
            np.concatenate([self.times, other.times]),
        )


def metric_names(rows: Sequence[MetricRow]) -> set[str]:
    # set.union walks each dict's keys in C: this runs over every point of a batch.
    return set().union(*[row.metrics.keys() for row in rows])


def nonfinite_flag(value: float) -> int:
    if math.isfinite(value):
        return NonFinite.finite
    if math.isnan(value):
        return NonFinite.nan
    return NonFinite.pos_inf if value > 0 else NonFinite.neg_inf


class MetricStore:
    """The metric tables of one database, with a process-wide cache of key ids."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._key_ids: dict[str, int] = {}
        self._key_names: dict[int, str] = {}
        self._lock = threading.Lock()

    # -- metric-name dictionary -------------------------------------------------------

    def key_ids(self, names: Iterable[str]) -> dict[str, int]:
        """Ids for metric names, creating missing ones in their own committed transaction.

        Call this before opening the write transaction: on SQLite a second writer
        inside it would wait on the lock that transaction holds.
        """
        wanted = set(names)
        missing = wanted - self._key_ids.keys()
        if missing:
            with self.db.session(write=True) as session:
                insert = _dialect_insert(session)
                session.execute(
                    insert(MetricKey).on_conflict_do_nothing(index_elements=["name"]),
                    [{"name": name} for name in sorted(missing)],
                )
                self._remember(session, missing)
        return {name: self._key_ids[name] for name in wanted}

    def known_key_ids(self, session: Session, names: Iterable[str]) -> dict[str, int]:
        """Ids of names that exist already; never writes."""
        wanted = set(names)
        missing = wanted - self._key_ids.keys()
        if missing:
            self._remember(session, missing)
        return {name: self._key_ids[name] for name in wanted if name in self._key_ids}

    def _remember(self, session: Session, names: set[str]) -> None:
        rows = session.execute(
            select(MetricKey.name, MetricKey.id).where(MetricKey.name.in_(names))
        ).all()
        with self._lock:
            for name, key_id in rows:
                self._key_ids[name] = key_id
                self._key_names[key_id] = name

    def key_name(self, session: Session, key_id: int) -> str:
        if key_id not in self._key_names:
            name = session.scalar(select(MetricKey.name).where(MetricKey.id == key_id))
            if name is None:
                raise KeyError(key_id)
            with self._lock:
                self._key_names[key_id] = name
                self._key_ids[name] = key_id
        return self._key_names[key_id]

    # -- writing -------------------------------------------------------------------

    def write(self, run_id: int, rows: Sequence[MetricRow]) -> WriteResult:
        """Resolve keys, then write the batch in one transaction."""
        key_ids = self.key_ids(metric_names(rows))
        with self.db.session(write=True) as session:
            return self.write_rows(session, run_id, rows, key_ids)

    def write_rows(
        self,
        session: Session,
        run_id: int,
        rows: Sequence[MetricRow],
        key_ids: Mapping[str, int],
    ) -> WriteResult:
        """Upsert a batch inside the caller's transaction, update each key's latest
        point, advance the run's last step, and append one points event."""
        if not rows:
            return WriteResult(0, None, None)
        points, summaries = _collect(run_id, rows, key_ids, now())
        self._upsert_points(session, points)
        self._update_series(session, run_id, summaries)
        first_step = min(summary.first for summary in summaries.values())
        last_step = max(summary.last for summary in summaries.values())
        session.execute(
            update(Run)
            .where(Run.id == run_id)
            .where((Run.last_step.is_(None)) | (Run.last_step < last_step))
            # When the step last advanced, by the server's clock: heartbeats and rows
            # re-sent for old steps leave it alone, so a hung script shows.
            .values(last_step=last_step, last_step_at=now())
        )
        names = {key_id: name for name, key_id in key_ids.items()}
        payload = _event_payload(names, points, summaries, last_step)
        publish(session, run_id, EventKind.points, payload)
        return WriteResult(len(points), first_step, last_step)

    def _upsert_points(self, session: Session, values: list[tuple[Any, ...]]) -> None:
        connection = session.connection()
        if connection.dialect.name == "sqlite":
            # Straight to the driver: building SQLAlchemy parameter dicts for hundreds of
            # thousands of rows costs more than SQLite's insert itself.
            connection.exec_driver_sql(
                "INSERT INTO metrics (run_id, key_id, step, value, nonfinite, wall_time) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, key_id, step) DO UPDATE SET "
                "value = excluded.value, nonfinite = excluded.nonfinite, "
                "wall_time = excluded.wall_time",
                values,
            )
            return
        # PostgreSQL: one statement over arrays, instead of a round trip per row. One
        # statement may not update a row twice, so the batch's last write of a
        # (key, step) is kept, as SQLite's row-by-row upsert would.
        unique = {(point[1], point[2]): point for point in values}
        columns = list(zip(*unique.values(), strict=True))
        connection.exec_driver_sql(
            "INSERT INTO metrics (run_id, key_id, step, value, nonfinite, wall_time) "
            "SELECT * FROM unnest(%s::integer[], %s::integer[], %s::bigint[], "
            "%s::double precision[], %s::smallint[], %s::double precision[]) "
            "ON CONFLICT (run_id, key_id, step) DO UPDATE SET "
            "value = excluded.value, nonfinite = excluded.nonfinite, "
            "wall_time = excluded.wall_time",
            tuple(list(column) for column in columns),
        )

    def _update_series(
        self, session: Session, run_id: int, summaries: dict[int, _KeySummary]
    ) -> None:
        insert = _dialect_insert(session)
        statement = insert(RunSeries)
        newer = statement.excluded.last_step >= RunSeries.last_step
        smaller = func.min if session.get_bind().dialect.name == "sqlite" else func.least
        statement = statement.on_conflict_do_update(
            index_elements=["run_id", "key_id"],
            set_={
                "first_step": smaller(RunSeries.first_step, statement.excluded.first_step),
                "last_step": case((newer, statement.excluded.last_step), else_=RunSeries.last_step),
                "last_value": case(
                    (newer, statement.excluded.last_value), else_=RunSeries.last_value
                ),
                "last_nonfinite": case(
                    (newer, statement.excluded.last_nonfinite), else_=RunSeries.last_nonfinite
                ),
                "last_time": case((newer, statement.excluded.last_time), else_=RunSeries.last_time),
            },
        )
        session.execute(
            statement,
            [
                {
                    "run_id": run_id,
                    "key_id": key_id,
                    "first_step": summary.first,
                    "last_step": summary.last,
                    "last_value": summary.latest[3],
                    "last_nonfinite": summary.latest[4],
                    "last_time": summary.latest[5],
                }
                for key_id, summary in summaries.items()
            ],
        )

    # -- reading -------------------------------------------------------------------

    def read_series(
        self, session: Session, run_id: int, key_id: int, after_step: int | None = None
    ) -> Series:
        """A whole series (or the part after a step) in step order, from the database."""
        # Straight from the driver's cursor into numpy: for a million rows, SQLAlchemy's
        # Row objects would cost more than the read itself.
        connection = session.connection()
        marker = "?" if connection.dialect.name == "sqlite" else "%s"
        sql = (
            "SELECT step, value, nonfinite, wall_time FROM metrics "
            f"WHERE run_id = {marker} AND key_id = {marker}"
        )
        params: tuple[int, ...] = (run_id, key_id)
        if after_step is not None:
            sql += f" AND step > {marker}"
            params += (after_step,)
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql + " ORDER BY step", params)
            rows = cursor.fetchall()
        finally:
            cursor.close()
        return Series.from_rows(rows)

    def run_keys(self, session: Session, run_id: int) -> dict[str, RunSeries]:
        """The run's metric keys with each one's latest point."""
        rows = session.scalars(select(RunSeries).where(RunSeries.run_id == run_id)).all()
        return {self.key_name(session, row.key_id): row for row in rows}


Point = tuple[int, int, int, float | None, int, float]


@dataclass(slots=True)
class _KeySummary:
    first: int
    last: int
    latest: Point


def _collect(
    run_id: int, rows: Sequence[MetricRow], key_ids: Mapping[str, int], default_time: float
) -> tuple[list[Point], dict[int, _KeySummary]]:
    """Rows to stored points (run_id, key_id, step, value, nonfinite, wall_time), with each
    key's step range and latest point. This is the ingest hot path: the point loop does
    nothing else, and the summaries come from the rows' order."""
    if any(rows[i].step > rows[i + 1].step for i in range(len(rows) - 1)):
        rows = sorted(rows, key=lambda row: row.step)  # stable: later writes stay later
    points: list[Point] = []
    append = points.append
    for row in rows:
        wall_time = default_time if row.time is None else row.time
        step = row.step
        for name, value in row.metrics.items():
            # x - x is 0.0 exactly for finite x, NaN for NaN and for infinities.
            if value - value == 0.0:
                append((run_id, key_ids[name], step, value, 0, wall_time))
            else:
                append((run_id, key_ids[name], step, None, nonfinite_flag(value), wall_time))
    return points, _summaries(rows, key_ids, points)


def _summaries(
    rows: Sequence[MetricRow], key_ids: Mapping[str, int], points: list[Point]
) -> dict[int, _KeySummary]:
    """First step, last step and latest point per key, for step-sorted rows: scan from
    each end only until every key has been seen (usually a handful of rows)."""
    wanted = len(key_ids)
    first: dict[int, int] = {}
    for row in rows:
        for name in row.metrics:
            first.setdefault(key_ids[name], row.step)
        if len(first) == wanted:
            break
    latest: dict[int, Point] = {}
    for point in reversed(points):
        if point[1] not in latest:
            latest[point[1]] = point
            if len(latest) == wanted:
                break
    return {key_id: _KeySummary(first[key_id], point[2], point) for key_id, point in latest.items()}


def _event_payload(
    names: Mapping[int, str],
    points: list[Point],
    summaries: dict[int, _KeySummary],
    last_step: int,
) -> dict[str, Any]:
    """Per key its step range; for small batches the points themselves, so live
    viewers need no extra request."""
    inline = len(points) <= EVENT_INLINE_POINTS
    keys: dict[str, dict[str, Any]] = {
        names[key_id]: {"first": summary.first, "last": summary.last}
        for key_id, summary in summaries.items()
    }
    if inline:
        for _, key_id, step, value, flag, wall_time in sorted(points, key=lambda p: (p[1], p[2])):
            entry = keys[names[key_id]]
            entry.setdefault("steps", []).append(step)
            entry.setdefault("values", []).append(
                encode_float(NONFINITE_VALUES[NonFinite(flag)]) if flag else value
            )
            entry.setdefault("times", []).append(wall_time)
    return {"keys": keys, "last_step": last_step, "inline": inline}


def add_sample(session: Session, run_id: int, step: int, text: str) -> Sample:
    """Store a text sample generated by the model and tell live viewers."""
    sample = Sample(run_id=run_id, step=step, text=text, created_at=now())
    session.add(sample)
    publish(session, run_id, EventKind.sample, {"step": step, "text": text})
    return sample


def _dialect_insert(session: Session) -> Any:
    name = session.get_bind().dialect.name
    return sqlite.insert if name == "sqlite" else postgresql.insert

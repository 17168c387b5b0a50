"""Writing and reading metric points. No FastAPI here: the API's ingest endpoint and the
worker's database sink call the same `MetricStore.write`.

Points are narrow rows keyed (run_id, key_id, step); writes are idempotent upserts, so a
retried batch or a resumed run that repeats steps never duplicates a point.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Connection, case, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.db import Database
from app.events import EventKind, publish
from app.jsonutil import encode_float
from app.metrics import lod, pgcopy
from app.metrics.points import Points, apply_nonfinite, nonfinite_flags
from app.models import Metric, MetricKey, MetricLod, Run, RunSeries, Sample
from app.models.base import now

# Above this many points a batch's event carries only per-key step ranges; viewers then
# fetch the range over REST instead of receiving megabytes through the live stream.
EVENT_INLINE_POINTS = 5_000
# PostgreSQL advisory lock class of a run's metric writes (the run id is the other half).
WRITE_LOCK_CLASS = 15_0003


@dataclass(frozen=True, slots=True)
class MetricRow:
    """One step of one run: several metric values logged together."""

    step: int
    metrics: Mapping[str, float]
    time: float | None = None


class RowLike(Protocol):
    """A MetricRow, or a decoded ingest row: values may be the strings "NaN",
    "Infinity", "-Infinity" (already checked)."""

    @property
    def step(self) -> int: ...
    @property
    def metrics(self) -> Mapping[str, float | str]: ...
    @property
    def time(self) -> float | None: ...


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
        values = apply_nonfinite(table[:, 1].copy(), table[:, 2])
        return cls(table[:, 0].astype(np.int64), values, table[:, 3].copy())

    def concat(self, other: Series) -> Series:
        return Series(
            np.concatenate([self.steps, other.steps]),
            np.concatenate([self.values, other.values]),
            np.concatenate([self.times, other.times]),
        )


def metric_names(rows: Sequence[RowLike]) -> set[str]:
    # set.union walks each dict's keys in C: this runs over every point of a batch.
    return set().union(*[row.metrics.keys() for row in rows])


class RunGone(LookupError):
    """Points were written for a run that does not exist (or was just deleted)."""

    def __init__(self, run_id: int) -> None:
        super().__init__(f"run {run_id} not found")
        self.run_id = run_id


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
        rows: Sequence[RowLike],
        key_ids: Mapping[str, int],
    ) -> WriteResult:
        """Upsert a batch inside the caller's transaction, update each key's latest
        point and the level-of-detail summary, advance the run's last step, and append
        one points event."""
        if not rows:
            return WriteResult(0, None, None)
        batch = to_points(rows, key_ids, now())
        connection = session.connection()
        self._lock_run(connection, run_id)
        previous_last: dict[int, int] = {
            key_id: last_step
            for key_id, last_step in session.execute(
                select(RunSeries.key_id, RunSeries.last_step).where(RunSeries.run_id == run_id)
            )
        }
        previous = np.array([previous_last.get(k, -1) for k in batch.keys.tolist()], np.int64)
        self._upsert_points(session, run_id, batch, bool((batch.steps > previous).all()))
        lod.update(connection, run_id, batch, previous)
        summaries = _summaries(batch)
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
        payload = _event_payload(names, batch, summaries, last_step)
        publish(session, run_id, EventKind.points, payload)
        return WriteResult(len(batch), first_step, last_step)

    def _lock_run(self, connection: Connection, run_id: int) -> None:
        """The run must exist and stay until this transaction ends: points carry no
        foreign key, so this one check per batch stands in for a trigger per row."""
        if connection.dialect.name == "sqlite":
            # The transaction holds SQLite's one write lock: no delete can come between.
            found = connection.exec_driver_sql("SELECT 1 FROM runs WHERE id = ?", (run_id,))
        else:
            # One writer per run at a time: the summary's buckets are rebuilt from what
            # the transaction reads, and an append that COPYs must not meet a concurrent
            # write of the same steps. FOR KEY SHARE holds off a delete of the run.
            connection.exec_driver_sql(
                "SELECT pg_advisory_xact_lock(%s, %s)", (WRITE_LOCK_CLASS, run_id)
            )
            found = connection.exec_driver_sql(
                "SELECT 1 FROM runs WHERE id = %s FOR KEY SHARE", (run_id,)
            )
        if found.first() is None:
            raise RunGone(run_id)

    def _upsert_points(self, session: Session, run_id: int, batch: Points, appending: bool) -> None:
        connection = session.connection()
        if connection.dialect.name != "sqlite":
            self._copy_points(connection, run_id, batch, appending)
            return
        flags = nonfinite_flags(batch.values)
        values: list[float | None] = batch.values.tolist()
        for index in np.flatnonzero(flags).tolist():
            values[index] = None
        columns = (
            [run_id] * len(batch),
            batch.keys.tolist(),
            batch.steps.tolist(),
            values,
            flags.tolist(),
            batch.times.tolist(),
        )
        # Straight to the driver: building SQLAlchemy parameter dicts for hundreds of
        # thousands of rows costs more than SQLite's insert itself.
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            # An append (every point new) needs no conflict clause.
            cursor.executemany(
                "INSERT INTO metrics (run_id, key_id, step, value, nonfinite, wall_time) "
                "VALUES (?, ?, ?, ?, ?, ?)"
                + (
                    ""
                    if appending
                    else " ON CONFLICT (run_id, key_id, step) DO UPDATE SET "
                    "value = excluded.value, nonfinite = excluded.nonfinite, "
                    "wall_time = excluded.wall_time"
                ),
                zip(*columns, strict=True),
            )
        finally:
            cursor.close()

    def _copy_points(
        self, connection: Connection, run_id: int, batch: Points, appending: bool
    ) -> None:
        # PostgreSQL: binary COPY; straight into the table when every point is new.
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        data = pgcopy.metrics_copy_data(run_id, batch)

        def fill(table: str) -> None:
            with cursor.copy(
                f"COPY {table} ({pgcopy.METRIC_COLUMNS}) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.write(data)

        try:
            if appending:
                fill("metrics")
            else:
                pgcopy.upsert_via_temp(
                    cursor,
                    "metrics",
                    pgcopy.METRIC_COLUMNS.split(", "),
                    ("run_id", "key_id", "step"),
                    fill,
                )
        finally:
            cursor.close()

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
                    "last_value": None if summary.last_flag else summary.last_value,
                    "last_nonfinite": summary.last_flag,
                    "last_time": summary.last_time,
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


@dataclass(slots=True)
class _KeySummary:
    first: int
    last: int
    last_value: float
    last_flag: int
    last_time: float
    start: int  # the key's slice of the batch
    stop: int


def to_points(rows: Sequence[RowLike], key_ids: Mapping[str, int], default_time: float) -> Points:
    """Rows to columns sorted by (key, step), each (key, step) once: a later row's value
    for the same step wins, as it would in row-by-row upserts. This is the ingest hot
    path: the Python loop runs per row, never per point."""
    names: list[str] = []
    values: list[float | str] = []
    lengths: list[int] = []
    steps: list[int] = []
    times: list[float] = []
    for row in rows:
        metrics = row.metrics
        names.extend(metrics)
        values.extend(metrics.values())
        lengths.append(len(metrics))
        steps.append(row.step)
        times.append(default_time if row.time is None else row.time)
    count = len(names)
    keys = np.fromiter(map(key_ids.__getitem__, names), np.int64, count)
    # float() reads the strings "NaN", "Infinity", "-Infinity" as themselves.
    value_array = np.array(values, dtype=np.float64)
    repeats = np.array(lengths, np.int64)
    step_array = np.repeat(np.array(steps, np.int64), repeats)
    time_array = np.repeat(np.array(times, np.float64), repeats)
    order = np.lexsort((np.arange(count), step_array, keys))
    keys, step_array = keys[order], step_array[order]
    last = np.ones(count, bool)
    last[:-1] = (keys[1:] != keys[:-1]) | (step_array[1:] != step_array[:-1])
    keep = order[last]
    return Points(
        keys[last],
        step_array[last],
        value_array[keep],
        time_array[keep],
        np.ones(len(keep), np.int64),
    )


def _summaries(batch: Points) -> dict[int, _KeySummary]:
    """Per key of a (key, step)-sorted batch: its first and last step and latest point."""
    starts = np.flatnonzero(np.diff(batch.keys, prepend=-1) != 0)
    stops = np.append(starts[1:], len(batch))
    lasts = stops - 1
    return {
        key_id: _KeySummary(first, last, value, flag, wall_time, start, stop)
        for key_id, first, last, value, flag, wall_time, start, stop in zip(
            batch.keys[starts].tolist(),
            batch.steps[starts].tolist(),
            batch.steps[lasts].tolist(),
            batch.values[lasts].tolist(),
            nonfinite_flags(batch.values[lasts]).tolist(),
            batch.times[lasts].tolist(),
            starts.tolist(),
            stops.tolist(),
            strict=True,
        )
    }


def _event_payload(
    names: Mapping[int, str],
    batch: Points,
    summaries: dict[int, _KeySummary],
    last_step: int,
) -> dict[str, Any]:
    """Per key its step range; for small batches the points themselves, so live
    viewers need no extra request."""
    inline = len(batch) <= EVENT_INLINE_POINTS
    keys: dict[str, dict[str, Any]] = {}
    for key_id, summary in summaries.items():
        entry: dict[str, Any] = {"first": summary.first, "last": summary.last}
        if inline:
            part = slice(summary.start, summary.stop)
            entry["steps"] = batch.steps[part].tolist()
            entry["values"] = [encode_float(v) for v in batch.values[part].tolist()]
            entry["times"] = batch.times[part].tolist()
        keys[names[key_id]] = entry
    return {"keys": keys, "last_step": last_step, "inline": inline}


def delete_run_points(session: Session, run_id: int) -> None:
    """Delete a run's points and summary (they carry no foreign key to cascade)."""
    session.execute(delete(Metric).where(Metric.run_id == run_id))
    session.execute(delete(MetricLod).where(MetricLod.run_id == run_id))


def without_nul(text: str) -> str:
    """Text a client logged, storable as sent but for NUL (PostgreSQL text cannot hold
    it), shown as U+FFFD. A sample from a byte-level tokenizer may hold a NUL; refusing
    it would leave the script retrying a line it can never deliver."""
    return text.replace("\x00", "\ufffd")


def add_sample(session: Session, run_id: int, step: int, text: str) -> Sample:
    """Store a text sample generated by the model and tell live viewers."""
    text = without_nul(text)
    sample = Sample(run_id=run_id, step=step, text=text, created_at=now())
    session.add(sample)
    publish(session, run_id, EventKind.sample, {"step": step, "text": text})
    return sample


def _dialect_insert(session: Session) -> Any:
    name = session.get_bind().dialect.name
    return sqlite.insert if name == "sqlite" else postgresql.insert

"""The trainer's metric sinks: batched in a background thread, one transaction per
flush, nothing handed over is lost on close, at most one flush interval on SIGKILL."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import httpx
from sqlalchemy import func, select

from app.db import Database
from app.models import Event, Metric, Run, RunSource, RunStatus, Sample
from tests.conftest import ROOT, LiveServer
from tests.worker.conftest import wait_for
from trainer.sink import DatabaseSink, HttpSink


def _run(db: Database) -> int:
    with db.session(write=True) as session:
        run = Run(name="sink", source=RunSource.external, status=RunStatus.running, config={})
        session.add(run)
        session.flush()
        return run.id


def _count(db: Database, model: type, run_id: int) -> int:
    with db.session() as session:
        return int(
            session.scalar(select(func.count()).select_from(model).where(model.run_id == run_id))
            or 0
        )


def test_rows_reach_the_database_without_an_explicit_flush(database_url: str) -> None:
    db = Database(database_url)
    run_id = _run(db)
    sink = DatabaseSink(db, run_id, flush_seconds=0.5, max_rows=1000)
    sink.log(0, {"train/loss": 4.0})
    wait_for(lambda: _count(db, Metric, run_id) == 1, 5, "the timed flush")
    # A full batch is written at once, without waiting for the timer.
    slow = DatabaseSink(db, run_id, flush_seconds=600, max_rows=100)
    for step in range(1, 101):
        slow.log(step, {"train/loss": 1.0})
    wait_for(lambda: _count(db, Metric, run_id) == 101, 5, "the size-triggered flush")
    sink.close()
    slow.close()
    db.dispose()


def test_one_transaction_per_flush_and_close_writes_everything(database_url: str) -> None:
    db = Database(database_url)
    run_id = _run(db)
    sink = DatabaseSink(db, run_id, flush_seconds=600, max_rows=1000)
    for step in range(2500):
        sink.log(step, {"train/loss": 2.0, "train/lr": 1e-3})
    sink.sample(2499, "hello world")
    sink.close()
    assert _count(db, Metric, run_id) == 5000
    assert _count(db, Sample, run_id) == 1
    with db.session() as session:
        batches = session.scalar(
            select(func.count())
            .select_from(Event)
            .where(Event.run_id == run_id, Event.kind == "points")
        )
    # 2,500 rows with max_rows=1,000: at most three writes (two full, one on close).
    assert batches is not None and 1 <= batches <= 3
    assert sink.rows_written == 2500
    db.dispose()


CRASHING_SCRIPT = """
import sys
from app.db import Database
from trainer.sink import DatabaseSink
sink = DatabaseSink(Database(sys.argv[1]), int(sys.argv[2]), flush_seconds=600)
try:
    for step in range(3000):
        sink.log(step, {"train/loss": 1.0})
    raise RuntimeError("training blew up")
finally:
    sink.close()
"""


def test_a_crash_loses_nothing_handed_to_the_sink(database_url: str) -> None:
    db = Database(database_url)
    run_id = _run(db)
    result = subprocess.run(
        [sys.executable, "-c", CRASHING_SCRIPT, database_url, str(run_id)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "training blew up" in result.stderr
    assert _count(db, Metric, run_id) == 3000
    db.dispose()


LOGGING_SCRIPT = """
import sys, time
from app.db import Database
from trainer.sink import DatabaseSink
sink = DatabaseSink(Database(sys.argv[1]), int(sys.argv[2]), flush_seconds=0.5)
step = 0
print("ready", flush=True)
while True:
    sink.log(step, {"train/loss": 1.0}, time.time())
    step += 1
    time.sleep(0.002)
"""


def test_sigkill_loses_at_most_the_last_flush_interval(database_url: str) -> None:
    db = Database(database_url)
    run_id = _run(db)
    process = subprocess.Popen(
        [sys.executable, "-c", LOGGING_SCRIPT, database_url, str(run_id)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    wait_for(lambda: _count(db, Metric, run_id) > 500, 30, "rows to be written")
    killed_at = time.time()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    with db.session() as session:
        newest = session.scalar(select(func.max(Metric.wall_time)).where(Metric.run_id == run_id))
    db.dispose()
    assert newest is not None
    # Everything logged up to one flush interval (0.5 s) before the kill is stored; the
    # margin covers one write in flight on a loaded machine.
    assert killed_at - newest < 0.5 + 1.0


def test_http_sink_posts_batches_to_the_api(live_server: LiveServer) -> None:
    run = httpx.post(f"{live_server.url}/api/runs", json={"source": "external"}).json()
    sink = HttpSink(live_server.url, run["id"], flush_seconds=0.2)
    for step in range(1200):
        sink.log(step, {"train/loss": math.nan if step == 7 else 1.0 / (step + 1)})
    sink.sample(3, "once upon a time")
    sink.close()
    answer = httpx.get(
        f"{live_server.url}/api/runs/{run['id']}/metrics",
        params={"keys": "train/loss", "max_points": 5000},
    ).json()["series"]["train/loss"]
    assert answer["steps"] == list(range(1200))
    assert answer["values"][7] == "NaN" and answer["values"][1] == 0.5
    samples = httpx.get(f"{live_server.url}/api/runs/{run['id']}/samples").json()
    assert samples[0]["text"] == "once upon a time"

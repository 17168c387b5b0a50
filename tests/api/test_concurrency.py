"""A worker writing straight to the database, a script ingesting over HTTP and readers,
all at once: nobody sees "database is locked" and no row is lost."""

from __future__ import annotations

import multiprocessing
import threading

import httpx
from sqlalchemy import func, select

from app.db import Database
from app.metrics.store import MetricRow, MetricStore
from app.models import Metric
from tests.conftest import LiveServer

BATCHES = 60
ROWS_PER_BATCH = 50
KEYS = ("train/loss", "train/grad_norm", "train/lr")


def direct_writer(
    database_url: str, run_id: int, key_prefix: str, errors: multiprocessing.Queue
) -> None:
    """What the worker's database sink does: batched transactions through the store."""
    try:
        store = MetricStore(Database(database_url))
        for batch in range(BATCHES):
            rows = [
                MetricRow(step, {f"{key_prefix}{key}": float(step) for key in KEYS})
                for step in range(batch * ROWS_PER_BATCH, (batch + 1) * ROWS_PER_BATCH)
            ]
            store.write(run_id, rows)
        store.db.dispose()
    except Exception as error:  # reported to the test, which fails on any
        errors.put(repr(error))


def http_writer(url: str, run_id: int, errors: multiprocessing.Queue) -> None:
    """What a user's training script does: POST batches to the API."""
    try:
        with httpx.Client(timeout=60) as client:
            for batch in range(BATCHES):
                rows = [
                    {"step": step, "metrics": {key: float(step) for key in KEYS}}
                    for step in range(batch * ROWS_PER_BATCH, (batch + 1) * ROWS_PER_BATCH)
                ]
                response = client.post(f"{url}/api/runs/{run_id}/metrics", json={"rows": rows})
                if response.status_code != 200:
                    errors.put(f"{response.status_code} {response.text}")
    except Exception as error:
        errors.put(repr(error))


def test_concurrent_writers_and_readers(server: LiveServer, database_url: str) -> None:
    runs = [
        httpx.post(f"{server.url}/api/runs", json={"source": "external", "name": f"r{i}"}).json()[
            "id"
        ]
        for i in range(2)
    ]
    context = multiprocessing.get_context("spawn")
    errors: multiprocessing.Queue = context.Queue()
    writers = [
        context.Process(target=direct_writer, args=(database_url, runs[0], "", errors)),
        context.Process(target=direct_writer, args=(database_url, runs[1], "worker/", errors)),
        context.Process(target=http_writer, args=(server.url, runs[1], errors)),
    ]
    reader_errors: list[str] = []
    done = threading.Event()

    def reader() -> None:
        with httpx.Client(timeout=60) as client:
            while not done.is_set():
                for run_id in runs:
                    for path in (
                        f"/api/runs/{run_id}",
                        f"/api/runs/{run_id}/metrics?max_points=100",
                        "/api/runs",
                    ):
                        response = client.get(server.url + path)
                        if response.status_code != 200:
                            reader_errors.append(f"{path}: {response.status_code} {response.text}")

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for process in writers:
        process.start()
    for thread in readers:
        thread.start()
    for process in writers:
        process.join(timeout=300)
    done.set()
    for thread in readers:
        thread.join(timeout=60)

    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert [process.exitcode for process in writers] == [0, 0, 0]
    assert failures == [] and reader_errors == []
    log = server.log_path.read_text()
    assert "database is locked" not in log and "Traceback" not in log

    expected_points = BATCHES * ROWS_PER_BATCH * len(KEYS)
    db = Database(database_url)
    with db.session() as session:
        counts = {
            run_id: session.scalar(
                select(func.count()).select_from(Metric).where(Metric.run_id == run_id)
            )
            for run_id in runs
        }
    db.dispose()
    assert counts == {runs[0]: expected_points, runs[1]: 2 * expected_points}
    last_steps = {
        run_id: httpx.get(f"{server.url}/api/runs/{run_id}").json()["last_step"] for run_id in runs
    }
    assert set(last_steps.values()) == {BATCHES * ROWS_PER_BATCH - 1}

"""Ingest benchmark: values stored per second through the REST API (bulk, 10,000-row
requests to a live `trainlens serve`) and through the trainlens client (run.log() per
step; measured when the client package is installed), against the database's own
fastest path for the same rows into the same shape of table: raw `sqlite3`
executemany, and raw psycopg COPY on PostgreSQL (both build their tuples from the same
row dicts). Interleaved (raw, REST, raw, REST, ...) on fresh databases; medians
and the ratio REST / raw.

    python -m bench.ingest [--rows 50000] [--repeats 3] [--postgres-url URL]

The rule engine is switched off in the server: this measures the write path alone.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
KEYS = [f"bench/key{i}" for i in range(10)]
REQUEST_ROWS = 10_000

TABLE = (
    "CREATE TABLE metrics (run_id INTEGER NOT NULL, key_id INTEGER NOT NULL, "
    "step BIGINT NOT NULL, value DOUBLE PRECISION, nonfinite SMALLINT NOT NULL, "
    "wall_time DOUBLE PRECISION NOT NULL, PRIMARY KEY (run_id, key_id, step))"
)


def make_rows(count: int) -> list[dict[str, Any]]:
    return [
        {
            "step": step,
            "metrics": {key: 3.0 + ((step * 7 + i) % 1000) * 1e-3 for i, key in enumerate(KEYS)},
            "time": 1.7e9 + step,
        }
        for step in range(count)
    ]


def _tuples(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    key_ids = {key: i + 1 for i, key in enumerate(KEYS)}
    return [
        (1, key_ids[key], row["step"], value, 0, row["time"])
        for row in rows
        for key, value in row["metrics"].items()
    ]


def raw_sqlite(rows: list[dict[str, Any]], tmp: Path) -> float:
    """sqlite3 executemany, one transaction per 10,000 rows, as the server's settings."""
    connection = sqlite3.connect(tmp / "raw.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(TABLE + " WITHOUT ROWID")
    started = time.perf_counter()
    for lo in range(0, len(rows), REQUEST_ROWS):
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(
            "INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)", _tuples(rows[lo : lo + REQUEST_ROWS])
        )
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return len(rows) * len(KEYS) / elapsed


def raw_copy(rows: list[dict[str, Any]], url: str) -> float:
    """psycopg COPY, one transaction per 10,000 rows."""
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS bench_raw_metrics")
        connection.execute(TABLE.replace("TABLE metrics", "TABLE bench_raw_metrics"))
        started = time.perf_counter()
        for lo in range(0, len(rows), REQUEST_ROWS):
            with connection.transaction(), connection.cursor() as cursor:
                with cursor.copy(
                    "COPY bench_raw_metrics (run_id, key_id, step, value, nonfinite, wall_time) "
                    "FROM STDIN"
                ) as copy:
                    for point in _tuples(rows[lo : lo + REQUEST_ROWS]):
                        copy.write_row(point)
        elapsed = time.perf_counter() - started
        connection.execute("DROP TABLE bench_raw_metrics")
    return len(rows) * len(KEYS) / elapsed


@contextmanager
def live_server(database_url: str, data_dir: Path) -> Iterator[str]:
    """`trainlens serve` in a subprocess, rule engine off, schema migrated at start-up."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "TRAINLENS_DATA_DIR": str(data_dir),
        "TRAINLENS_DATABASE_URL": database_url,
        "TRAINLENS_PORT": str(port),
        "TRAINLENS_AUTO_MIGRATE": "1",
        "TRAINLENS_RULES_ENABLED": "0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--no-worker", "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def rest(rows: list[dict[str, Any]], url: str) -> float:
    bodies = [
        orjson.dumps({"rows": rows[lo : lo + REQUEST_ROWS]})
        for lo in range(0, len(rows), REQUEST_ROWS)
    ]
    with httpx.Client(base_url=url, timeout=120) as client:
        run = client.post("/api/runs", json={"name": "bench", "source": "external", "config": {}})
        run_id = run.json()["id"]
        started = time.perf_counter()
        for body in bodies:
            response = client.post(
                f"/api/runs/{run_id}/metrics",
                content=body,
                headers={"content-type": "application/json"},
            )
            response.raise_for_status()
        elapsed = time.perf_counter() - started
    return len(rows) * len(KEYS) / elapsed


def client(rows: list[dict[str, Any]], url: str, tmp: Path) -> float:
    """The trainlens client, as a training script uses it: run.log() per step, then
    finish(), which returns once everything is on the server. Rows beyond its memory
    buffer spill to its journal, kept in `tmp` (not in the working directory)."""
    import trainlens

    run = trainlens.init(name="bench", url=url, system_metrics=False, offline_dir=tmp / "journal")
    started = time.perf_counter()
    for row in rows:
        run.log(row["metrics"], step=row["step"])
    run.finish(timeout=600)
    elapsed = time.perf_counter() - started
    assert not run.errors, run.errors
    return len(rows) * len(KEYS) / elapsed


def _has_client() -> bool:
    try:
        import trainlens
    except ImportError:
        return False
    return hasattr(trainlens, "init")


def _reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


def measure(rows: list[dict[str, Any]], repeats: int, postgres_url: str | None) -> None:
    results: dict[str, list[float]] = {}

    def record(name: str, action: Callable[..., float], *args: Any) -> None:
        results.setdefault(name, []).append(action(*args))

    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            record("sqlite raw executemany", raw_sqlite, rows, tmp)
            with live_server(f"sqlite:///{tmp}/trainlens.db", tmp / "data") as url:
                record("sqlite REST bulk", rest, rows, url)
                if _has_client():
                    record("sqlite client log()", client, rows, url, tmp)
            if postgres_url:
                _reset_postgres(postgres_url)
                record("postgresql raw COPY", raw_copy, rows, postgres_url)
                with live_server(postgres_url, tmp / "data-pg") as url:
                    record("postgresql REST bulk", rest, rows, url)
                    if _has_client():
                        record("postgresql client log()", client, rows, url, tmp)
    print(f"{len(rows):,} rows x {len(KEYS)} keys, {REQUEST_ROWS:,}-row requests, ", end="")
    print(f"{repeats} repeats, interleaved")
    print(f"{'path':28} {'values/s (median)':>18}")
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, value in medians.items():
        print(f"{name:28} {value:>18,.0f}")
    for db, raw in (("sqlite", "raw executemany"), ("postgresql", "raw COPY")):
        for path in ("REST bulk", "client log()"):
            if f"{db} {path}" in medians:
                ratio = medians[f"{db} {path}"] / medians[f"{db} {raw}"]
                print(f"{db}: {path} / {raw} = {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--postgres-url", help="also benchmark this (scratch!) PostgreSQL database")
    args = parser.parse_args()
    measure(make_rows(args.rows), args.repeats, args.postgres_url)


if __name__ == "__main__":
    main()

"""Store benchmark: values written per second through the store, and the server's time
to answer a 1,000,000-point series at 2,000 points (cold: first read from the database;
warm: the series already in memory, as for a dashboard that keeps asking).

    python -m bench.store [--postgres-url URL] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from app.config import Settings
from app.db import Database
from app.metrics.store import MetricRow, MetricStore
from app.migrations import upgrade_to_head
from app.models import Run

KEYS = [f"bench/key{i}" for i in range(10)]
ROWS_PER_BATCH = 1000  # the trainer sink's flush size
TOTAL_ROWS = 100_000  # x 10 keys = 1,000,000 values


def _new_run(db: Database) -> int:
    with db.session(write=True) as session:
        run = Run(name="bench", source="external", status="running", config={})
        session.add(run)
        session.flush()
        return run.id


def ingest_rate(url: str) -> float:
    """Values per second for 1,000,000 values in batches of 1,000 rows x 10 keys."""
    db = Database(url)
    store = MetricStore(db)
    run_id = _new_run(db)
    rows = [
        MetricRow(step, {key: 1.0 + step * 1e-6 for key in KEYS}, 1.7e9 + step)
        for step in range(TOTAL_ROWS)
    ]
    started = time.perf_counter()
    for lo in range(0, TOTAL_ROWS, ROWS_PER_BATCH):
        store.write(run_id, rows[lo : lo + ROWS_PER_BATCH])
    elapsed = time.perf_counter() - started
    db.dispose()
    return TOTAL_ROWS * len(KEYS) / elapsed


def query_times(url: str, data_dir: Path, warm_repeats: int = 30) -> tuple[float, list[float]]:
    """Server time (ms, from the Server-Timing header) for 1,000,000 points at 2,000."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    db = Database(url)
    store = MetricStore(db)
    run_id = _new_run(db)
    n = 1_000_000
    values = 3.0 + 0.05 * np.random.default_rng(0).standard_normal(n)
    for lo in range(0, n, 100_000):
        store.write(
            run_id,
            [
                MetricRow(step, {"train/loss": float(values[step])}, 1.7e9)
                for step in range(lo, lo + 100_000)
            ],
        )
    db.dispose()

    def server_ms(client: TestClient, **params: object) -> float:
        response = client.get(
            f"/api/runs/{run_id}/metrics",
            params={"keys": "train/loss", "max_points": 2000, **params},
        )
        assert (
            response.status_code == 200
            and response.json()["series"]["train/loss"]["total_points"] > 0
        )
        return float(response.headers["server-timing"].split("dur=")[1])

    # The query path alone: the rule engine (bench.rules_engine) would be judging the
    # million points in the background while they are timed.
    settings = Settings(
        data_dir=data_dir, database_url=url, embedded_worker=False, rules_enabled=False
    )
    # A loopback Host: the app refuses TestClient's default "testserver" (Host allowlist).
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        cold = server_ms(client)
        warm = [server_ms(client) for _ in range(warm_repeats)]
        zoom = [server_ms(client, start=400_000, end=600_000) for _ in range(warm_repeats)]
    return cold, warm + zoom


def run(backends: dict[str, str | None], repeats: int) -> None:
    ingest_header = f"ingest values/s (median of {repeats})"
    print(
        f"{'backend':10} {ingest_header:>32} {'query cold ms':>14} "
        f"{'query warm ms (median, p95)':>28}"
    )
    for name, base_url in backends.items():
        rates, colds, warms = [], [], []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                url = base_url or f"sqlite:///{tmp}/bench.db"
                if base_url is not None:
                    _reset_postgres(base_url)
                upgrade_to_head(url)
                rates.append(ingest_rate(url))
                cold, warm = query_times(url, Path(tmp))
                colds.append(cold)
                warms.extend(warm)
        warms.sort()
        p95 = warms[int(len(warms) * 0.95) - 1]
        print(
            f"{name:10} {statistics.median(rates):>32,.0f} {statistics.median(colds):>14.1f} "
            f"{statistics.median(warms):>20.1f}, {p95:.1f}"
        )


def _reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres-url", help="also benchmark this (scratch!) PostgreSQL database")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    backends: dict[str, str | None] = {"sqlite": None}
    if args.postgres_url:
        backends["postgresql"] = args.postgres_url
    run(backends, args.repeats)


if __name__ == "__main__":
    main()

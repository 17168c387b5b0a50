"""What the rule engine costs the API process: the time of one incremental pass after a
trainer-like step is written (the engine runs beside the live streams, so this is what
it takes from them), and the rate at which it catches up on a long run written while it
was not looking. Medians over repeats; the machine is noisy."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from app.config import Settings
from app.db import Database
from app.metrics.cache import SeriesCache
from app.metrics.store import MetricRow, MetricStore
from app.migrations import upgrade_to_head
from app.models import Run
from app.rules.engine import RuleEngine
from bench.ui_latency import trainer_like_row


def _setup(root: Path) -> tuple[RuleEngine, MetricStore, int]:
    url = f"sqlite:///{root / 'bench.db'}"
    upgrade_to_head(url)
    settings = Settings(data_dir=root, database_url=url, rules_enabled=False)
    db = Database(url)
    store = MetricStore(db)
    engine = RuleEngine(db, store, SeriesCache(store, 512 * 1024 * 1024, 900), settings)
    with db.session(write=True) as session:
        run = Run(name="bench", source="external", status="running", config={"vocab_size": 65})
        session.add(run)
        session.flush()
        run_id = run.id
    return engine, store, run_id


def _rows(start: int, stop: int) -> list[MetricRow]:
    return [
        MetricRow(row["step"], row["metrics"]) for row in map(trainer_like_row, range(start, stop))
    ]


def incremental_pass(history: int = 2_000, samples: int = 200) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        engine, store, run_id = _setup(Path(tmp))
        store.write(run_id, _rows(0, history))
        engine.poll()
        seconds = []
        for step in range(history, history + samples):
            store.write(run_id, _rows(step, step + 1))
            started = time.perf_counter()
            engine.poll()
            seconds.append(time.perf_counter() - started)
        engine.db.dispose()
        return seconds


def catch_up(steps: int) -> float:
    """Steps judged per second on a run the engine first sees with `steps` of history."""
    with tempfile.TemporaryDirectory() as tmp:
        engine, store, run_id = _setup(Path(tmp))
        for start in range(0, steps, 5_000):
            store.write(run_id, _rows(start, min(steps, start + 5_000)))
        started = time.perf_counter()
        engine.poll()
        while engine.catching_up:  # a chunk per pass
            engine.poll()
        elapsed = time.perf_counter() - started
        engine.db.dispose()
        return steps / elapsed


def main() -> None:
    passes = incremental_pass()
    ordered = sorted(passes)
    print(
        f"incremental pass after one trainer-like step (35 keys, 2,000 steps of history): "
        f"median {1000 * statistics.median(passes):.1f} ms, "
        f"p95 {1000 * ordered[int(0.95 * len(ordered))]:.1f} ms over {len(passes)} steps"
    )
    rates = [catch_up(50_000) for _ in range(3)]
    print(f"catch-up on a 50,000-step run: median {statistics.median(rates):,.0f} steps/s")


if __name__ == "__main__":
    main()

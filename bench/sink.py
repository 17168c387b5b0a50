"""Metric-sink benchmark: what a `log()` call costs the training step (p50, p99, max,
measured while the background thread is flushing), and how many rows per second the
database sink writes.

    python -m bench.sink [--rows 20000] [--keys 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from app.db import Database
from app.migrations import upgrade_to_head
from app.models import Run
from trainer.sink import DatabaseSink


def one_pass(rows: int, keys: int, pace_seconds: float) -> tuple[list[float], float, float]:
    """(log-call costs in ms, rows per second flushed, values per second flushed)."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade_to_head(url)
        db = Database(url)
        with db.session(write=True) as session:
            run = Run(name="bench", source="launched", status="running", config={})
            session.add(run)
            session.flush()
            run_id = run.id
        sink = DatabaseSink(db, run_id)
        names = [f"act/h{i // 5}.mlp/stat{i % 5}" for i in range(keys)]
        costs = []
        for step in range(rows):
            metrics = {name: 1.0 + step * 1e-6 for name in names}
            before = time.perf_counter()
            sink.log(step, metrics)
            costs.append((time.perf_counter() - before) * 1000)
            if pace_seconds:
                # A training step between log calls, so flushes overlap logging. It
                # releases the GIL, as torch's kernels do.
                time.sleep(pace_seconds)
        sink.close()
        written_per_second = sink.rows_written / sink.write_seconds
        db.dispose()
    return costs, written_per_second, written_per_second * keys


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=30, help="metrics per logged row")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--step-ms", type=float, default=1.0, help="simulated step between logs")
    args = parser.parse_args()
    p50s, p99s, maxes, rates, value_rates = [], [], [], [], []
    for _ in range(args.repeats):
        costs, rows_per_second, values_per_second = one_pass(
            args.rows, args.keys, args.step_ms / 1000
        )
        p50s.append(percentile(costs, 0.50))
        p99s.append(percentile(costs, 0.99))
        maxes.append(max(costs))
        rates.append(rows_per_second)
        value_rates.append(values_per_second)
    print(f"sink.log() cost, {args.rows} rows x {args.keys} keys, median of {args.repeats} passes:")
    p50, p99, worst = (statistics.median(v) for v in (p50s, p99s, maxes))
    print(f"  p50 {p50:.4f} ms   p99 {p99:.4f} ms   max {worst:.2f} ms")
    rows, values = statistics.median(rates), statistics.median(value_rates)
    print(f"DatabaseSink flushed (SQLite): {rows:,.0f} rows/s = {values:,.0f} values/s")


if __name__ == "__main__":
    main()

"""What logging costs a launched run's training step: the HTTP path (the `trainlens`
client's transport to a live API, which launched runs now take) against the direct
database writes the trainer used to make, on the same model, interleaved in one run.

    python -m bench.sink [--steps 300] [--repeats 3]

Prints the median step time of each path (the trainer's own `perf/step_ms`, at the
default instrument interval) and their ratio; the goal is HTTP / DB <= 1.01.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from app.db import Database
from app.metrics.store import MetricRow, MetricStore
from app.migrations import upgrade_to_head
from tests.conftest import LiveServer
from trainer.config import TrainConfig
from trainer.corpus import builtin_corpus
from trainer.sink import ClientSink, MetricSink
from trainer.train import train

CONFIG = dict(
    n_layer=2,
    n_head=2,
    n_embd=64,
    block_size=64,
    batch_size=8,
    device="cpu",
    eval_interval=100,
    eval_batches=2,
    checkpoint_interval=10_000,
    sample_interval=10_000,
)


class DirectDatabaseSink:
    """The old path, kept here as the baseline: a background thread writing batches
    straight into the database through the store."""

    def __init__(self, database_url: str, run_id: int) -> None:
        self.db = Database(database_url)
        self.store = MetricStore(self.db)
        self.run_id = run_id
        self.rows: list[MetricRow] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def log(self, step: int, metrics: Mapping[str, float], wall_time: float | None = None) -> None:
        with self.lock:
            self.rows.append(MetricRow(step, dict(metrics), wall_time or time.time()))

    def sample(self, step: int, text: str) -> None:
        pass

    def _write(self) -> None:
        with self.lock:
            rows, self.rows = self.rows, []
        if rows:
            self.store.write(self.run_id, rows)

    def _run(self) -> None:
        while not self.done.wait(0.5):
            self._write()

    def flush(self) -> None:
        self._write()

    def close(self) -> None:
        self.done.set()
        self.thread.join()
        self._write()
        self.db.dispose()


class StepTimes:
    """Passes rows on, keeping the trainer's own step time of each."""

    def __init__(self, inner: MetricSink) -> None:
        self.inner = inner
        self.step_ms: list[float] = []

    def log(self, step: int, metrics: Mapping[str, float], wall_time: float | None = None) -> None:
        if "perf/step_ms" in metrics:
            self.step_ms.append(float(metrics["perf/step_ms"]))
        self.inner.log(step, metrics, wall_time)

    def sample(self, step: int, text: str) -> None:
        self.inner.sample(step, text)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()


def one_run(server: LiveServer, path: str, steps: int, root: Path) -> float:
    run_id = httpx.post(f"{server.url}/api/runs", json={"source": "external"}).json()["id"]
    inner: MetricSink
    if path == "http":
        inner = ClientSink(server.url, run_id, None, root / f"unsent-{run_id}")
    else:
        inner = DirectDatabaseSink(server.database_url, run_id)
    sink = StepTimes(inner)
    config = TrainConfig(**CONFIG, max_steps=steps)
    train(config, builtin_corpus(), root / f"run-{run_id}", sink)
    sink.close()
    return statistics.median(sink.step_ms[10:])  # past the first steps' warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        url = f"sqlite:///{root / 'bench.db'}"
        upgrade_to_head(url)
        server = LiveServer(root / "server", url)
        try:
            server.wait_ready()
            medians: dict[str, list[float]] = {"db": [], "http": []}
            for _ in range(args.repeats):
                for path in ("db", "http"):  # interleaved: both see the same machine
                    medians[path].append(one_run(server, path, args.steps, root))
        finally:
            server.stop()
    db, http = statistics.median(medians["db"]), statistics.median(medians["http"])
    print(f"median step time over {args.repeats} runs of {args.steps} steps each:")
    print(f"  direct database sink: {db:.2f} ms   HTTP (trainlens client): {http:.2f} ms")
    print(f"  HTTP / DB = {http / db:.3f}  (goal <= 1.01)")


if __name__ == "__main__":
    main()

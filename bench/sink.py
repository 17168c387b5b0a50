"""What logging costs a launched run's training step: the HTTP path (the `trainlens`
client's transport to a live API, which launched runs now take) against the direct
database writes the trainer used to make, on the same model, interleaved in one run.

    python -m bench.sink [--steps 2000] [--block 20] [--threads 1]

One training run whose blocks of steps alternate between the two sinks; prints the
median step time of each (the trainer's own `perf/step_ms`, at the default instrument
interval) and the median ratio of paired blocks; the goal is HTTP / DB <= 1.01.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import psutil
import torch

from app.db import Database
from app.metrics.store import MetricRow, MetricStore
from tests.conftest import LiveServer, server_on_fresh_sqlite
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


class Alternating:
    """Hands each block of steps to one sink, then the next block to the other, keeping
    the trainer's own step time of each step: both paths in one run, finely interleaved,
    so the machine's drift and noise hit both alike."""

    def __init__(self, sinks: dict[str, MetricSink], block: int) -> None:
        self.sinks = sinks
        self.names = list(sinks)
        self.block = block
        self.step_ms: dict[str, dict[int, list[float]]] = {name: {} for name in sinks}

    def _name(self, step: int) -> str:
        return self.names[(step // self.block) % len(self.names)]

    def log(self, step: int, metrics: Mapping[str, float], wall_time: float | None = None) -> None:
        name = self._name(step)
        if "perf/step_ms" in metrics:
            block = self.step_ms[name].setdefault(step // self.block, [])
            block.append(float(metrics["perf/step_ms"]))
        self.sinks[name].log(step, metrics, wall_time)

    def sample(self, step: int, text: str) -> None:
        self.sinks[self._name(step)].sample(step, text)

    def flush(self) -> None:
        for sink in self.sinks.values():
            sink.flush()

    def close(self) -> None:
        for sink in self.sinks.values():
            sink.close()

    def paired_ratios(self) -> list[float]:
        """HTTP block median / the median of the DB blocks either side of it."""
        db, http = self.step_ms["db"], self.step_ms["http"]
        ratios = []
        for index, times in http.items():
            around = [statistics.median(db[i]) for i in (index - 1, index + 1) if i in db]
            if around and index > 0:  # the first blocks warm up
                ratios.append(statistics.median(times) / statistics.mean(around))
        return ratios


def one_run(server: LiveServer, steps: int, block: int, root: Path) -> Alternating:
    run_id = httpx.post(f"{server.url}/api/runs", json={"source": "external"}).json()["id"]
    sinks: dict[str, MetricSink] = {
        "db": DirectDatabaseSink(server.database_url, run_id),
        "http": ClientSink(server.url, run_id, None, root / f"unsent-{run_id}"),
    }
    alternating = Alternating(sinks, block)
    train(
        TrainConfig(**CONFIG, max_steps=steps),
        builtin_corpus(),
        root / f"run-{run_id}",
        alternating,
    )
    alternating.close()
    return alternating


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--block", type=int, default=20, help="steps per block")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="trainer and API on separate cores (default on)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (the rest of the cores serve)"
    )
    args = parser.parse_args()
    # On a training box the API has cores of its own; with torch on every core here, the
    # server's ingest would be timed as the trainer's step time in both paths alike.
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp, server_on_fresh_sqlite(Path(tmp)) as server:
        # The API takes the CPU the trainer leaves, as it would on its own cores: what
        # is timed is what logging costs the training process itself.
        api = psutil.Process(server.process.pid)
        api.nice(19)
        if args.pin and len(os.sched_getaffinity(0)) > 1:
            # Separate cores, as on a box where the API does not share the trainer's: the
            # trainer on the first, the API on the others.
            cores = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, cores[:1])
            for process in [api, *api.children(recursive=True)]:
                process.cpu_affinity(cores[1:])
        result = one_run(server, args.steps, args.block, Path(tmp))
    ratios = result.paired_ratios()
    db = statistics.median([t for block in result.step_ms["db"].values() for t in block])
    http = statistics.median([t for block in result.step_ms["http"].values() for t in block])
    print(f"one run of {args.steps} steps, blocks of {args.block} alternating between sinks:")
    print(f"  median step time: direct database sink {db:.2f} ms, HTTP (trainlens) {http:.2f} ms")
    print(
        f"  HTTP / DB, median of {len(ratios)} paired blocks: {statistics.median(ratios):.3f} "
        "(goal <= 1.01)"
    )


if __name__ == "__main__":
    main()

"""One run, in a child process of the worker: load it, train it with a database sink,
leave a result file, exit. Under torchrun every rank runs this; rank 0 writes.

    python -m trainer.job --run-id N
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from sqlalchemy import select

from app.config import Settings
from app.db import Database
from app.models import Dataset, Run, RunStatus
from trainer.config import TrainConfig
from trainer.corpus import BUILTIN_DATASET, builtin_corpus

log = logging.getLogger("trainlens.job")

RESULT_FILE = "result.json"
POLL_SECONDS = 1.0


class RunControl:
    """Asks the loop to stop when the run is no longer `running` in the database (a stop
    request, a deletion, a watchdog's verdict) or when the worker that started this
    process has died: a run must not go on training unsupervised."""

    def __init__(
        self, db: Database, run_id: int, worker_pid: int | None, stop: threading.Event
    ) -> None:
        self.db, self.run_id, self.worker_pid = db, run_id, worker_pid
        self.reason: str | None = None
        self._stop = stop
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="run-control", daemon=True)
        self._thread.start()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        self._done.set()

    def _watch(self) -> None:
        while not self._done.wait(POLL_SECONDS):
            reason = self._check()
            if reason is not None:
                self.reason = reason
                self._stop.set()
                return

    def _check(self) -> str | None:
        if self.worker_pid is not None and not _alive(self.worker_pid):
            return f"worker process {self.worker_pid} vanished"
        try:
            with self.db.session() as session:
                status = session.scalar(select(Run.status).where(Run.id == self.run_id))
        except Exception:  # a database hiccup is no reason to stop training
            log.exception("could not read the run's status")
            return None
        if status is None:
            return "run deleted"
        if status != RunStatus.running:
            return f"run is {status}"
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dataset_text(db: Database, settings: Settings, name: str) -> str:
    if name == BUILTIN_DATASET:
        return builtin_corpus()
    with db.session() as session:
        dataset = session.scalar(select(Dataset).where(Dataset.name == name))
    if dataset is None:
        raise ValueError(f"dataset {name!r} not found")
    return (settings.datasets_dir / dataset.filename).read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-id", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # Until the training loop installs its own handler (after torch has loaded and the
    # data is ready, seconds from now), a SIGTERM from the worker means "stop" too.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())

    # Imported here: the torch import is this process's business, not the worker's.
    from trainer.sink import DatabaseSink, NullSink
    from trainer.train import train

    settings = Settings()
    db = Database(settings.resolved_database_url)
    with db.session() as session:
        run = session.get(Run, args.run_id)
        if run is None:
            print(f"run {args.run_id} not found", file=sys.stderr)
            return 2
        config = TrainConfig(**run.config)
    out_dir = settings.runs_dir / str(args.run_id)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    log.info("run %d: rank %d of %d", args.run_id, rank, world)
    is_main = rank == 0
    worker_pid = os.environ.get("TRAINLENS_WORKER_PID")
    control = RunControl(db, args.run_id, int(worker_pid) if worker_pid else None, stop)
    sink = DatabaseSink(db, args.run_id) if is_main else NullSink()
    try:
        log.info("loading dataset %s", config.dataset)
        text = dataset_text(db, settings, config.dataset)
        resume = (out_dir / "ckpt_latest.pt").exists()
        result = train(config, text, out_dir, sink, control, resume=resume)
    finally:
        control.close()
        sink.close()
        db.dispose()
    if is_main:
        reason = control.reason or result.reason
        record = {"status": result.status, "step": result.step, "reason": reason}
        _write_result(out_dir, record)
    return 0


def _write_result(out_dir: Path, record: dict[str, object]) -> None:
    partial = out_dir / (RESULT_FILE + ".partial")
    partial.write_text(json.dumps(record))
    os.replace(partial, out_dir / RESULT_FILE)


if __name__ == "__main__":
    sys.exit(main())

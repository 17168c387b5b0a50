"""The worker: claims queued runs, runs each in a child process in its own process
group, heartbeats, and turns a dead child or a stale heartbeat into a clear status.

Torch-free: the worker only supervises. Each run is `python -m trainer.job` (under
`torchrun` when its config asks for nproc > 1), which imports torch in its own process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sqlalchemy import select

from app.config import Settings
from app.db import Database
from app.models import Run, RunStatus
from app.runs.lifecycle import beat, claim_next_run, mark_stale_runs, transition

log = logging.getLogger("trainlens.worker")

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULT_FILE = "result.json"
OUTPUT_LOG = "output.log"
OUTPUT_TAIL_LINES = 40


def visible_gpus() -> list[str]:
    """GPU indices this worker may use, found without importing torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [gpu for gpu in visible.split(",") if gpu.strip() not in ("", "-1")]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(index) for index, line in enumerate(listing.splitlines()) if line.startswith("GPU")]


def child_command(run_id: int, nproc: int) -> list[str]:
    job = ["-m", "trainer.job", "--run-id", str(run_id)]
    if nproc > 1:
        # One process per rank; rank 0 writes metrics. --standalone picks a free port.
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        return [sys.executable, *launcher, *job]
    return [sys.executable, *job]


def output_tail(path: Path, lines: int = OUTPUT_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Job:
    """A run this worker is training, and what it has done to it."""

    run_id: int
    process: subprocess.Popen[bytes]
    out_dir: Path
    output: IO[bytes]
    gpus: list[str]
    stop_sent_at: float | None = None
    killed: bool = False
    reason: str | None = None  # why the worker itself ended it, when it did


@dataclass
class Worker:
    settings: Settings
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    def __post_init__(self) -> None:
        self.db = Database(self.settings.resolved_database_url)
        self.gpus = visible_gpus()
        self.slots = self.settings.worker_slots or max(1, len(self.gpus))
        self.jobs: dict[int, Job] = {}
        self._last_beat = 0.0
        self._shutting_down = False

    # -- the loop ------------------------------------------------------------------------

    def run_forever(self) -> None:
        log.info("worker %s: %d slot(s), GPUs %s", self.worker_id, self.slots, self.gpus or "none")
        signal.signal(signal.SIGTERM, self._request_shutdown)
        signal.signal(signal.SIGINT, self._request_shutdown)
        try:
            while not self._shutting_down:
                self.tick()
                time.sleep(self.settings.worker_poll_seconds)
        finally:
            self.shutdown()

    def _request_shutdown(self, signum: int, _frame: object) -> None:
        self._shutting_down = True

    def tick(self) -> None:
        """One round: reap, supervise, heartbeat, watch for stale runs, claim."""
        self._reap()
        self._supervise()
        if self.settings.worker_alive_file is not None:
            self.settings.worker_alive_file.touch()
        now = time.monotonic()
        if now - self._last_beat >= self.settings.heartbeat_seconds:
            self._last_beat = now
            with self.db.session(write=True) as session:
                beat(session, self.worker_id, list(self.jobs))
                mark_stale_runs(session, self.settings.heartbeat_timeout_seconds)
        while not self._shutting_down and len(self.jobs) < self.slots and self._claim():
            pass

    def shutdown(self) -> None:
        """Stop every child gracefully (they checkpoint); runs become `interrupted`."""
        for job in self.jobs.values():
            job.reason = job.reason or f"worker {self.worker_id} shut down"
            self._signal(job, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.stop_grace_seconds
        while self.jobs and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.1)
        for job in list(self.jobs.values()):
            self._signal(job, signal.SIGKILL)
            job.process.wait()
        self._reap()
        self.db.dispose()

    # -- claiming and launching --------------------------------------------------------

    def _claim(self) -> bool:
        with self.db.session(write=True) as session:
            run = claim_next_run(session, self.worker_id)
            if run is None:
                return False
            run_id, nproc = run.id, int(run.config.get("nproc", 1))
        self._launch(run_id, nproc)
        return True

    def _free_gpus(self) -> list[str]:
        taken = {gpu for job in self.jobs.values() for gpu in job.gpus}
        return [gpu for gpu in self.gpus if gpu not in taken]

    def _launch(self, run_id: int, nproc: int) -> None:
        out_dir = self.settings.runs_dir / str(run_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / RESULT_FILE).unlink(missing_ok=True)
        gpus = self._free_gpus()[: max(1, nproc)] if self.gpus else []
        env = {
            **os.environ,
            "TRAINLENS_DATA_DIR": str(self.settings.data_dir.resolve()),
            "TRAINLENS_DATABASE_URL": self.settings.resolved_database_url,
            "TRAINLENS_WORKER_PID": str(os.getpid()),
            "PYTHONUNBUFFERED": "1",
        }
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        output = open(out_dir / OUTPUT_LOG, "ab")  # noqa: SIM115 - closed when reaped
        process = subprocess.Popen(
            child_command(run_id, nproc),
            cwd=REPO_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: signals reach every rank
        )
        self.jobs[run_id] = Job(run_id, process, out_dir, output, gpus)
        log.info("run %d: started pid %d (nproc %d, GPUs %s)", run_id, process.pid, nproc, gpus)

    # -- supervising ---------------------------------------------------------------------

    def _signal(self, job: Job, signum: int) -> None:
        try:
            os.killpg(job.process.pid, signum)
        except ProcessLookupError:
            pass
        if signum == signal.SIGTERM and job.stop_sent_at is None:
            job.stop_sent_at = time.monotonic()
        if signum == signal.SIGKILL:
            job.killed = True

    def _supervise(self) -> None:
        """Act on what the API asked: stop (graceful, then killed after the grace
        period), or deletion (killed at once)."""
        if not self.jobs:
            return
        with self.db.session() as session:
            statuses = dict(
                session.execute(select(Run.id, Run.status).where(Run.id.in_(list(self.jobs)))).all()
            )
        for run_id, job in self.jobs.items():
            status = statuses.get(run_id)
            if status is None:
                job.reason = "deleted"
                self._signal(job, signal.SIGKILL)
            elif status != RunStatus.running and job.stop_sent_at is None:
                self._signal(job, signal.SIGTERM)
            elif (
                job.stop_sent_at is not None
                and not job.killed
                and time.monotonic() - job.stop_sent_at > self.settings.stop_grace_seconds
            ):
                job.reason = f"did not stop within {self.settings.stop_grace_seconds:.0f} s; killed"
                self._signal(job, signal.SIGKILL)

    def _reap(self) -> None:
        for run_id, job in list(self.jobs.items()):
            code = job.process.poll()
            if code is None:
                continue
            del self.jobs[run_id]
            job.output.close()
            self._finish(job, code)

    def _finish(self, job: Job, code: int) -> None:
        result = _read_result(job.out_dir)
        with self.db.session(write=True) as session:
            run = session.get(Run, job.run_id)
            if run is None or run.worker_id != self.worker_id:
                return  # deleted, or given up on and claimed elsewhere
            status = RunStatus(run.status)
            if status not in (RunStatus.running, RunStatus.stopping):
                return  # already settled (e.g. marked interrupted by a watchdog)
            if job.reason and job.reason.startswith("worker "):
                transition(session, run, RunStatus.interrupted, job.reason)
            elif code == 0 and result.get("status") == "completed":
                transition(session, run, RunStatus.completed)
            elif code == 0 and result.get("status") == "stopped":
                # Asked to stop: a plain stop. Otherwise the trainer stopped on its own
                # (a non-finite loss) and its reason is the run's error text.
                reason = None if status == RunStatus.stopping else str(result.get("reason"))
                transition(session, run, RunStatus.stopped, reason)
            elif status == RunStatus.stopping and (job.killed or code == -signal.SIGTERM):
                # Asked to stop and ended by the signal: before training began (nothing to
                # checkpoint yet), or killed after the grace period.
                transition(session, run, RunStatus.stopped, job.reason)
            else:
                tail = output_tail(job.out_dir / OUTPUT_LOG)
                transition(session, run, RunStatus.failed, f"exit code {code}\n{tail}".strip())
        log.info("run %d: child exited with %d", job.run_id, code)


def _read_result(out_dir: Path) -> dict[str, object]:
    try:
        return json.loads((out_dir / RESULT_FILE).read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def main(settings: Settings) -> int:
    Worker(settings).run_forever()
    return 0

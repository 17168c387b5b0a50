"""The worker: claims queued runs from the API, runs each in a child process in its own
process group, heartbeats, hands each run's checkpoints over to the API once its child
has exited, and then reports how the child ended.

It reaches the database only through the API (`/api/workers/...`), so a worker on
another host needs the API URL and a token, nothing else:

    trainlens worker --url http://gpu-box:8000     # token: TRAINLENS_WORKER_TOKEN

Torch-free: the worker only supervises. Each run is `python -m trainer.job` (under
`torchrun` when its config asks for nproc > 1), which imports torch in its own process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from trainer.job import (
    CHECKPOINTS,
    OUTPUT_LOG,
    RESULT_FILE,
    RUN_FILE,
    RunFiles,
    shares_disk_with_api,
)
from trainer.timing import read_timing

log = logging.getLogger("trainlens.worker")

REPO_ROOT = Path(__file__).resolve().parent.parent
OUTPUT_TAIL_LINES = 40
DEFAULT_URL = "http://127.0.0.1:8000"
# A stopping process still has to exit (interpreter and torch shutdown: seconds on a
# loaded machine) after its checkpoint.
EXIT_MARGIN_SECONDS = 5.0
MAX_PREFERRED_RUNS = 1024  # the most run ids a claim may name (app/workers/schemas.py)
CPU_MAX_NPROC = 1024  # the most ranks a claim may ask for (app/workers/schemas.py)


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs; from the environment, overridden by the command line."""

    url: str = DEFAULT_URL
    token: str | None = None
    data_dir: Path = Path("./var")
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    slots: int | None = None  # default: one per visible GPU, 1 on CPU
    poll_seconds: float = 0.5
    heartbeat_seconds: float = 3.0
    stop_grace_seconds: float = 10.0
    # At shutdown, how long to wait for ended runs' checkpoints to reach the API.
    handover_seconds: float = 300.0
    alive_file: Path | None = None  # touched every round, for container health checks
    parent_pid: int | None = None  # set by `serve`: shut down when that process is gone

    @classmethod
    def from_env(cls, **overrides: Any) -> WorkerConfig:
        env = os.environ
        values: dict[str, Any] = {
            "url": env.get("TRAINLENS_URL") or DEFAULT_URL,
            "token": env.get("TRAINLENS_WORKER_TOKEN") or env.get("TRAINLENS_TOKEN") or None,
            "data_dir": Path(env.get("TRAINLENS_DATA_DIR") or "./var"),
            "poll_seconds": _env_float("TRAINLENS_WORKER_POLL_SECONDS", 0.5),
            "heartbeat_seconds": _env_float("TRAINLENS_HEARTBEAT_SECONDS", 3.0),
            "stop_grace_seconds": _env_float("TRAINLENS_STOP_GRACE_SECONDS", 10.0),
            "handover_seconds": _env_float("TRAINLENS_WORKER_HANDOVER_SECONDS", 300.0),
        }
        if env.get("TRAINLENS_WORKER_NAME"):
            values["name"] = env["TRAINLENS_WORKER_NAME"]
        if env.get("TRAINLENS_WORKER_SLOTS"):
            values["slots"] = int(env["TRAINLENS_WORKER_SLOTS"])
        if env.get("TRAINLENS_WORKER_ALIVE_FILE"):
            values["alive_file"] = Path(env["TRAINLENS_WORKER_ALIVE_FILE"])
        values.update({key: value for key, value in overrides.items() if value is not None})
        values["url"] = str(values["url"]).rstrip("/")
        return cls(**values)

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"


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
        # One process per rank; rank 0 logs metrics. --standalone picks a free port.
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        return [sys.executable, *launcher, *job]
    return [sys.executable, *job]


def output_tail(path: Path, lines: int = OUTPUT_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    # The API stores it as text: no NUL (PostgreSQL refuses it).
    return "\n".join(text.splitlines()[-lines:]).replace("\x00", "\ufffd")


def api_client(config: WorkerConfig, timeout: float) -> httpx.Client:
    """A client for the API, with the worker's token."""
    headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
    return httpx.Client(base_url=config.url, headers=headers, timeout=timeout)


class LeaseLost(Exception):
    """The API no longer knows this process by its name: register again."""


class WorkerApi:
    """The worker's calls to the API. Transport errors and 5xx raise httpx errors; the
    loop treats them as "the API is away for now" and keeps its children running."""

    def __init__(self, config: WorkerConfig, instance: str) -> None:
        self.client = api_client(config, timeout=15)
        self.name = config.name
        self.instance = instance

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        response = self.client.post(f"/api/workers{path}", json=body)
        if response.status_code == 409 and path != "/register":
            raise LeaseLost(response.text)
        response.raise_for_status()
        return response

    def register(self, slots: int) -> str | None:
        """Take the name's lease; None when taken, else why not (another live process
        holds the name)."""
        body = {
            "name": self.name,
            "instance": self.instance,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "slots": slots,
        }
        response = self.client.post("/api/workers/register", json=body)
        if response.status_code == 409:
            return str(response.json().get("detail"))
        response.raise_for_status()
        return None

    def heartbeat(self, run_ids: list[int]) -> dict[str, list[int]]:
        body = {"instance": self.instance, "runs": run_ids}
        return self._post(f"/{self.name}/heartbeat", body).json()  # type: ignore[no-any-return]

    def claim(self, max_nproc: int, prefer: list[int]) -> dict[str, Any] | None:
        body = {"instance": self.instance, "max_nproc": max_nproc, "prefer": prefer}
        response = self._post(f"/{self.name}/claim", body)
        return None if response.status_code == 204 else response.json()

    def report_outcome(self, run_id: int, outcome: dict[str, Any]) -> None:
        self._post(f"/{self.name}/runs/{run_id}/outcome", {"instance": self.instance, **outcome})

    def release(self) -> None:
        self._post(f"/{self.name}/release", {"instance": self.instance, "runs": []})

    def close(self) -> None:
        self.client.close()


@dataclass
class Job:
    """A run this worker is training, and what it has done to it."""

    run_id: int
    process: subprocess.Popen[bytes]
    out_dir: Path
    output: IO[bytes]
    gpus: list[str]
    claimed: dict[str, Any]  # as the child reads it from its run file
    stop_sent_at: float | None = None
    killed: bool = False
    reason: str | None = None  # why the worker itself ended it, when it did
    shutdown: bool = False  # ended because this worker shut down


@dataclass
class HandOver:
    """A run whose child has exited, its files on their way to the API; its outcome is
    reported once they have arrived (or failed to), so that a resume claimed after the
    outcome fetches the newest checkpoint."""

    outcome: dict[str, Any]
    thread: threading.Thread
    started_at: float


class Worker:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.api = WorkerApi(config, secrets.token_hex(8))
        self.gpus = visible_gpus()
        self.slots = config.slots or max(1, len(self.gpus))
        self.jobs: dict[int, Job] = {}
        self.handing_over: dict[int, HandOver] = {}
        self.unreported: dict[int, dict[str, Any]] = {}  # outcomes the API has not taken yet
        self._last_beat = 0.0
        self._registered = False
        self._refused = False
        self._api_away_since: float | None = None
        self._shutting_down = False
        self._held_here: set[int] | None = None  # see _checkpoints_here

    # -- the loop ------------------------------------------------------------------------

    def run_forever(self) -> None:
        log.info(
            "worker %s: %d slot(s), GPUs %s, API %s",
            self.config.name,
            self.slots,
            self.gpus or "none",
            self.config.url,
        )
        signal.signal(signal.SIGTERM, self._request_shutdown)
        signal.signal(signal.SIGINT, self._request_shutdown)
        try:
            while not self._shutting_down:
                self.tick()
                time.sleep(self.config.poll_seconds)
        finally:
            self.shutdown()

    def _request_shutdown(self, signum: int, _frame: object) -> None:
        self._shutting_down = True

    def tick(self) -> None:
        """One round, unless the `serve` that started this worker is gone."""
        if self.config.parent_pid is not None and os.getppid() != self.config.parent_pid:
            log.warning("worker %s: the serve process is gone; shutting down", self.config.name)
            self._shutting_down = True
            return
        self._round()

    def _round(self) -> None:
        """Reap, heartbeat (which carries the API's stop requests), claim."""
        self._reap()
        # Before the API is asked anything: a stop that outlasts its grace is killed even
        # while the API is away.
        self._enforce_grace()
        if self.config.alive_file is not None:
            self.config.alive_file.touch()
        try:
            self._talk_to_api()
        except LeaseLost as lost:
            log.warning("worker %s: lease lost (%s); registering again", self.config.name, lost)
            self._registered = False
        except httpx.HTTPError as error:
            if self._api_away_since is None:
                self._api_away_since = time.monotonic()
                log.warning("worker %s: API unreachable (%s); runs go on", self.config.name, error)
            return
        if self._api_away_since is not None:
            log.info("worker %s: API back", self.config.name)
            self._api_away_since = None

    def _talk_to_api(self) -> None:
        if not self._registered:
            if not self._register():
                return
        self._report_outcomes()
        # With runs going, every round asks for stop requests; idle, a beat now and then.
        now = time.monotonic()
        if self.jobs or now - self._last_beat >= self.config.heartbeat_seconds:
            self._last_beat = now
            # A run handing its files over is still this worker's until its outcome is
            # reported; one that no heartbeat names, the API's watchdog makes interrupted.
            self._obey(self.api.heartbeat([*self.jobs, *self.handing_over]))
        # A run handing its files over holds no slot: its child has exited and its GPUs
        # are free, so the next run trains while the upload goes on.
        while not self._shutting_down and len(self.jobs) < self.slots:
            # One rank per free GPU (a DDP run may have taken several: none free, no
            # claim); CPU ranks share the cores, so on CPU any run fits.
            max_nproc = len(self._free_gpus()) if self.gpus else CPU_MAX_NPROC
            if max_nproc == 0:
                break
            claimed = self.api.claim(max_nproc=max_nproc, prefer=self._checkpoints_here())
            if claimed is None:
                break
            self._launch(claimed)

    def _register(self) -> bool:
        refusal = self.api.register(self.slots)
        if refusal is not None:
            # Another live process holds this name (e.g. a survivor of a crashed serve):
            # wait for it to go or its lease to expire rather than double the slot.
            if not self._refused:
                log.warning("worker %s: %s", self.config.name, refusal)
            self._refused = True
            return False
        self._registered, self._refused = True, False
        log.info("worker %s: registered with %s", self.config.name, self.config.url)
        return True

    def shutdown(self) -> None:
        """Stop every child gracefully (they checkpoint); let their files reach the API;
        report them interrupted."""
        self._shutting_down = True  # the rounds while files upload claim nothing
        for job in self.jobs.values():
            job.shutdown = True
            job.reason = job.reason or f"worker {self.config.name} shut down"
            self._signal(job, signal.SIGTERM)
        deadline = time.monotonic() + max([0.0, *map(self._grace, self.jobs.values())])
        # Rounds, not just reaping: the runs stay this worker's while they stop (see
        # _finish_hand_overs), and those that exit start handing their files over.
        while self.jobs and time.monotonic() < deadline:
            self._round()
            time.sleep(self.config.poll_seconds)
        for job in list(self.jobs.values()):
            self._signal(job, signal.SIGKILL)
            job.process.wait()
        self._finish_hand_overs()
        try:
            self._report_outcomes()
            if self._registered:
                self.api.release()
        except (httpx.HTTPError, LeaseLost) as error:
            log.warning(
                "worker %s: could not report to the API at shutdown: %s", self.config.name, error
            )
        self.api.close()

    def _finish_hand_overs(self) -> None:
        """Wait, within the setting, for the ended runs' files to reach the API. The
        rounds go on meanwhile: a run left out of the heartbeats would be given up on by
        the API's watchdog (and could be resumed elsewhere from an older checkpoint), and
        its outcome, reported as its hand-over ends, ignored."""
        self._reap()
        deadline = time.monotonic() + self.config.handover_seconds
        while self.handing_over and time.monotonic() < deadline:
            time.sleep(self.config.poll_seconds)
            self._round()
        for run_id, handover in self.handing_over.items():
            log.warning(
                "run %d: hand-over abandoned at shutdown after %.0f s "
                "(TRAINLENS_WORKER_HANDOVER_SECONDS); the API may hold an older checkpoint "
                "than this host's",
                run_id,
                time.monotonic() - handover.started_at,
            )
            self.unreported[run_id] = handover.outcome
        self.handing_over.clear()

    # -- launching -------------------------------------------------------------------------

    def _checkpoints_here(self) -> list[int]:
        """Runs whose checkpoint this host holds apart from the API's disk (the newest
        1,024): the API gives these to this worker first when they are queued again."""
        if self._held_here is None:  # once per process: what earlier lives left here
            self._held_here = set()
            for info in self.config.runs_dir.glob(f"*/{RUN_FILE}"):
                held = info.parent
                if held.name.isdigit() and (held / CHECKPOINTS[0]).exists():
                    try:
                        claimed = json.loads(info.read_text())
                        if not shares_disk_with_api(claimed, held):
                            self._held_here.add(int(held.name))
                    except (OSError, ValueError, KeyError, TypeError):
                        continue  # a folder this worker did not write whole
        return sorted(self._held_here)[-MAX_PREFERRED_RUNS:]

    def _free_gpus(self) -> list[str]:
        taken = {gpu for job in self.jobs.values() for gpu in job.gpus}
        return [gpu for gpu in self.gpus if gpu not in taken]

    def _launch(self, claimed: dict[str, Any]) -> None:
        run_id = int(claimed["id"])
        nproc = int(claimed["config"].get("nproc", 1))
        out_dir = self.config.runs_dir / str(run_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / RESULT_FILE).unlink(missing_ok=True)
        # The run's files are handed over under this worker's name and lease.
        claimed = {**claimed, "worker": {"name": self.config.name, "instance": self.api.instance}}
        (out_dir / RUN_FILE).write_text(json.dumps(claimed))
        gpus = self._free_gpus()[: max(1, nproc)] if self.gpus else []
        env = {
            **os.environ,
            "TRAINLENS_URL": self.config.url,
            "TRAINLENS_DATA_DIR": str(self.config.data_dir.resolve()),
            "TRAINLENS_WORKER_PID": str(os.getpid()),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("TRAINLENS_DATABASE_URL", None)  # the child reaches the API, not the database
        if self.config.token:
            env["TRAINLENS_WORKER_TOKEN"] = self.config.token
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
        self.jobs[run_id] = Job(run_id, process, out_dir, output, gpus, claimed)
        log.info("run %d: started pid %d (nproc %d, GPUs %s)", run_id, process.pid, nproc, gpus)

    # -- supervising -------------------------------------------------------------------------

    def _signal(self, job: Job, signum: int) -> None:
        try:
            os.killpg(job.process.pid, signum)
        except ProcessLookupError:
            pass
        if signum == signal.SIGTERM and job.stop_sent_at is None:
            job.stop_sent_at = time.monotonic()
        if signum == signal.SIGKILL:
            job.killed = True

    def _obey(self, directives: dict[str, list[int]]) -> None:
        """Stop (gracefully) what the API asks to stop; kill what was deleted."""
        for run_id in directives.get("kill", []):
            if run_id in self.jobs:
                self.jobs[run_id].reason = "deleted, or given to another worker"
                self._signal(self.jobs[run_id], signal.SIGKILL)
        for run_id in directives.get("stop", []):
            job = self.jobs.get(run_id)
            if job is not None and job.stop_sent_at is None:
                self._signal(job, signal.SIGTERM)

    def _grace(self, job: Job) -> float:
        """How long a stop may take before SIGKILL: the setting, or more for a run whose
        measured steps and checkpoint writes are slow (the loop stops between
        micro-batches, then writes a checkpoint, then the process exits)."""
        timing = read_timing(job.out_dir)
        needed = (
            2 * timing.get("step_seconds", 0.0)
            + 2 * timing.get("checkpoint_seconds", 0.0)
            + EXIT_MARGIN_SECONDS
        )
        return max(self.config.stop_grace_seconds, needed)

    def _enforce_grace(self) -> None:
        for job in self.jobs.values():
            if job.stop_sent_at is not None and not job.killed:
                grace = self._grace(job)
                if time.monotonic() - job.stop_sent_at > grace:
                    # A shutdown's stop keeps its own reason (the shutdown).
                    job.reason = job.reason or f"did not stop within {grace:.0f} s; killed"
                    self._signal(job, signal.SIGKILL)

    def _reap(self) -> None:
        """Children that exited hand their runs' files over; hand-overs that ended
        leave their outcomes to report."""
        for run_id, job in list(self.jobs.items()):
            code = job.process.poll()
            if code is None:
                continue
            del self.jobs[run_id]
            job.output.close()
            log.info("run %d: child exited with %d", run_id, code)
            outcome = self._outcome(job, code)
            # Nothing to move on the API's own disk, nor when the run's folder is gone
            # (the run was deleted while it trained).
            if not job.out_dir.is_dir() or shares_disk_with_api(job.claimed, job.out_dir):
                self.unreported[run_id] = outcome
                continue
            if (job.out_dir / CHECKPOINTS[0]).exists() and self._held_here is not None:
                self._held_here.add(run_id)
            # On a thread: a large checkpoint may take minutes to upload, while the loop
            # must go on heartbeating and supervising the other runs.
            thread = threading.Thread(
                target=self._hand_over, args=(job,), name=f"hand-over-{run_id}", daemon=True
            )
            thread.start()
            self.handing_over[run_id] = HandOver(outcome, thread, time.monotonic())
        for run_id, handover in list(self.handing_over.items()):
            if not handover.thread.is_alive():
                del self.handing_over[run_id]
                self.unreported[run_id] = handover.outcome

    def _hand_over(self, job: Job) -> None:
        """Upload the run's checkpoints and output log, whatever way its child ended:
        the checkpoints on disk are whole (written atomically), even when the child was
        killed mid-step, so any host can resume from the newest."""
        started = time.monotonic()
        with api_client(self.config, timeout=60) as client:
            RunFiles(client, job.claimed, job.out_dir).hand_over()
        log.info("run %d: hand-over done in %.1f s", job.run_id, time.monotonic() - started)

    def _outcome(self, job: Job, code: int) -> dict[str, Any]:
        result = _read_result(job.out_dir)
        status = result.get("status")
        return {
            "result": status if status in ("completed", "stopped") else "none",
            "exit_code": code,
            "killed": job.killed,
            "worker_shutdown": job.shutdown,
            "reason": job.reason or result.get("reason"),
            "output_tail": output_tail(job.out_dir / OUTPUT_LOG),
        }

    def _report_outcomes(self) -> None:
        for run_id, outcome in list(self.unreported.items()):
            try:
                self.api.report_outcome(run_id, outcome)
            except httpx.HTTPStatusError as refused:
                # A 4xx will not change on a retry (a run deleted while it trained is a
                # 404): kept, it would fail every later round before its heartbeat.
                if not refused.response.is_client_error:
                    raise
                log.warning(
                    "run %d: the API refused its outcome (%d %s); dropped",
                    run_id,
                    refused.response.status_code,
                    refused.response.text[:200],
                )
            del self.unreported[run_id]


def _read_result(out_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((out_dir / RESULT_FILE).read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainlens worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help=f"the API (TRAINLENS_URL; default {DEFAULT_URL})")
    parser.add_argument("--data-dir", type=Path, help="checkpoints and caches (TRAINLENS_DATA_DIR)")
    parser.add_argument("--name", help="this worker's name (default host:pid)")
    parser.add_argument(
        "--slots", type=int, help="concurrent runs (default: one per GPU, 1 on CPU)"
    )
    parser.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not every heartbeat
    config = WorkerConfig.from_env(
        url=args.url,
        data_dir=args.data_dir,
        name=args.name,
        slots=args.slots,
        parent_pid=args.parent_pid,
    )
    Worker(config).run_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())

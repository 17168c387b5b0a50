"""`trainlens serve | worker | migrate | train` (the client commands live in `trainlens.cli`)."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import uvicorn

from app.config import Settings


class QuietWorkerPolls(logging.Filter):
    """Drops the access-log lines of workers' routine polls that succeeded: an idle
    worker claims twice a second and heartbeats every few seconds, and those lines would
    bury everything else `make run` prints. A refused poll (4xx, 5xx) is still logged."""

    # uvicorn's access record: (client, method, path with query, HTTP version, status)
    POLL = re.compile(r"/api/workers/[^/?]+/(claim|heartbeat)(\?|$)")

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple) or len(args) != 5:
            return True
        _, method, path, _, status = args
        quiet = method == "POST" and str(status).startswith("2") and self.POLL.match(str(path))
        return not quiet


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        name: value
        for name, value in (
            ("host", getattr(args, "host", None)),
            ("port", getattr(args, "port", None)),
            ("data_dir", getattr(args, "data_dir", None)),
            ("database_url", getattr(args, "database_url", None)),
        )
        if value is not None
    }
    if getattr(args, "no_worker", False):
        overrides["embedded_worker"] = False
    if getattr(args, "auto_migrate", False):
        overrides["auto_migrate"] = True
    return Settings(**overrides)


NO_TOKEN_REFUSAL = """\
trainlens: refusing to serve on {host} without a token: anyone who can reach this port
could launch, stop and delete runs. Make a token and set it:
    export TRAINLENS_TOKEN="$(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
Scripts send it as `Authorization: Bearer <token>`; the dashboard asks for it once.
(Or serve on 127.0.0.1, or pass --insecure-no-auth if another layer guards the port.)"""


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    from app.db import make_engine
    from app.main import create_app
    from app.migrations import SchemaOutOfDate, check_schema

    settings = _settings(args)
    if settings.token is None and not is_loopback(settings.host):
        if not args.insecure_no_auth:
            print(NO_TOKEN_REFUSAL.format(host=settings.host), file=sys.stderr)
            return 2
        print(
            f"trainlens: WARNING: serving {settings.host} WITHOUT A TOKEN "
            "(--insecure-no-auth): anyone who can reach this port can launch, stop "
            "and delete runs.",
            file=sys.stderr,
        )
    engine = make_engine(settings.resolved_database_url)
    try:
        check_schema(engine, settings.resolved_database_url, settings.auto_migrate)
    except SchemaOutOfDate as error:
        print(f"trainlens: {error}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    app = create_app(settings)
    print(f"trainlens: serving http://{settings.host}:{settings.port}", file=sys.stderr)
    worker = EmbeddedWorker(settings) if settings.embedded_worker else None
    # Live streams never end on their own; browsers reconnect and resume, so a restart
    # waits only briefly for them.
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=2,
    )
    logging.getLogger("uvicorn.access").addFilter(QuietWorkerPolls())  # after uvicorn's setup
    server = ServerStoppingWorkerFirst(config, worker)
    if worker is not None:
        worker.start()
    try:
        server.run()
    finally:
        if worker is not None:
            worker.stop()
    return 0


class ServerStoppingWorkerFirst(uvicorn.Server):
    """On SIGTERM or SIGINT, stop the embedded worker while the API still serves (its
    runs checkpoint, their last rows and outcomes reach the API), then stop serving.
    A second signal stops serving at once."""

    def __init__(self, config: uvicorn.Config, worker: EmbeddedWorker | None) -> None:
        super().__init__(config)
        self.worker = worker
        self._stopping_worker = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.worker is None or self._stopping_worker:
            super().handle_exit(sig, frame)
            return
        self._stopping_worker = True

        def stop_worker_then_serving() -> None:
            assert self.worker is not None
            self.worker.stop()
            super(ServerStoppingWorkerFirst, self).handle_exit(sig, frame)
            # Exit normally afterwards: uvicorn would re-raise the signal, which would
            # skip the rest of our shutdown.
            self._captured_signals.clear()

        threading.Thread(target=stop_worker_then_serving, name="stop-worker").start()


class EmbeddedWorker:
    """The one local worker `serve` runs, as a separate process (the API process never
    imports torch, and a worker crash never takes the API down). It reaches the API over
    loopback like any remote worker; restarted with backoff when it dies; it shuts down
    by itself if `serve` is killed outright."""

    BACKOFF_MAX_SECONDS = 30.0
    HEALTHY_AFTER_SECONDS = 60.0  # a worker that lived this long resets the backoff

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        host = settings.host
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self.url = f"http://{host}:{settings.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, name="embedded-worker", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        env = {**os.environ, "TRAINLENS_DATA_DIR": str(self.settings.data_dir.resolve())}
        env.pop("TRAINLENS_DATABASE_URL", None)  # it reaches the API, not the database
        token = self.settings.worker_token or self.settings.token
        if token:
            env["TRAINLENS_WORKER_TOKEN"] = token
        command = [
            sys.executable,
            "-m",
            "trainer.worker",
            "--url",
            self.url,
            "--name",
            f"{socket.gethostname()}:embedded",
            "--parent-pid",
            str(os.getpid()),
        ]
        with self._lock:
            if self._stop.is_set():
                return
            # Its own session: a terminal's Ctrl-C reaches serve, which stops the worker
            # in order, rather than every process at once.
            self.process = subprocess.Popen(command, env=env, start_new_session=True)

    def _supervise(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            process = self.process
            if process is None:
                return
            started = time.monotonic()
            code = process.wait()
            if self._stop.is_set():
                return
            if time.monotonic() - started > self.HEALTHY_AFTER_SECONDS:
                backoff = 1.0
            print(
                f"trainlens: the embedded worker exited with {code}; restarting in {backoff:.0f} s",
                file=sys.stderr,
            )
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, self.BACKOFF_MAX_SECONDS)
            self.restarts += 1
            self._spawn()

    def stop(self) -> None:
        """SIGTERM: the worker stops its runs gracefully (they checkpoint and become
        resumable); after the grace period and a margin, its process group is killed."""
        with self._lock:
            self._stop.set()
            process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            # The worker sizes each run's grace from its measured steps; allow for that.
            process.wait(timeout=self.settings.stop_grace_seconds + 30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def cmd_worker(argv: list[str]) -> int:
    """A worker reaches the API, not the database. This process becomes
    `python -m trainer.worker` (exec: same pid, signals reach it), so this package never
    imports the trainer."""
    os.execv(sys.executable, [sys.executable, "-m", "trainer.worker", *argv])


def cmd_migrate(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import OperationalError

    from app.migrations import upgrade_to_head

    settings = _settings(args)
    deadline = time.monotonic() + args.wait
    while True:
        try:
            revision = upgrade_to_head(settings.resolved_database_url)
            break
        except OperationalError as error:
            if time.monotonic() >= deadline:
                print(f"trainlens: cannot reach the database: {error}", file=sys.stderr)
                return 1
            time.sleep(1)
    print(f"trainlens: database at schema revision {revision}")
    return 0


def cmd_train(argv: list[str]) -> int:
    # Training imports torch: this process becomes the trainer's (exec), so this package
    # never imports it.
    os.execv(sys.executable, [sys.executable, "-m", "trainer.cli", *argv])


def _add_storage_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="default ./var (TRAINLENS_DATA_DIR)")
    parser.add_argument("--database-url", help="default SQLite under the data dir")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainlens", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="the API and the dashboard (and a local worker)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    _add_storage_args(serve)
    serve.add_argument("--no-worker", action="store_true", help="do not start a local worker")
    serve.add_argument(
        "--auto-migrate",
        action="store_true",
        help="apply migrations first (TRAINLENS_AUTO_MIGRATE)",
    )
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow a non-loopback --host without TRAINLENS_TOKEN (not recommended)",
    )
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(handler=cmd_serve)

    commands.add_parser("worker", help="claim and train queued runs (see `trainlens worker -h`)")

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    _add_storage_args(migrate)
    migrate.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="keep retrying while the database cannot be reached (it may still be starting)",
    )
    migrate.set_defaults(handler=cmd_migrate)

    commands.add_parser("train", help="train a model on its own (see `trainlens train -h`)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if argv and argv[0] == "train":
        # The trainer owns its flags (one per TrainConfig field).
        return cmd_train(argv[1:])
    if argv and argv[0] == "worker":
        return cmd_worker(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())

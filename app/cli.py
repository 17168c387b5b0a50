"""`trainlens serve | worker | migrate | train`."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.config import Settings


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
    import uvicorn

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
    with embedded_worker(settings):
        # Live streams never end on their own; browsers reconnect and resume, so a
        # restart waits only briefly for them.
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level=args.log_level,
            timeout_graceful_shutdown=2,
        )
    return 0


@contextmanager
def embedded_worker(settings: Settings) -> Iterator[None]:
    """`serve` runs one local worker beside itself, as a separate process: the API
    process never imports torch, and a worker crash never takes the API down."""
    if not settings.embedded_worker:
        yield
        return
    env = {
        **os.environ,
        "TRAINLENS_DATA_DIR": str(settings.data_dir.resolve()),
        "TRAINLENS_DATABASE_URL": settings.resolved_database_url,
    }
    worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env)
    try:
        yield
    finally:
        worker.terminate()  # it stops its runs gracefully; they become resumable
        try:
            worker.wait(timeout=settings.stop_grace_seconds + 5)
        except subprocess.TimeoutExpired:
            worker.kill()


def cmd_worker(args: argparse.Namespace) -> int:
    from app.db import make_engine
    from app.migrations import SchemaOutOfDate, check_schema
    from trainer.worker import main as worker_main

    settings = _settings(args)
    engine = make_engine(settings.resolved_database_url)
    try:
        check_schema(engine, settings.resolved_database_url, auto_migrate=False)
    except SchemaOutOfDate as error:
        print(f"trainlens: {error}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if args.slots is not None:
        settings.worker_slots = args.slots
    return worker_main(settings)


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
    from trainer.cli import main as train_main

    return train_main(argv)


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

    worker = commands.add_parser("worker", help="claim and train queued runs")
    _add_storage_args(worker)
    worker.add_argument(
        "--slots", type=int, help="concurrent runs (default: one per GPU, 1 on CPU)"
    )
    worker.set_defaults(handler=cmd_worker)

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
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())

"""Shared fixtures: databases (SQLite, and PostgreSQL when configured), the app, and a
live server in a subprocess for streaming and browser tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.config import Settings
from app.migrations import upgrade_to_head

ROOT = Path(__file__).resolve().parent.parent
# Starlette's TestClient sends `Host: testserver`; allow it beside the loopback names, as
# Django's test runner adds 'testserver' to ALLOWED_HOSTS. Tests of the Host allowlist
# pass allowed_hosts explicitly.
os.environ.setdefault("TRAINLENS_ALLOWED_HOSTS", "testserver")
POSTGRES_URL = os.environ.get("TRAINLENS_TEST_POSTGRES_URL")
REQUIRE_POSTGRES = os.environ.get("TRAINLENS_REQUIRE_POSTGRES") == "1"


def _admin_url(url: str) -> str:
    return make_url(url).set(database="postgres").render_as_string(hide_password=False)


def _postgres_template() -> str:
    """A migrated database that each test's database is cloned from (fast, and every
    test starts from exactly the migrations)."""
    if POSTGRES_URL is None:
        message = "TRAINLENS_TEST_POSTGRES_URL is not set"
        if REQUIRE_POSTGRES:
            pytest.fail(f"{message}, but TRAINLENS_REQUIRE_POSTGRES=1")
        pytest.skip(message)
    base = make_url(POSTGRES_URL)
    template = f"{base.database}_tpl_{os.getpid()}"
    engine = create_engine(_admin_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{template}"'))
        conn.execute(text(f'CREATE DATABASE "{template}"'))
    engine.dispose()
    upgrade_to_head(base.set(database=template).render_as_string(hide_password=False))
    return template


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    template = _postgres_template()
    yield template
    engine = create_engine(_admin_url(POSTGRES_URL or ""), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))
    engine.dispose()


def _fresh_postgres(template: str) -> Iterator[str]:
    assert POSTGRES_URL is not None
    name = f"{make_url(POSTGRES_URL).database}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(_admin_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: SQLite, and PostgreSQL when configured."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'trainlens.db'}"
        upgrade_to_head(url)
        yield url
    else:
        yield from _fresh_postgres(request.getfixturevalue("postgres_template"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite database, for tests about SQLite itself or the HTTP surface."""
    url = f"sqlite:///{tmp_path / 'trainlens.db'}"
    upgrade_to_head(url)
    return url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url, embedded_worker=False)


@pytest.fixture
def client(settings: Settings) -> Iterator[httpx.Client]:
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(settings)) as test_client:
        yield test_client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """`trainlens serve` in a subprocess, as a user would run it."""

    def __init__(
        self,
        data_dir: Path,
        database_url: str,
        extra_env: dict[str, str] | None = None,
        worker: bool = False,
        log_level: str = "warning",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.database_url = database_url
        self.log_path = data_dir / "serve.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "TRAINLENS_DATA_DIR": str(data_dir),
            "TRAINLENS_DATABASE_URL": database_url,
            "TRAINLENS_PORT": str(self.port),
            "TRAINLENS_AUTO_MIGRATE": "1",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        args = [sys.executable, "-m", "app.cli", "serve", "--log-level", log_level]
        if not worker:
            args.append("--no-worker")
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server not ready: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        stop_process_tree(self.process, timeout=40)
        self._log.close()


@contextmanager
def server_on_fresh_sqlite(root: Path) -> Iterator[LiveServer]:
    """A ready `trainlens serve` (no worker) on a new SQLite database under `root`, for
    benchmarks and scripts outside pytest's fixtures; stopped with its whole tree."""
    url = f"sqlite:///{root / 'trainlens.db'}"
    upgrade_to_head(url)
    server = LiveServer(root / "data", url)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def stop_process_tree(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, as a user's Ctrl-C or `docker stop` would, so the process stops its own
    children gracefully; after `timeout`, SIGKILL it. Either way, any descendant still
    alive then (an embedded worker, a training child in its own process group) is killed
    too: a test never leaves a process behind."""
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for child in descendants:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(descendants, timeout=10)


def leftover_processes() -> list[psutil.Process]:
    """Processes of this checkout's commands (`app.cli`, `trainer.*`, `trainlens`) run by
    this interpreter that outlived the test that started them (reparented to init)."""
    found = []
    for candidate in psutil.process_iter(["pid", "ppid", "cmdline"]):
        cmdline = candidate.info["cmdline"] or []
        if candidate.info["ppid"] != 1 or not cmdline or cmdline[0] != sys.executable:
            continue
        if any(part.startswith(("app.cli", "trainer.", "trainlens")) for part in cmdline[1:]):
            found.append(candidate)
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leftovers = leftover_processes()
    if not leftovers:
        return
    for process in leftovers:
        process.kill()
    names = "; ".join(" ".join(p.info["cmdline"])[:120] for p in leftovers)
    print(f"\nFAILED: the suite left {len(leftovers)} process(es) running: {names}")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _serve(data_dir: Path, database_url: str, **kwargs: object) -> Iterator[LiveServer]:
    server = LiveServer(data_dir, database_url, **kwargs)  # type: ignore[arg-type]
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    """A live server on each test database (SQLite, and PostgreSQL when configured)."""
    yield from _serve(tmp_path / "live", database_url)


@pytest.fixture
def live_server(tmp_path: Path, sqlite_url: str) -> Iterator[LiveServer]:
    """A live server on SQLite."""
    yield from _serve(tmp_path / "live", sqlite_url)

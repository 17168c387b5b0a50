"""Fixtures for the worker tests: a live API and worker processes the test controls."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.conftest import ROOT, LiveServer, stop_process_tree

T = TypeVar("T")

# Fast lifecycle timings, so the tests wait seconds, not minutes.
LIFECYCLE_ENV = {
    "TRAINLENS_HEARTBEAT_SECONDS": "0.5",
    "TRAINLENS_HEARTBEAT_TIMEOUT_SECONDS": "4",
    "TRAINLENS_WORKER_POLL_SECONDS": "0.2",
    "TRAINLENS_STOP_GRACE_SECONDS": "8",
}

# A model that trains at well over 10 steps/s on one CPU core.
TINY = {
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 32,
    "block_size": 32,
    "batch_size": 8,
    "warmup_steps": 2,
    "eval_interval": 10,
    "eval_batches": 2,
    "instrument_interval": 5,
    "checkpoint_interval": 10,
    "sample_interval": 20,
    "device": "cpu",
}


def wait_for(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll a condition until it holds (returns something truthy) or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


class WorkerProcess:
    """`trainlens worker --url ...` in a subprocess: it reaches the API only (no database
    URL), with its own data directory when given one."""

    def __init__(
        self,
        server: LiveServer,
        name: str = "worker",
        data_dir: Path | None = None,
        args: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        self.data_dir = data_dir or server.data_dir
        self.log_path = server.data_dir / f"{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        environment = {
            **os.environ,
            **LIFECYCLE_ENV,
            "TRAINLENS_DATA_DIR": str(self.data_dir),
            "TRAINLENS_WORKER_NAME": name,
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        environment.pop("TRAINLENS_DATABASE_URL", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trainer.worker", "--url", server.url, *args],
            cwd=ROOT,
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        stop_process_tree(self.process, timeout=30)
        self._log.close()


class Api:
    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.client = httpx.Client(base_url=server.url, timeout=30)

    def launch(self, name: str = "run", **config: Any) -> int:
        response = self.client.post("/api/runs", json={"name": name, "config": {**TINY, **config}})
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def run(self, run_id: int) -> dict[str, Any]:
        response = self.client.get(f"/api/runs/{run_id}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def status_is(self, run_id: int, *statuses: str) -> dict[str, Any] | None:
        run = self.run(run_id)
        return run if run["status"] in statuses else None

    def loss_steps(self, run_id: int) -> list[int]:
        answer = self.client.get(
            f"/api/runs/{run_id}/metrics", params={"keys": "train/loss", "max_points": 100_000}
        ).json()
        return answer["series"]["train/loss"]["steps"]  # type: ignore[no-any-return]


@pytest.fixture
def api(tmp_path: Path, database_url: str) -> Iterator[Api]:
    """A live API (no embedded worker) on each test database, with fast lifecycle timings."""
    server = LiveServer(tmp_path / "live", database_url, extra_env=LIFECYCLE_ENV)
    try:
        server.wait_ready()
        client = Api(server)
        yield client
        client.client.close()
    finally:
        server.stop()


@pytest.fixture
def worker(api: Api) -> Iterator[WorkerProcess]:
    process = WorkerProcess(api.server)
    yield process
    process.stop()

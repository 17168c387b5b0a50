"""Stalled or crashed, told apart by the client's heartbeats: a script that hangs while
its heartbeat thread beats on is `stalled` (a finding, the run still running); a script
whose process dies stops beating and its run becomes `crashed`, with no `stalled`
finding on the way. Real scripts using `trainlens`, in subprocesses."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.migrations import upgrade_to_head
from tests.conftest import ROOT, LiveServer

SCRIPT = """
import os, sys, time
import trainlens

run = trainlens.init(
    name=sys.argv[2], url=sys.argv[1], heartbeat_interval=0.2, system_metrics=False,
    config={"rules": {"stalled": {"timeout_seconds": 1.0, "interval_multiple": 5,
                                  "gap_multiple": 1.5}}},
)
for step in range(30):
    run.log({"train/loss": 3.0 - step * 0.01}, step=step)
    time.sleep(0.01)
assert run.flush(timeout=10)
print(run.id, flush=True)
if sys.argv[2] == "dies":
    os._exit(1)  # killed: no finish, no more heartbeats
time.sleep(600)  # hung: the heartbeat thread beats on
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    directory: Path = tmp_path_factory.mktemp("heartbeat")
    url = f"sqlite:///{directory / 'trainlens.db'}"
    upgrade_to_head(url)
    env = {
        "TRAINLENS_RULES_CLOCK_SECONDS": "0.2",
        "TRAINLENS_HEARTBEAT_SECONDS": "0.2",  # the watchdog's period
        "TRAINLENS_EXTERNAL_HEARTBEAT_TIMEOUT_SECONDS": "2.5",
    }
    live = LiveServer(directory / "live", url, env)
    try:
        live.wait_ready()
        yield live
    finally:
        live.stop()


def _wait(client: httpx.Client, run_id: int, done: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not done(client, run_id):
        assert time.monotonic() < deadline, client.get(f"/api/runs/{run_id}").json()
        time.sleep(0.1)


def _codes(client: httpx.Client, run_id: int) -> list[str]:
    return [f["code"] for f in client.get(f"/api/runs/{run_id}/findings").json()]


def _status(client: httpx.Client, run_id: int) -> str:
    return str(client.get(f"/api/runs/{run_id}").json()["status"])


def test_a_hung_script_is_stalled_and_a_dead_one_crashed(server: LiveServer) -> None:
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-c", SCRIPT, server.url, name],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for name in ("hangs", "dies")
    }
    try:
        ids = {name: int(p.stdout.readline()) for name, p in processes.items()}  # type: ignore[union-attr]
        with httpx.Client(base_url=server.url) as client:
            _wait(client, ids["hangs"], lambda c, i: "stalled" in _codes(c, i))
            assert _status(client, ids["hangs"]) == "running"
            _wait(client, ids["dies"], lambda c, i: _status(c, i) == "crashed")
            assert "stalled" not in _codes(client, ids["dies"])
            # The hung one's heartbeats keep it running past the crash timeout.
            assert _status(client, ids["hangs"]) == "running"
    finally:
        for process in processes.values():
            process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()

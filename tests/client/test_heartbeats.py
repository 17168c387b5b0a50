"""Heartbeats tell a crashed script (killed: heartbeats stop, the run becomes `crashed`
within the timeout) from a hung one (heartbeats go on, no new step: still running, for
the `stalled` rule to judge by `last_step_at`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.client.conftest import run_detail, wait_for
from tests.conftest import ROOT, LiveServer

SCRIPT = """
import sys, time, trainlens
run = trainlens.init(sys.argv[1], url=sys.argv[2], heartbeat_interval=0.3,
                     offline_dir=sys.argv[3], system_metrics=False)
for step in range(5):
    run.log({"train/loss": 1.0}, step=step)
run.flush()
print("ready", run.id, flush=True)
time.sleep(600)  # hung: no more steps, but the process (and its heartbeat) lives on
"""


@pytest.fixture
def fast_watchdog_server(tmp_path: Path, sqlite_url: str) -> Iterator[LiveServer]:
    env = {
        "TRAINLENS_EXTERNAL_HEARTBEAT_TIMEOUT_SECONDS": "3",
        "TRAINLENS_HEARTBEAT_SECONDS": "0.5",  # the watchdog's period
    }
    server = LiveServer(tmp_path / "live", sqlite_url, extra_env=env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _start(
    script: Path, name: str, server: LiveServer, tmp_path: Path
) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, str(script), name, server.url, str(tmp_path / "runs")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().split()
    assert line[:1] == ["ready"], line
    return process, int(line[1])


def test_a_killed_script_crashes_and_a_hung_one_keeps_running(
    fast_watchdog_server: LiveServer, tmp_path: Path
) -> None:
    server = fast_watchdog_server
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT))
    hung, hung_id = _start(script, "hung", server, tmp_path)
    killed, killed_id = _start(script, "killed", server, tmp_path)
    try:
        step_at = run_detail(server, hung_id)["last_step_at"]
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        killed_at = time.monotonic()
        wait_for(lambda: run_detail(server, killed_id)["status"] == "crashed", 15, "crashed")
        assert time.monotonic() - killed_at < 10  # timeout 3 s + a watchdog period
        detail = run_detail(server, killed_id)
        assert "no heartbeat" in detail["error"] and detail["last_step"] == 4
        # Well past the timeout, the hung script still beats: running, no new step.
        time.sleep(0.1)
        wait_for(lambda: time.monotonic() - killed_at > 4, 10, "a full timeout")
        detail = run_detail(server, hung_id)
        assert detail["status"] == "running"
        assert detail["last_step"] == 4 and detail["last_step_at"] == step_at
        assert detail["heartbeat_at"] > step_at + 3
    finally:
        for process in (hung, killed):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_a_heartbeat_brings_a_crashed_run_back(
    fast_watchdog_server: LiveServer,
) -> None:
    server = fast_watchdog_server
    run = httpx.post(f"{server.url}/api/runs", json={"source": "external"}).json()
    wait_for(lambda: run_detail(server, run["id"])["status"] == "crashed", 15, "crashed")
    # The script was only out of reach (a network outage): its next beat revives the run.
    assert httpx.post(f"{server.url}/api/runs/{run['id']}/heartbeat").status_code == 204
    detail = run_detail(server, run["id"])
    assert detail["status"] == "running" and detail["error"] is None
    # and it can still end as it wishes
    finished = httpx.post(f"{server.url}/api/runs/{run['id']}/finish", json={"status": "completed"})
    assert finished.json()["status"] == "completed"

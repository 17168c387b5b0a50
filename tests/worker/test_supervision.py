"""Processes, supervised: `serve` stops its worker and the worker's training child in
order on SIGTERM (the run checkpoints and resumes with no step lost or repeated); a
killed `serve` leaves nothing behind and its successor gets the worker slot once the
old lease is gone; a dead embedded worker is restarted and /healthz says so. Real
processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import LiveServer
from tests.worker.conftest import LIFECYCLE_ENV, Api, wait_for


def _serve(data_dir: Path, database_url: str) -> tuple[LiveServer, Api]:
    server = LiveServer(data_dir, database_url, extra_env=LIFECYCLE_ENV, worker=True)
    server.wait_ready()
    return server, Api(server)


def _family(server: LiveServer) -> list[psutil.Process]:
    return psutil.Process(server.process.pid).children(recursive=True)


def _running(processes: list[psutil.Process], module: str) -> list[psutil.Process]:
    found = []
    for process in processes:
        try:
            if module in process.cmdline() and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def _workers_alive(api: Api) -> int:
    return int(api.client.get("/healthz").json()["workers_alive"])


def test_sigterm_to_serve_stops_worker_and_run_with_a_checkpoint(
    tmp_path: Path, database_url: str
) -> None:
    data_dir = tmp_path / "live"
    server, api = _serve(data_dir, database_url)
    try:
        run_id = api.launch(max_steps=100_000, checkpoint_interval=1_000)
        wait_for(lambda: (api.run(run_id)["last_step"] or 0) >= 5, 120, "training to start")
        family = _family(server)
        assert _running(family, "trainer.worker") and _running(family, "trainer.job")
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
        _, alive = psutil.wait_procs(family, timeout=5)
        assert alive == [], [p.cmdline() for p in alive]
    finally:
        server.stop()
    # The run stopped in order: a checkpoint beyond the last periodic one (there was none
    # before step 1,000), its last rows and its outcome reached the API before it stopped.
    assert (data_dir / "runs" / str(run_id) / "ckpt_latest.pt").exists()
    server, api = _serve(data_dir, database_url)
    try:
        run = api.run(run_id)
        assert run["status"] == "interrupted" and "shut down" in run["error"]
        stopped_at = run["last_step"]
        assert api.client.post(f"/api/runs/{run_id}/resume").status_code == 200
        wait_for(lambda: api.run(run_id)["last_step"] >= stopped_at + 5, 120, "the resume")
        steps = api.loss_steps(run_id)
        assert steps == list(range(len(steps)))  # nothing lost, nothing logged twice
    finally:
        server.stop()


def test_a_killed_serve_leaves_nothing_and_its_successor_gets_the_worker_slot(
    tmp_path: Path, database_url: str
) -> None:
    data_dir = tmp_path / "live"
    server, api = _serve(data_dir, database_url)
    try:
        wait_for(lambda: _workers_alive(api) == 1, 60, "the embedded worker")
        family = _family(server)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        # The orphaned worker notices its serve is gone and shuts down by itself.
        _, alive = psutil.wait_procs(family, timeout=30)
        assert alive == [], [p.cmdline() for p in alive]
    finally:
        server.stop()
    successor, api = _serve(data_dir, database_url)
    try:
        # The dead worker's lease expires (4 s here), then the new one takes the slot:
        # one lease for the name throughout, now held by the successor's worker.
        def successor_holds_the_slot() -> bool:
            workers = api.client.get("/api/workers").json()
            assert len(workers) == 1
            family = [p.pid for p in _family(successor)]
            return workers[0]["alive"] and workers[0]["pid"] in family

        wait_for(successor_holds_the_slot, 60, "the successor's worker")
        assert _workers_alive(api) == 1
    finally:
        successor.stop()


def test_a_second_process_cannot_take_a_live_lease_until_it_expires(api: Api) -> None:
    hello = {"name": "box:embedded", "host": "box", "pid": 1234, "slots": 1}
    first = api.client.post("/api/workers/register", json={**hello, "instance": "first-0001"})
    assert first.status_code == 200
    second = {**hello, "pid": 5678, "instance": "second-002"}
    refused = api.client.post("/api/workers/register", json=second)
    assert refused.status_code == 409 and "pid 1234" in refused.json()["detail"]
    # Nobody renews the first lease: after the heartbeat timeout (4 s here) it expires.
    wait_for(
        lambda: api.client.post("/api/workers/register", json=second).status_code == 200,
        30,
        "the lease to expire",
    )
    beat = api.client.post("/api/workers/box:embedded/heartbeat", json={"instance": "first-0001"})
    assert beat.status_code == 409 and "lease" in beat.json()["detail"]


def test_a_dead_embedded_worker_is_restarted_and_claims_queued_runs(
    tmp_path: Path, database_url: str
) -> None:
    server, api = _serve(tmp_path / "live", database_url)
    try:
        wait_for(lambda: _workers_alive(api) == 1, 60, "the embedded worker")
        [worker] = _running(_family(server), "trainer.worker")
        worker.kill()
        worker.wait(10)
        run_id = api.launch(max_steps=20)
        restarted = wait_for(
            lambda: _running(_family(server), "trainer.worker"), 60, "the restarted worker"
        )
        assert restarted[0].pid != worker.pid
        run = wait_for(lambda: api.status_is(run_id, "completed", "failed"), 180, "the run")
        assert run["status"] == "completed"
        health = api.client.get("/healthz").json()
        assert health["workers_alive"] == 1
    finally:
        server.stop()


def test_healthz_counts_no_worker_when_serve_runs_without_one(api: Api) -> None:
    assert httpx.get(f"{api.server.url}/healthz").json()["workers_alive"] == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_access_log_leaves_out_the_workers_routine_polls(
    tmp_path: Path, database_url: str
) -> None:
    """`make run` logs at info: an idle worker's claims (twice a second) and heartbeats
    would bury every other line."""
    server = LiveServer(
        tmp_path / "quiet", database_url, extra_env=LIFECYCLE_ENV, worker=True, log_level="info"
    )
    try:
        server.wait_ready()
        api = Api(server)
        run_id = api.launch(max_steps=100_000)
        # Running: the worker has claimed it and heartbeats for it.
        wait_for(lambda: (api.run(run_id)["last_step"] or 0) >= 1, 120, "training to start")
        marker = f'"GET /api/runs/{run_id}?marker HTTP/1.1" 200'
        api.client.get(f"/api/runs/{run_id}?marker")
        wait_for(lambda: marker in server.log_path.read_text(), 30, "the marker's access line")
        lines = server.log_path.read_text().splitlines()
        assert any('"POST /api/runs HTTP/1.1" 201' in line for line in lines)
        assert any("/metrics HTTP/1.1" in line for line in lines)  # the trainer's rows
        polls = [line for line in lines if "/claim HTTP" in line or "/heartbeat HTTP" in line]
        assert polls == []
    finally:
        server.stop()

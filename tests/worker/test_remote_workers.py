"""Workers on other hosts: each has only the API's URL and its own data directory (no
database URL, no shared disk). They train runs on an uploaded dataset (fetched over the
API, cached by sha256) and resume each other's runs (the checkpoint handed over through
the API), with no step lost or logged twice. A run killed because it would not stop
still hands its last checkpoint over, before its outcome reaches the API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.worker.conftest import Api, WorkerProcess, wait_for

CORPUS = "to be or not to be, that is the question. " * 400


def _train_a_while(api: Api, run_id: int, worker: WorkerProcess, steps: int) -> int:
    """Resume (or start) the run on `worker` for `steps` more steps, then stop it."""
    start = api.run(run_id)["last_step"] or 0
    wait_for(lambda: api.status_is(run_id, "running"), 60, "the claim")
    wait_for(lambda: (api.run(run_id)["last_step"] or 0) >= start + steps, 120, "training")
    assert api.client.post(f"/api/runs/{run_id}/stop").status_code == 200
    run = wait_for(lambda: api.status_is(run_id, "stopped", "failed"), 60, "the stop")
    assert run["status"] == "stopped", run["error"]
    return int(run["last_step"])


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_workers_with_their_own_disks_resume_each_others_runs(api: Api, tmp_path: Path) -> None:
    created = api.client.post("/api/datasets", json={"name": "hamlet", "text": CORPUS})
    assert created.status_code == 201
    sha256 = created.json()["sha256"]
    run_id = api.launch(dataset="hamlet", max_steps=100_000, checkpoint_interval=1_000)
    disks = {name: tmp_path / name for name in ("a", "b")}

    a = WorkerProcess(api.server, name="host-a", data_dir=disks["a"])
    try:
        first_stop = _train_a_while(api, run_id, a, 8)
    finally:
        a.stop()
    # The dataset came over the API, checked against its sha256.
    assert (disks["a"] / "dataset-cache" / f"{sha256}.txt").read_text() == CORPUS
    handed = api.client.get(f"/api/runs/{run_id}/checkpoints").json()
    assert "ckpt_latest.pt" in [checkpoint["name"] for checkpoint in handed]

    assert api.client.post(f"/api/runs/{run_id}/resume").status_code == 200
    b = WorkerProcess(api.server, name="host-b", data_dir=disks["b"])
    try:
        second_stop = _train_a_while(api, run_id, b, 8)
    finally:
        b.stop()
    assert second_stop > first_stop
    output = (disks["b"] / "runs" / str(run_id) / "output.log").read_text()
    assert "fetching ckpt_latest.pt" in output

    # Back on host a, whose own copy is older than what b handed over.
    assert api.client.post(f"/api/runs/{run_id}/resume").status_code == 200
    a = WorkerProcess(api.server, name="host-a", data_dir=disks["a"])
    try:
        third_stop = _train_a_while(api, run_id, a, 5)
    finally:
        a.stop()
    assert third_stop > second_stop
    steps = api.loss_steps(run_id)
    assert steps == list(range(len(steps)))  # nothing lost, nothing logged twice
    # Both hosts trained it, each on its own disk; both gave their lease back on exit.
    for disk in disks.values():
        assert (disk / "runs" / str(run_id) / "ckpt_latest.pt").exists()
    assert api.client.get("/api/workers").json() == []


def _checkpoint_step(info: str | bytes) -> int:
    return int(json.loads(info)["step"])


def _step_on_disk(run_dir: Path) -> int | None:
    info = run_dir / "ckpt_latest.json"
    return _checkpoint_step(info.read_text()) if info.exists() else None


def _step_at_api(api: Api, run_id: int, run_dir: Path) -> int:
    """The step of the checkpoint the API holds, checked to be this host's very file."""
    files = {
        name: api.client.get(f"/api/workers/runs/{run_id}/files/{name}")
        for name in ("ckpt_latest.json", "ckpt_latest.pt")
    }
    for name, answer in files.items():
        assert answer.status_code == 200, f"{name}: {answer.status_code}"
    assert files["ckpt_latest.pt"].content == (run_dir / "ckpt_latest.pt").read_bytes()
    return _checkpoint_step(files["ckpt_latest.json"].content)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_child_killed_for_not_stopping_hands_its_last_checkpoint_over_first(
    api: Api, tmp_path: Path
) -> None:
    # Deaf to stop requests after each start's first checkpoint (every 5 steps).
    run_id = api.launch(
        max_steps=100_000, checkpoint_interval=5, faults={"hang_after_checkpoint": True}
    )
    run_dir = tmp_path / "host" / "runs" / str(run_id)
    # The grace is then the worker's floor for a fast run (its exit margin), about 5 s.
    worker = WorkerProcess(
        api.server, name="host", data_dir=tmp_path / "host", TRAINLENS_STOP_GRACE_SECONDS="1"
    )
    try:
        wait_for(lambda: _step_on_disk(run_dir) == 5, 120, "the checkpoint before the hang")
        assert api.client.post(f"/api/runs/{run_id}/stop").status_code == 200
        stopped = wait_for(
            lambda: api.status_is(run_id, "stopped", "failed", "interrupted", "completed"),
            60,
            "the kill after the grace period",
        )
        # The outcome came after the hand-over: the checkpoint is at the API already, and
        # was written there before the outcome was recorded (same clock: one host), which
        # holds however fast the upload was.
        assert _step_at_api(api, run_id, run_dir) == 5
        at_api = api.server.data_dir / "runs" / str(run_id) / "ckpt_latest.pt"
        assert at_api.stat().st_mtime <= stopped["finished_at"], "outcome before the upload"
        assert stopped["status"] == "stopped" and "killed" in stopped["error"], stopped["error"]

        # Resumed (from step 5) and hung again, then the worker is shut down: it kills
        # the child after the grace period and hands its checkpoint over before exiting.
        assert api.client.post(f"/api/runs/{run_id}/resume").status_code == 200
        wait_for(lambda: _step_on_disk(run_dir) == 10, 120, "the resumed run's checkpoint")
    finally:
        worker.stop()
    assert worker.process.returncode == 0
    interrupted = api.run(run_id)
    assert interrupted["status"] == "interrupted" and "shut down" in interrupted["error"]
    assert _step_at_api(api, run_id, run_dir) == 10

"""Launched runs through a real worker: complete, stop, resume, crash, lost worker."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from sqlalchemy import func, select

from app.db import Database
from app.models import Metric, MetricKey, Sample
from bench.ui_latency import cpu_burners
from tests.worker.conftest import Api, WorkerProcess, wait_for


def test_launch_runs_to_completion_with_metrics(api: Api, worker: WorkerProcess) -> None:
    run_id = api.launch(max_steps=30)
    wait_for(lambda: api.status_is(run_id, "running", "completed"), 60, "the worker to claim it")
    run = wait_for(lambda: api.status_is(run_id, "completed", "failed"), 120, "the run to end")
    assert run["status"] == "completed", run["error"]
    assert run["last_step"] == 29 and run["started_at"] and run["finished_at"]
    assert api.loss_steps(run_id) == list(range(30))
    for key in ("train/grad_norm", "train/lr", "val/loss", "perf/tokens_per_sec", "act/h0.mlp/std"):
        assert key in run["keys"], key
    db = Database(api.server.database_url)
    with db.session() as session:
        assert session.scalar(
            select(func.count()).select_from(Sample).where(Sample.run_id == run_id)
        )
    db.dispose()
    assert (api.server.data_dir / "runs" / str(run_id) / "ckpt_latest.pt").exists()


def test_stop_then_resume_continues_the_series(api: Api, worker: WorkerProcess) -> None:
    run_id = api.launch(max_steps=100_000)
    wait_for(lambda: (api.run(run_id)["last_step"] or 0) >= 15, 120, "training to get going")
    # Two CPU-burning processes beside it, as other training on a shared box: the stop
    # is still clean (a checkpoint, no kill), within the grace period.
    with cpu_burners(2):
        asked = api.client.post(f"/api/runs/{run_id}/stop")
        assert asked.status_code == 200 and asked.json()["status"] == "stopping"
        stopped = wait_for(
            lambda: api.status_is(run_id, "stopped", "failed"), 10, "the stop (10 s bound)"
        )
    assert stopped["status"] == "stopped" and stopped["error"] is None
    out_dir = api.server.data_dir / "runs" / str(run_id)
    assert (out_dir / "ckpt_latest.pt").exists()
    steps_before = api.loss_steps(run_id)
    assert steps_before == list(range(len(steps_before)))

    resumed = api.client.post(f"/api/runs/{run_id}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "queued"
    target = steps_before[-1] + 20
    wait_for(
        lambda: (api.run(run_id)["last_step"] or 0) >= target, 120, "the resumed run to advance"
    )
    api.client.post(f"/api/runs/{run_id}/stop")
    wait_for(lambda: api.status_is(run_id, "stopped"), 15, "the second stop")
    steps_after = api.loss_steps(run_id)
    # One series with no gap and no duplicate: the resume picked up at the checkpoint.
    assert steps_after == list(range(len(steps_after)))
    assert len(steps_after) > len(steps_before) + 15
    db = Database(api.server.database_url)
    with db.session() as session:
        resumed_at = session.scalars(
            select(Metric.step)
            .join(MetricKey, MetricKey.id == Metric.key_id)
            .where(Metric.run_id == run_id, MetricKey.name == "train/resumed")
        ).all()
    db.dispose()
    assert resumed_at == [steps_before[-1] + 1]
    assert api.run(run_id)["attempt"] == 1


def test_a_crashing_child_marks_the_run_failed_with_the_reason(
    api: Api, worker: WorkerProcess
) -> None:
    created = api.client.post("/api/datasets", json={"name": "doomed", "text": "abcdefgh" * 500})
    assert created.status_code == 201
    for path in (api.server.data_dir / "datasets").glob("doomed-*.txt"):
        path.unlink()  # the training process will not find its corpus
    run_id = api.launch(dataset="doomed", max_steps=10)
    run = wait_for(lambda: api.status_is(run_id, "failed", "completed"), 60, "the crash")
    assert run["status"] == "failed"
    assert "FileNotFoundError" in run["error"] and "doomed" in run["error"]
    # The worker carries on with the next run.
    next_id = api.launch(max_steps=5)
    assert (
        wait_for(lambda: api.status_is(next_id, "completed", "failed"), 120, "the next run")[
            "status"
        ]
        == "completed"
    )


def test_a_killed_worker_leaves_its_run_interrupted(api: Api) -> None:
    worker = WorkerProcess(api.server)
    try:
        run_id = api.launch(max_steps=100_000)
        wait_for(lambda: (api.run(run_id)["last_step"] or 0) >= 5, 120, "training to start")
        os.kill(worker.process.pid, signal.SIGKILL)
        run = wait_for(lambda: api.status_is(run_id, "interrupted"), 20, "the heartbeat timeout")
        assert "no heartbeat from worker" in run["error"]
        # The orphaned training process noticed and stopped: the series stops growing.
        last = wait_for(lambda: _settled(api, run_id), 20, "the orphan to stop")
        assert api.run(run_id)["last_step"] == last
        assert api.client.post(f"/api/runs/{run_id}/resume").json()["status"] == "queued"
    finally:
        worker.stop()


def _settled(api: Api, run_id: int) -> int | None:
    out_dir: Path = api.server.data_dir / "runs" / str(run_id)
    result = out_dir / "result.json"
    return api.run(run_id)["last_step"] if result.exists() else None


def test_a_stop_before_training_begins_is_a_clean_stop(api: Api, worker: WorkerProcess) -> None:
    run_id = api.launch(max_steps=100_000)
    wait_for(lambda: api.status_is(run_id, "running"), 60, "the claim")
    # The child is still importing torch and loading data: no handler of the trainer's yet.
    assert api.client.post(f"/api/runs/{run_id}/stop").status_code == 200
    run = wait_for(lambda: api.status_is(run_id, "stopped", "failed"), 30, "the stop")
    assert run["status"] == "stopped" and run["error"] is None
    assert api.client.post(f"/api/runs/{run_id}/resume").json()["status"] == "queued"


def test_deleting_a_running_run_leaves_the_worker_working(api: Api, worker: WorkerProcess) -> None:
    doomed = api.launch(max_steps=100_000)
    wait_for(lambda: (api.run(doomed)["last_step"] or 0) >= 3, 120, "training to start")
    assert api.client.delete(f"/api/runs/{doomed}").status_code == 204
    # The worker kills the child; the API no longer knows the run its outcome is about.
    # That refusal must not hold up the worker: the next run is claimed and completes.
    run_id = api.launch(max_steps=10)
    run = wait_for(lambda: api.status_is(run_id, "completed", "failed"), 120, "the next run")
    assert run["status"] == "completed", run["error"]
    assert api.client.get(f"/api/runs/{doomed}").status_code == 404
    assert worker.process.poll() is None

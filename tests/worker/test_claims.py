"""Two workers on one database never claim the same run (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import multiprocessing
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from app.db import Database
from app.models import Event, Run, RunSource, RunStatus
from app.runs.lifecycle import claim_next_run
from tests.worker.conftest import TINY, Api, WorkerProcess, wait_for
from trainer.job import RUN_FILE
from trainer.worker import Worker, WorkerConfig

RUNS = 40


def claimer(
    database_url: str, worker_id: str, start: multiprocessing.Event, out: multiprocessing.Queue
) -> None:
    """Claim as fast as possible until no queued run is left."""
    db = Database(database_url)
    start.wait()
    claimed = []
    while True:
        with db.session(write=True) as session:
            run = claim_next_run(session, worker_id)
            if run is None:
                break
            claimed.append(run.id)
    db.dispose()
    out.put((worker_id, claimed))


def test_concurrent_claims_never_take_a_run_twice(database_url: str) -> None:
    db = Database(database_url)
    with db.session(write=True) as session:
        for index in range(RUNS):
            session.add(
                Run(
                    name=f"r{index}",
                    source=RunSource.launched,
                    status=RunStatus.queued,
                    config=TINY,
                )
            )
    context = multiprocessing.get_context("spawn")
    start, out = context.Event(), context.Queue()
    processes = [
        context.Process(target=claimer, args=(database_url, f"w{i}", start, out)) for i in range(3)
    ]
    for process in processes:
        process.start()
    start.set()
    results = dict(out.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    claims = Counter(run_id for claimed in results.values() for run_id in claimed)
    assert len(claims) == RUNS and set(claims.values()) == {1}
    with db.session() as session:
        rows = session.execute(select(Run.id, Run.status, Run.worker_id)).all()
        running_events = session.scalars(
            select(Event.run_id).where(Event.kind == "status", Event.payload.contains('"running"'))
        ).all()
    db.dispose()
    owners = {run_id: worker for worker, claimed in results.items() for run_id in claimed}
    assert all(status == "running" and owners[run_id] == worker for run_id, status, worker in rows)
    assert Counter(running_events) == Counter({run_id: 1 for run_id in owners})


# Workers on several hosts share a PostgreSQL database (SQLite's claims are covered by
# the test above): two real worker processes, each starting torch, on PostgreSQL.
@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_two_real_workers_share_the_queue(api: Api) -> None:
    workers = [WorkerProcess(api.server, name=f"worker{i}") for i in range(2)]
    try:
        run_ids = [api.launch(name=f"r{i}", max_steps=8, eval_interval=4) for i in range(4)]
        for run_id in run_ids:
            wait_for(
                lambda run_id=run_id: api.status_is(run_id, "completed", "failed"),
                240,
                f"run {run_id}",
            )
        db = Database(api.server.database_url)
        with db.session() as session:
            owners = dict(session.execute(select(Run.id, Run.worker_id)).all())
            claims = session.scalars(
                select(Event.run_id).where(
                    Event.kind == "status", Event.payload.contains('"running"')
                )
            ).all()
        db.dispose()
        assert [api.run(run_id)["status"] for run_id in run_ids] == ["completed"] * 4
        assert Counter(claims) == Counter({run_id: 1 for run_id in run_ids})
        # Both workers took part (each holds one run at a time, and there were four).
        assert len({owners[run_id] for run_id in run_ids}) == 2
    finally:
        for worker in workers:
            worker.stop()


def test_a_queued_run_goes_first_to_the_worker_holding_its_checkpoint(
    database_url: str,
) -> None:
    db = Database(database_url)
    with db.session(write=True) as session:
        runs = [
            Run(name=f"r{index}", source=RunSource.launched, status=RunStatus.queued, config=TINY)
            for index in range(3)
        ]
        session.add_all(runs)
        session.flush()
        oldest, middle, newest = (run.id for run in runs)
    with db.session(write=True) as session:
        # Another worker, holding no checkpoint, takes the oldest as always.
        assert claim_next_run(session, "elsewhere").id == oldest  # type: ignore[union-attr]
    with db.session(write=True) as session:
        # This one holds the newest run's checkpoint (and one of a run not queued).
        held = claim_next_run(session, "holder", prefer=[newest, 10**6])
        assert held is not None and held.id == newest
    with db.session(write=True) as session:
        assert claim_next_run(session, "holder", prefer=[newest]).id == middle  # type: ignore[union-attr]
    db.dispose()


def test_a_worker_names_the_runs_whose_checkpoints_its_own_disk_holds(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    api_disk = runs_dir / "1"  # a run folder on the API's own disk (serve's worker)
    for run_id in (1, 2, 3, 4):
        (runs_dir / str(run_id)).mkdir(parents=True)
    shared = api_disk.stat()
    elsewhere = {"device": shared.st_dev, "inode": shared.st_ino + 10**9}
    folders = {
        1: {"device": shared.st_dev, "inode": shared.st_ino},  # the API's: nothing to prefer
        2: elsewhere,  # held here, with a checkpoint
        3: elsewhere,  # no checkpoint yet
        4: elsewhere,  # a checkpoint, but the run file was never written whole
    }
    for run_id, files in folders.items():
        folder = runs_dir / str(run_id)
        if run_id != 3:
            (folder / "ckpt_latest.pt").write_bytes(b"weights")
        claimed = {"id": run_id, "files": {**files, "files": {}}}
        text = json.dumps(claimed)
        (folder / RUN_FILE).write_text(text if run_id != 4 else text[:10])
    worker = Worker(WorkerConfig.from_env(url="http://127.0.0.1:9", data_dir=tmp_path))
    try:
        assert worker._checkpoints_here() == [2]
    finally:
        worker.api.close()


def test_a_worker_claims_only_runs_whose_ranks_fit_its_free_gpus(database_url: str) -> None:
    db = Database(database_url)
    with db.session(write=True) as session:
        one_rank = {key: value for key, value in TINY.items() if key != "nproc"}
        queued = {"source": RunSource.launched, "status": RunStatus.queued}
        wide = Run(name="ddp", config={**TINY, "nproc": 4}, **queued)
        narrow = Run(name="one", config=one_rank, **queued)
        session.add_all([wide, narrow])
        session.flush()
        wide_id, narrow_id = wide.id, narrow.id
    with db.session(write=True) as session:
        # One GPU free: the older 4-rank run waits, the 1-rank run (nproc unset) goes.
        assert claim_next_run(session, "w", max_nproc=1).id == narrow_id  # type: ignore[union-attr]
    with db.session(write=True) as session:
        assert claim_next_run(session, "w", max_nproc=3) is None
    with db.session(write=True) as session:
        assert claim_next_run(session, "w", max_nproc=4).id == wide_id  # type: ignore[union-attr]
    db.dispose()

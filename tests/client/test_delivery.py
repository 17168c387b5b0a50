"""Nothing is lost and nothing blocks: the poison cases of a client that posts batches
(a row the server refuses, a None value, a slow server at finish, a server away for a
while with a small buffer). Each shows every good row stored and every call returning."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import trainlens
from tests.client.conftest import run_detail, series, trainlens_cli
from tests.client.proxy import FaultyProxy
from tests.conftest import LiveServer

QUIET = {"system_metrics": False, "heartbeat_interval": 60.0}


@pytest.fixture
def proxy(live_server: LiveServer) -> Iterator[FaultyProxy]:
    proxy = FaultyProxy(live_server.url)
    yield proxy
    proxy.close()


def test_a_refused_row_costs_only_itself(
    proxy: FaultyProxy, live_server: LiveServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The server refuses any batch holding step 150 (as it did a key "eval acc"): the
    # batch is split until that row stands alone; the 299 others land.
    proxy.refuse_step = 150
    run = trainlens.init(
        "poisoned", url=proxy.url, offline_dir=tmp_path, flush_interval=60, **QUIET
    )
    for step in range(300):
        run.log({"train/loss": 1.0 / (step + 1)}, step=step)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="trainlens"):
        run.finish()
    assert time.monotonic() - started < 10
    steps, _ = series(live_server, run.id, "train/loss")
    assert steps == [step for step in range(300) if step != 150]
    assert len(run.errors) == 1 and "step 150" in run.errors[0] and "422" in run.errors[0]
    reported = [r for r in caplog.records if "step 150" in r.getMessage()]
    assert len(reported) == 1 and reported[0].exc_info is None  # one line, no traceback
    assert run_detail(live_server, run.id)["status"] == "completed"
    # the refused row was isolated in a handful of requests, not retried in a loop
    refused = [s for path, s in proxy.posts if path.endswith("/metrics") and s >= 400]
    assert 1 <= len(refused) <= 10


def test_a_none_value_fails_in_the_caller_and_blocks_nothing(
    live_server: LiveServer, tmp_path: Path
) -> None:
    run = trainlens.init(url=live_server.url, offline_dir=tmp_path, **QUIET)
    for step in range(20):
        if step == 10:
            with pytest.raises(TypeError, match="val/acc"):
                run.log({"train/loss": 1.0, "val/acc": None}, step=step)
            continue
        run.log({"train/loss": float(step)}, step=step)
    assert run.flush(timeout=30)  # returns: nothing is stuck
    run.log({"train/loss": 99.0}, step=20)
    run.finish()
    steps, values = series(live_server, run.id, "train/loss")
    assert steps == [s for s in range(21) if s != 10]
    assert values[-1] == 99.0
    assert run.errors == []


def test_a_slow_server_never_holds_finish(
    proxy: FaultyProxy, live_server: LiveServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = trainlens.init("slow", url=proxy.url, offline_dir=tmp_path, **QUIET)
    proxy.mode = "hang"  # metrics posts never answer
    for step in range(500):
        run.log({"train/loss": 2.0 - step / 1000}, step=step)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="trainlens"):
        run.finish(timeout=1.5)  # returns, never raises
    assert time.monotonic() - started < 5
    hint = [r.getMessage() for r in caplog.records if "trainlens sync" in r.getMessage()]
    assert hint and str(run.folder) in hint[0]
    # Everything unsent waits in the journal; a sync once the server answers uploads it
    # into the same run and ends it as the script did.
    proxy.mode = "ok"
    proxy.release.set()
    result = trainlens_cli("sync", str(run.folder), "--url", proxy.url)
    assert result.returncode == 0, result.stderr
    assert f"run.html?id={run.id}" in result.stdout
    steps, _ = series(live_server, run.id, "train/loss")
    assert steps == list(range(500))
    assert run_detail(live_server, run.id)["status"] == "completed"


def test_a_long_outage_spills_to_disk_not_memory_and_catches_up(
    proxy: FaultyProxy, live_server: LiveServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = trainlens.init(
        "outage",
        url=proxy.url,
        offline_dir=tmp_path,
        max_buffer_rows=100,
        flush_interval=0.05,
        retry_max_seconds=0.5,
        **QUIET,
    )
    with caplog.at_level(logging.WARNING, logger="trainlens"):
        proxy.mode = "drop"
        most_buffered = 0
        for step in range(5000):
            run.log({"train/loss": 1.0, "perf/step_ms": float(step)}, step=step)
            most_buffered = max(most_buffered, run.transport.buffered())
        assert most_buffered <= 100
        assert (run.folder / "metrics.jsonl").exists()  # the overflow went to disk
        # The loop can outrun the sender: let it meet the outage before the server is back.
        deadline = time.monotonic() + 30
        while not any(r.name == "trainlens" for r in caplog.records):
            assert time.monotonic() < deadline, "the client never said the server was away"
            time.sleep(0.05)
        proxy.mode = "ok"
        assert run.flush(timeout=60)
        run.finish()
    steps, values = series(live_server, run.id, "perf/step_ms")
    assert steps == list(range(5000)) and values == [float(s) for s in range(5000)]
    assert run.errors == []
    # one line when the server went away, one when it came back; no tracebacks
    lines = [r for r in caplog.records if r.name == "trainlens"]
    assert 1 <= len(lines) <= 3 and all(r.exc_info is None for r in lines)


def test_a_deleted_run_sends_its_rows_to_the_journal(
    live_server: LiveServer, tmp_path: Path
) -> None:
    import httpx

    run = trainlens.init("deleted", url=live_server.url, offline_dir=tmp_path, **QUIET)
    run.log({"a": 1.0}, step=0)
    assert run.flush(timeout=30)
    assert httpx.delete(f"{live_server.url}/api/runs/{run.id}").status_code == 204
    deleted_at = time.time()
    for step in range(1, 50):
        run.log({"a": float(step)}, step=step)
    assert not run.flush(timeout=1)  # nothing can settle: the run is gone
    started = time.monotonic()
    run.finish()
    assert time.monotonic() - started < 5
    assert len(run.errors) == 1 and "404" in run.errors[0]
    # the journal holds the rows; a sync puts them in a new run
    result = trainlens_cli("sync", str(run.folder), "--url", live_server.url)
    assert result.returncode == 0, result.stderr
    new_id = int(result.stdout.rsplit("id=", 1)[1])
    # a new run (SQLite may hand out the deleted run's id again: the folder tells them
    # apart by the server's creation time, so it never writes into a stranger's run)
    assert run_detail(live_server, new_id)["created_at"] > deleted_at
    steps, _ = series(live_server, new_id, "a")
    assert steps == list(range(1, 50))

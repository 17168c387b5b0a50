"""Offline runs and `trainlens sync`: a server down at init, a killed script, re-syncs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx

import trainlens
from tests.client.conftest import all_runs, run_detail, run_folders, series, trainlens_cli
from tests.conftest import ROOT, LiveServer, free_port

QUIET = {"system_metrics": False}


def test_a_server_down_at_init_logs_offline_and_syncs_exactly_once(
    live_server: LiveServer, tmp_path: Path
) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = {"lr": 3e-4, "vocab_size": 65}
    with trainlens.init("offline", config, url=down, offline_dir=tmp_path, **QUIET) as run:
        assert run.offline and run.id is None and run.url is None
        for step in range(300):
            run.log({"train/loss": 3.0 - step / 100, "train/lr": 3e-4}, step=step)
        run.log({"val/loss": math.nan}, step=299)
        run.sample(100, "hello there")
    (folder,) = run_folders(tmp_path)

    first = trainlens_cli("sync", str(tmp_path), env={"TRAINLENS_URL": live_server.url})
    assert first.returncode == 0, first.stderr
    (synced,) = all_runs(live_server)
    assert f"run.html?id={synced['id']}" in first.stdout
    again = trainlens_cli("sync", str(folder), "--url", live_server.url)
    assert again.returncode == 0, again.stderr

    (synced,) = all_runs(live_server)  # the same run, not a second one
    detail = run_detail(live_server, synced["id"])
    assert detail["name"] == "offline" and detail["config"] == config
    assert detail["status"] == "completed" and detail["source"] == "external"
    steps, values = series(live_server, synced["id"], "train/loss")
    assert steps == list(range(300))
    assert values == [3.0 - step / 100 for step in range(300)]
    assert series(live_server, synced["id"], "val/loss") == ([299], ["NaN"])
    samples = httpx.get(f"{live_server.url}/api/runs/{synced['id']}/samples").json()
    assert [(s["step"], s["text"]) for s in samples] == [(100, "hello there")]


KILLED_SCRIPT = """
import sys, time, trainlens
run = trainlens.init("killed", {"lr": 1e-3}, mode=sys.argv[1], url=sys.argv[2],
                     offline_dir=sys.argv[3], heartbeat_interval=0.2)
for step in range(1000):
    run.log({"train/loss": 1.0 / (step + 1), "step/x": float(step)}, step=step)
print("logged", run.folder, flush=True)
time.sleep(600)
"""


def test_a_killed_offline_script_leaves_a_journal_that_syncs_completely(
    live_server: LiveServer, tmp_path: Path
) -> None:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(KILLED_SCRIPT))
    runs = tmp_path / "runs"
    process = subprocess.Popen(
        [sys.executable, str(script), "offline", live_server.url, str(runs)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("logged"), line
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    (folder,) = run_folders(runs)
    assert "finish" not in json.loads((folder / "run.json").read_text())

    result = trainlens_cli("sync", str(runs), "--url", live_server.url)
    assert result.returncode == 0, result.stderr
    (synced,) = all_runs(live_server)
    steps, values = series(live_server, synced["id"], "step/x")
    assert steps == list(range(1000)) and values == [float(s) for s in range(1000)]
    detail = run_detail(live_server, synced["id"])
    assert detail["status"] == "crashed" and "without finishing" in detail["error"]


def test_sync_skips_a_torn_last_line_and_reports_a_bad_one(
    live_server: LiveServer, tmp_path: Path
) -> None:
    run = trainlens.init("torn", mode="offline", offline_dir=tmp_path, **QUIET)
    for step in range(10):
        run.log({"a": float(step)}, step=step)
    run.finish()
    with open(run.folder / "metrics.jsonl", "ab") as journal:
        # a line the server refuses (hand-edited), then a torn one (power cut mid-write)
        journal.write(b'{"step":10,"metrics":{"bad key":1.0},"time":1.0}\n{"step":11,"met')
    result = trainlens_cli("sync", str(run.folder), "--url", live_server.url)
    assert result.returncode == 0, result.stderr
    assert "step 10" in result.stderr and "10 rows synced, 1 refused" in result.stdout
    (synced,) = all_runs(live_server)
    assert series(live_server, synced["id"], "a")[0] == list(range(10))


def test_sync_says_what_is_wrong(tmp_path: Path) -> None:
    assert trainlens_cli("sync", str(tmp_path / "missing")).returncode == 2
    assert "no run folders" in trainlens_cli("sync", str(tmp_path)).stderr
    run = trainlens.init("unsent", mode="offline", offline_dir=tmp_path, **QUIET)
    run.log({"a": 1.0})
    run.finish()
    down = f"http://127.0.0.1:{free_port()}"
    result = trainlens_cli("sync", str(tmp_path), "--url", down)
    assert result.returncode == 1 and "ConnectError" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # one line, no traceback

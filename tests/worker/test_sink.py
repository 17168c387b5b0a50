"""A launched run's metrics travel like a user's script's: through the `trainlens`
client's transport to the API. Nothing handed to the sink is lost when training raises,
and rows the API cannot take wait in the run's folder instead of blocking the step."""

from __future__ import annotations

import math
import subprocess
import sys

import httpx

from tests.conftest import ROOT, LiveServer, free_port
from trainer.sink import ClientSink


def _external_run(server: LiveServer) -> int:
    return int(httpx.post(f"{server.url}/api/runs", json={"source": "external"}).json()["id"])


def _loss(server: LiveServer, run_id: int) -> dict[str, list[object]]:
    return httpx.get(  # type: ignore[no-any-return]
        f"{server.url}/api/runs/{run_id}/metrics",
        params={"keys": "train/loss", "max_points": 10_000},
    ).json()["series"]["train/loss"]


def test_the_client_sink_posts_rows_and_samples_to_the_api(
    live_server: LiveServer, tmp_path
) -> None:
    run_id = _external_run(live_server)
    sink = ClientSink(live_server.url, run_id, None, tmp_path / "unsent")
    for step in range(1200):
        sink.log(step, {"train/loss": math.nan if step == 7 else 1.0 / (step + 1)})
    sink.sample(3, "once upon a time")
    sink.close()
    answer = _loss(live_server, run_id)
    assert answer["steps"] == list(range(1200))
    assert answer["values"][7] == "NaN" and answer["values"][1] == 0.5
    samples = httpx.get(f"{live_server.url}/api/runs/{run_id}/samples").json()
    assert samples[0]["text"] == "once upon a time"
    assert not (tmp_path / "unsent").exists()  # nothing had to wait on disk


CRASHING_SCRIPT = """
import sys
from pathlib import Path
from trainer.sink import ClientSink
sink = ClientSink(sys.argv[1], int(sys.argv[2]), None, Path(sys.argv[3]))
try:
    for step in range(3000):
        sink.log(step, {"train/loss": 1.0})
    raise RuntimeError("training blew up")
finally:
    sink.close()
"""


def test_a_crash_loses_nothing_handed_to_the_sink(live_server: LiveServer, tmp_path) -> None:
    run_id = _external_run(live_server)
    result = subprocess.run(
        [sys.executable, "-c", CRASHING_SCRIPT, live_server.url, str(run_id), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "training blew up" in result.stderr
    assert _loss(live_server, run_id)["steps"] == list(range(3000))


def test_rows_the_api_cannot_take_wait_in_the_run_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRAINLENS_FINISH_TIMEOUT", "1")
    nobody = f"http://127.0.0.1:{free_port()}"
    sink = ClientSink(nobody, 1, None, tmp_path / "unsent")
    for step in range(50):
        sink.log(step, {"train/loss": 2.0})
    sink.close()  # returns after the finish timeout; the rows are on disk, not lost
    journal = (tmp_path / "unsent" / "metrics.jsonl").read_text().splitlines()
    assert len(journal) == 50

"""Live updates over Server-Sent Events, against a real server."""

from __future__ import annotations

import time

import httpx

from tests.conftest import LiveServer
from tests.sse import SSEClient


def _external_run(server: LiveServer) -> int:
    response = httpx.post(f"{server.url}/api/runs", json={"name": "s", "source": "external"})
    assert response.status_code == 201
    return int(response.json()["id"])


def _ingest(server: LiveServer, run_id: int, rows: list[dict[str, object]]) -> None:
    response = httpx.post(f"{server.url}/api/runs/{run_id}/metrics", json={"rows": rows})
    assert response.status_code == 200, response.text


def test_a_written_point_reaches_the_client_within_a_second(server: LiveServer) -> None:
    run_id = _external_run(server)
    with SSEClient(f"{server.url}/api/runs/{run_id}/stream") as stream:
        hello = stream.next("hello")
        assert hello.json()["run_id"] == run_id and hello.id is not None
        latencies = []
        for step in range(10):
            written = time.monotonic()
            _ingest(server, run_id, [{"step": step, "metrics": {"train/loss": 5.0 - step}}])
            event = stream.next("points", timeout=5)
            latencies.append(time.monotonic() - written)
            data = event.json()
            assert data["keys"]["train/loss"]["steps"] == [step]
            assert data["keys"]["train/loss"]["values"] == [5.0 - step]
        assert max(latencies) < 1.0, latencies


def test_stream_carries_status_samples_and_non_finite_values(server: LiveServer) -> None:
    run_id = _external_run(server)
    with SSEClient(f"{server.url}/api/runs/{run_id}/stream") as stream:
        stream.next("hello")
        _ingest(server, run_id, [{"step": 1, "metrics": {"train/loss": "NaN"}}])
        assert stream.next("points").json()["keys"]["train/loss"]["values"] == ["NaN"]
        httpx.post(f"{server.url}/api/runs/{run_id}/samples", json={"step": 1, "text": "once upon"})
        assert stream.next("sample").json()["text"] == "once upon"
        httpx.post(f"{server.url}/api/runs/{run_id}/finish", json={"status": "completed"})
        assert stream.next("status").json()["status"] == "completed"


def test_reconnect_with_last_event_id_replays_what_was_missed(server: LiveServer) -> None:
    run_id = _external_run(server)
    with SSEClient(f"{server.url}/api/runs/{run_id}/stream") as stream:
        _ingest(server, run_id, [{"step": 0, "metrics": {"loss": 1.0}}])
        last_seen = stream.next("points").id
    # Written while no client was connected:
    _ingest(server, run_id, [{"step": 1, "metrics": {"loss": 2.0}}])
    _ingest(server, run_id, [{"step": 2, "metrics": {"loss": 3.0}}])
    with SSEClient(f"{server.url}/api/runs/{run_id}/stream", last_event_id=last_seen) as stream:
        first = stream.next()
        second = stream.next()
        assert (first.event, second.event) == ("points", "points")
        assert first.json()["keys"]["loss"]["steps"] == [1]
        assert second.json()["keys"]["loss"]["steps"] == [2]
        assert int(second.id or 0) > int(first.id or 0) > int(last_seen or 0)
        # and then live events continue on the same connection
        _ingest(server, run_id, [{"step": 3, "metrics": {"loss": 4.0}}])
        assert stream.next("points").json()["keys"]["loss"]["steps"] == [3]


def test_all_runs_stream_carries_progress_and_status(server: LiveServer) -> None:
    with SSEClient(f"{server.url}/api/stream") as stream:
        stream.next("hello")
        run_id = _external_run(server)
        created = stream.next("created").json()
        assert created["run_id"] == run_id
        _ingest(
            server, run_id, [{"step": 9, "metrics": {"train/loss": 2.5, "act/h0.mlp/std": 1.0}}]
        )
        progress = stream.next("progress").json()
        assert progress == {"run_id": run_id, "last_step": 9, "latest": {"train/loss": 2.5}}
        httpx.delete(f"{server.url}/api/runs/{run_id}")
        assert stream.next("deleted").json()["run_id"] == run_id


def test_stream_of_unknown_run_is_404(server: LiveServer) -> None:
    assert httpx.get(f"{server.url}/api/runs/4242/stream").status_code == 404
    bad = httpx.get(f"{server.url}/api/stream", headers={"Last-Event-ID": "soon"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "Last-Event-ID"

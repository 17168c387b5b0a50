"""Ingest refuses what it cannot store faithfully, names the field, quotes the input
briefly and writes nothing; a big body never stalls the server."""

from __future__ import annotations

import threading
import time

import httpx
import orjson
import pytest

from tests.api.helpers import create_external_run, ingest, series
from tests.conftest import LiveServer


def _post_raw(client: httpx.Client, run_id: int, body: str) -> httpx.Response:
    return client.post(
        f"/api/runs/{run_id}/metrics", content=body, headers={"content-type": "application/json"}
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"rows": [{"step": true, "metrics": {"a": 1}}]}', "rows[0].step"),
        ('{"rows": [{"step": "3", "metrics": {"a": 1}}]}', "rows[0].step"),
        ('{"rows": [{"step": 3.0, "metrics": {"a": 1}}]}', "rows[0].step"),
        ('{"rows": [{"step": 1, "metrics": {"a": 1}, "time": NaN}]}', "rows[0].time"),
        ('{"rows": [{"step": 1, "metrics": {"a": 1}, "time": Infinity}]}', "rows[0].time"),
        ('{"rows": [{"step": 1, "metrics": {"a": 1}, "time": "NaN"}]}', "rows[0].time"),
        ('{"rows": [{"step": 1, "metrics": {"a": 1}, "time": 1e999}]}', "rows[0].time"),
        ('{"rows": [{"step": 1, "metrics": {"a": 1}, "time": true}]}', "rows[0].time"),
        ('{"rows": [{"step": 1, "metrics": {"a": "inf"}}]}', "rows[0].metrics.a"),
        ('{"rows": [{"step": 1, "metrics": {"a\\u0000b": 1}}]}', "rows[0].metrics"),
        ('{"rows": [{"step": 1, "metrics": {"a\\u0007": 1}}]}', "rows[0].metrics"),
        ('{"rows": [{"step": 1, "metrics": {"a b": 1}}]}', "rows[0].metrics"),
        ('{"rows": [{"step": 1, "metrics": {"": 1}}]}', "rows[0].metrics"),
    ],
)
def test_bad_rows_are_422_naming_the_field(client: httpx.Client, body: str, field: str) -> None:
    run_id = create_external_run(client)
    good = '{"step": 0, "metrics": {"ok": 1}}'
    response = _post_raw(client, run_id, body.replace('{"rows": [', '{"rows": [' + good + ", "))
    # The good row came first, so the bad one is rows[1].
    assert response.status_code == 422, response.text
    fields = [item["field"] for item in response.json()["detail"]]
    assert any(f.startswith(field.replace("rows[0]", "rows[1]")) for f in fields), fields
    assert series(client, run_id, "ok")["total_points"] == 0


def test_error_quotes_bad_input_briefly(client: httpx.Client) -> None:
    run_id = create_external_run(client)
    response = ingest(client, run_id, [{"step": 1, "metrics": {"a": "x" * 100_000}}])
    assert response.status_code == 422
    message = response.json()["detail"][0]["msg"]
    assert "'xxxx" in message and len(message) < 300
    bad_name = "n\x00" + "y" * 5000
    response = ingest(client, run_id, [{"step": 1, "metrics": {bad_name: 1.0}}])
    assert response.status_code == 422
    message = response.json()["detail"][0]["msg"]
    assert "\\x00" in message and len(message) < 300
    assert _post_raw(client, run_id, '{"rows": [').status_code == 422


def test_json_nan_tokens_in_values_still_store(client: httpx.Client) -> None:
    """Python's json.dumps writes NaN / Infinity tokens; as values they are accepted."""
    run_id = create_external_run(client)
    body = '{"rows": [{"step": 2, "metrics": {"a": NaN, "b": -Infinity}, "time": 5}]}'
    assert _post_raw(client, run_id, body).status_code == 200
    assert series(client, run_id, "a")["values"] == ["NaN"]
    assert series(client, run_id, "b")["values"] == ["-Infinity"]


def test_big_ingest_does_not_stall_the_event_loop(live_server: LiveServer) -> None:
    """While a 9.6 MB body is parsed and written, /healthz keeps answering quickly."""
    with httpx.Client(base_url=live_server.url, timeout=120) as client:
        run_id = create_external_run(client)
        keys = [f"layer{i}/grad_norm" for i in range(10)]
        rows = [
            {"step": s, "metrics": {k: 1.0 + s * 1e-7 + i for i, k in enumerate(keys)}, "time": 1e9}
            for s in range(48_000)
        ]
        body = orjson.dumps({"rows": rows})
        assert len(body) > 9_000_000
        # Baseline: /healthz when idle.
        idle = []
        for _ in range(10):
            started = time.perf_counter()
            client.get("/healthz").raise_for_status()
            idle.append(time.perf_counter() - started)
        result: dict[str, object] = {}

        def post() -> None:
            started = time.perf_counter()
            result["response"] = client.post(
                f"/api/runs/{run_id}/metrics",
                content=body,
                headers={"content-type": "application/json"},
            )
            result["seconds"] = time.perf_counter() - started

        sender = threading.Thread(target=post)
        sender.start()
        latencies = []
        with httpx.Client(base_url=live_server.url, timeout=60) as probe:
            while sender.is_alive():
                started = time.perf_counter()
                probe.get("/healthz").raise_for_status()
                latencies.append(time.perf_counter() - started)
        sender.join()
        response = result["response"]
        assert isinstance(response, httpx.Response) and response.status_code == 200, response
        assert response.json()["points"] == 480_000
        ingest_seconds = float(result["seconds"])  # type: ignore[arg-type]
        assert len(latencies) >= 3, (latencies, ingest_seconds)
        # The loop never stops for the whole parse: each probe answers in a small part
        # of the ingest's own time (generous: the machine is shared).
        assert max(latencies) < max(0.5, ingest_seconds / 3), (max(latencies), ingest_seconds)

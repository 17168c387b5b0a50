"""The engine over a real database: incremental evaluation, episodes as findings,
acknowledgement, per-run overrides, actions, webhooks, restarts, and rules that fail."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.config import Settings
from app.main import create_app
from app.models import Event, Run, RunStatus
from app.rules.base import Observation, Rule, RunView, Thresholds
from app.rules.engine import RuleEngine
from app.rules.nonfinite import NonFinite
from app.runs.lifecycle import claim_next_run, transition
from tests.api.helpers import create_external_run, ingest
from tests.conftest import LiveServer
from tests.sse import SSEClient


def rows(start: int, stop: int, loss: float | str = 2.0) -> list[dict[str, Any]]:
    return [
        {"step": s, "metrics": {"train/loss": loss, "train/grad_norm": 0.5}}
        for s in range(start, stop)
    ]


@pytest.fixture
def quiet_settings(settings: Settings) -> Settings:
    """The engine is driven by the test (engine.poll()), not by its background loop, and
    judges the latest step at once (test_invariance.py covers the settle delay)."""
    return settings.model_copy(update={"rules_enabled": False, "rules_settle_seconds": 0.0})


@pytest.fixture
def app_client(quiet_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(quiet_settings)) as test_client:
        yield test_client


def engine_of(client: TestClient) -> RuleEngine:
    engine = client.app.state.rules  # type: ignore[attr-defined]
    assert isinstance(engine, RuleEngine)
    return engine


def findings(client: TestClient, run_id: int) -> list[dict[str, Any]]:
    response = client.get(f"/api/runs/{run_id}/findings")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_a_nan_becomes_a_finding_on_rest_and_on_the_stream_within_two_seconds(
    server: LiveServer,
) -> None:
    with httpx.Client(base_url=server.url) as client:
        run_id = create_external_run(client, vocab_size=65)
        assert ingest(client, run_id, rows(0, 40, loss=math.log(65))).status_code == 200
        with SSEClient(f"{server.url}/api/runs/{run_id}/stream") as stream:
            written = time.monotonic()
            assert ingest(client, run_id, rows(40, 41, loss="NaN")).status_code == 200
            deadline = written + 2.0
            while True:
                event = stream.next("finding", timeout=max(0.01, deadline - time.monotonic()))
                if event.json()["code"] == "nonfinite":
                    break
            assert time.monotonic() - written < 2.0
        (finding,) = [f for f in client.get(f"/api/runs/{run_id}/findings").json()]
        assert finding["code"] == "nonfinite" and finding["severity"] == "critical"
        assert finding["first_step"] == 40 and finding["state"] == "firing"
        assert finding["evidence"]["value"] == "nan"
        assert finding["explanation"] and finding["fix"]


def test_one_finding_per_episode_across_batches_then_resolved(app_client: TestClient) -> None:
    engine = engine_of(app_client)
    run_id = create_external_run(app_client)
    ingest(app_client, run_id, rows(0, 50))
    engine.poll()
    assert findings(app_client, run_id) == []
    for start in (50, 51, 52):  # three NaN steps, each its own batch and evaluation
        ingest(app_client, run_id, rows(start, start + 1, loss="NaN"))
        engine.poll()
    (firing,) = findings(app_client, run_id)
    assert (firing["state"], firing["first_step"], firing["last_step"]) == ("firing", 50, 52)
    ingest(app_client, run_id, rows(53, 60))
    engine.poll()
    (resolved,) = findings(app_client, run_id)
    assert resolved["id"] == firing["id"] and resolved["state"] == "resolved"
    assert resolved["evidence"]["resolved_step"] == 55 and resolved["resolved_at"] is not None


def test_acknowledged_findings_stay_acknowledged_as_the_episode_goes_on(
    app_client: TestClient,
) -> None:
    engine = engine_of(app_client)
    run_id = create_external_run(app_client)
    ingest(app_client, run_id, rows(0, 10, loss="NaN"))
    engine.poll()
    (finding,) = findings(app_client, run_id)
    acked = app_client.post(f"/api/findings/{finding['id']}/ack")
    assert acked.status_code == 200 and acked.json()["state"] == "acknowledged"
    ingest(app_client, run_id, rows(10, 20, loss="NaN"))
    engine.poll()
    (after,) = findings(app_client, run_id)
    assert after["state"] == "acknowledged" and after["last_step"] == 19
    assert app_client.post("/api/findings/999999/ack").status_code == 404


def test_a_new_engine_carries_on_from_the_stored_state(
    app_client: TestClient, quiet_settings: Settings
) -> None:
    first = engine_of(app_client)
    run_id = create_external_run(app_client)
    ingest(app_client, run_id, rows(0, 10, loss="NaN"))
    first.poll()
    second = RuleEngine(first.db, first.store, first.cache, quiet_settings)
    second.poll()  # its catch-up pass sees nothing new
    ingest(app_client, run_id, rows(10, 12, loss="NaN"))
    second.poll()
    (finding,) = findings(app_client, run_id)
    assert (finding["first_step"], finding["last_step"]) == (0, 11)


class Exploding(Rule):
    """Always raises."""

    code = "exploding"
    title = "Exploding"
    severity = "info"
    fix = "none"
    calls: ClassVar[int] = 0

    def check(self, view: RunView, limits: Thresholds) -> list[Observation]:
        Exploding.calls += 1
        raise RuntimeError("boom")


def test_a_rule_that_raises_is_skipped_and_ingest_carries_on(
    app_client: TestClient, quiet_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    base = engine_of(app_client)
    engine = RuleEngine(base.db, base.store, base.cache, quiet_settings, [Exploding, NonFinite])
    run_id = create_external_run(app_client)
    assert ingest(app_client, run_id, rows(0, 5, loss="NaN")).status_code == 200
    engine.poll()
    assert Exploding.calls >= 1 and "rule exploding failed" in caplog.text
    assert [f["code"] for f in findings(app_client, run_id)] == ["nonfinite"]


def test_per_run_overrides_are_validated_and_can_disable_a_rule(app_client: TestClient) -> None:
    bad = app_client.post(
        "/api/runs",
        json={"source": "external", "config": {"rules": {"loss_spike": {"zscore": "high"}}}},
    )
    assert (
        bad.status_code == 422
        and bad.json()["detail"][0]["field"] == "config.rules.loss_spike.zscore"
    )
    unknown = app_client.post(
        "/api/runs", json={"source": "external", "config": {"rules": {"no_such_rule": {}}}}
    )
    assert unknown.status_code == 422 and "unknown rule" in unknown.text
    launched = app_client.post("/api/runs", json={"config": {"rules": {"nonfinite": {"x": 1}}}})
    assert (
        launched.status_code == 422
        and launched.json()["detail"][0]["field"] == "config.rules.nonfinite.x"
    )
    assert app_client.get("/api/runs").json()["total"] == 0  # nothing written

    run_id = create_external_run(app_client, rules={"nonfinite": {"enabled": False}})
    ingest(app_client, run_id, rows(0, 5, loss="NaN"))
    engine_of(app_client).poll()
    assert findings(app_client, run_id) == []


def test_texts_fit_an_external_run_and_a_one_off_nan_that_recovered(
    app_client: TestClient,
) -> None:
    engine = engine_of(app_client)
    run_id = create_external_run(app_client)
    ingest(app_client, run_id, rows(0, 50))
    ingest(app_client, run_id, rows(50, 51, loss="NaN"))
    engine.poll()
    (firing,) = findings(app_client, run_id)
    for word in ("worker", "preset", "launched", "ckpt_", "actions."):
        assert word not in firing["explanation"] + firing["fix"], word
    ingest(app_client, run_id, rows(51, 60))
    engine.poll()
    (resolved,) = findings(app_client, run_id)
    assert resolved["state"] == "resolved" and "one-off" in resolved["explanation"]
    assert "the run is lost" not in resolved["explanation"]


def test_a_nan_stops_a_launched_run(app_client: TestClient) -> None:
    engine = engine_of(app_client)
    created = app_client.post("/api/runs", json={"name": "nan", "config": {"max_steps": 100}})
    run_id = created.json()["id"]
    with engine.db.session(write=True) as session:
        assert claim_next_run(session, "test-worker") is not None
    ingest(app_client, run_id, rows(0, 3, loss="NaN"))
    engine.poll()
    run = app_client.get(f"/api/runs/{run_id}").json()
    assert run["status"] == RunStatus.stopping and "non-finite" in run["error"]


def test_new_findings_are_posted_to_the_run_webhook(app_client: TestClient) -> None:
    received: list[dict[str, Any]] = []
    arrived = threading.Event()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()
            arrived.set()

        def log_message(self, *args: object) -> None:
            pass

    receiver = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{receiver.server_port}/hook"
        # Webhooks go only where the operator allows (app.webhooks); a loopback receiver
        # needs both the allowlist and the private-address switch.
        settings = app_client.app.state.settings  # type: ignore[attr-defined]
        settings.webhook_allowlist = [f"http://127.0.0.1:{receiver.server_port}/"]
        settings.webhook_allow_private = True
        run_id = create_external_run(app_client, actions={"webhook_url": url})
        ingest(app_client, run_id, rows(0, 5, loss="Infinity"))
        engine_of(app_client).poll()
        assert arrived.wait(10), "the webhook was never called"
    finally:
        receiver.shutdown()
    (payload,) = received
    assert payload["run_id"] == run_id and payload["finding"]["code"] == "nonfinite"
    assert payload["finding"]["evidence"]["value"] == "inf"


def test_a_running_run_that_goes_quiet_is_stalled_until_steps_resume(
    app_client: TestClient, quiet_settings: Settings
) -> None:
    base = engine_of(app_client)
    later = {"seconds": 0.0}
    engine = RuleEngine(
        base.db,
        base.store,
        base.cache,
        quiet_settings,
        clock=lambda: time.time() + later["seconds"],
    )
    run_id = create_external_run(app_client)
    ingest(app_client, run_id, rows(0, 20))
    engine.poll()
    assert engine.evaluate_run(run_id, clock_only=True) == []
    later["seconds"] = 3600.0  # an hour passes with no new step ...
    assert engine.evaluate_run(run_id, clock_only=True) == []  # ... alive? no sign yet
    with engine.db.session(write=True) as session:  # ... and its client beats on
        run = session.get(Run, run_id)
        assert run is not None
        run.heartbeat_at = time.time() + 3599
    (stalled,) = engine.evaluate_run(run_id, clock_only=True)
    assert stalled.code == "stalled" and stalled.severity == "critical"
    assert stalled.last_step == 19 and stalled.evidence["seconds_without_write"] >= 3600
    later["seconds"] = 0.0
    ingest(app_client, run_id, rows(20, 21))
    engine.poll()
    (finding,) = [f for f in findings(app_client, run_id) if f["code"] == "stalled"]
    assert finding["state"] == "resolved"


def test_a_resumed_launched_run_is_not_stalled_for_the_time_it_was_stopped(
    app_client: TestClient,
) -> None:
    engine = engine_of(app_client)
    created = app_client.post("/api/runs", json={"name": "resume", "config": {"max_steps": 100}})
    run_id = created.json()["id"]
    with engine.db.session(write=True) as session:
        assert claim_next_run(session, "test-worker") is not None
    ingest(app_client, run_id, rows(0, 20))
    engine.poll()
    with engine.db.session(write=True) as session:  # the run stopped 15 minutes ago
        run = session.get(Run, run_id)
        assert run is not None
        transition(session, run, RunStatus.stopped)
        session.execute(update(Event).where(Event.run_id == run_id).values(
            created_at=Event.created_at - 900))  # fmt: skip
    assert app_client.post(f"/api/runs/{run_id}/resume").status_code == 200
    with engine.db.session(write=True) as session:
        assert claim_next_run(session, "test-worker") is not None  # running again, just now
    assert engine.evaluate_run(run_id, clock_only=True) == []
    with engine.db.session(write=True) as session:  # as if it had resumed 15 minutes ago
        session.execute(update(Event).where(Event.run_id == run_id).values(
            created_at=Event.created_at - 900))  # fmt: skip
        session.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=time.time()))
    (stalled,) = engine.evaluate_run(run_id, clock_only=True)
    assert stalled.code == "stalled"


def test_a_grad_norm_spike_links_to_the_loss_spike_it_warned_of(app_client: TestClient) -> None:
    run_id = create_external_run(app_client)
    rng = np.random.default_rng(0)
    rows_ = [
        {
            "step": step,
            "metrics": {
                "train/loss": float(2.0 * (1 + 0.01 * rng.standard_normal())),
                "train/grad_norm": float(0.5 * (1 + 0.05 * rng.standard_normal())),
            },
        }
        for step in range(300)
    ]
    rows_[200]["metrics"]["train/grad_norm"] = 12.0  # the early warning...
    rows_[201]["metrics"]["train/loss"] = 6.0  # ...of the loss spike a step later
    ingest(app_client, run_id, rows_)
    engine_of(app_client).poll()
    by_code = {f["code"]: f for f in findings(app_client, run_id)}
    grad, loss = by_code["grad_norm_spike"], by_code["loss_spike"]
    assert (grad["first_step"], loss["first_step"]) == (200, 201)
    assert loss["linked_finding_id"] == grad["id"] and grad["linked_finding_id"] == loss["id"]


def test_a_long_backlog_is_judged_a_chunk_per_pass(app_client: TestClient) -> None:
    engine = engine_of(app_client)
    run_id = create_external_run(app_client)
    history = rows(0, 12_000)
    history[11_000]["metrics"]["train/loss"] = "NaN"
    assert ingest(app_client, run_id, history).status_code == 200
    engine.poll()  # steps 0..4999
    engine.poll()  # 5000..9999
    assert engine.catching_up
    assert [f for f in findings(app_client, run_id) if f["code"] == "nonfinite"] == []
    engine.poll()  # the rest, without any new write to wake it
    (finding,) = [f for f in findings(app_client, run_id) if f["code"] == "nonfinite"]
    assert finding["first_step"] == 11_000 and not engine.catching_up


def test_a_clock_pass_that_finds_new_steps_judges_them_once(app_client: TestClient) -> None:
    engine = engine_of(app_client)
    run_id = create_external_run(app_client)
    ingest(app_client, run_id, rows(0, 30))
    ingest(app_client, run_id, rows(30, 33, loss="NaN"))
    (opened,) = engine.evaluate_run(run_id, clock_only=True)  # before any poll saw the events
    assert opened.code == "nonfinite"
    assert engine.evaluate_run(run_id, clock_only=True) == []
    engine.poll()  # the feed's events for those steps change nothing now
    ingest(app_client, run_id, rows(33, 40))
    engine.poll()
    (finding,) = [f for f in findings(app_client, run_id) if f["code"] == "nonfinite"]
    assert (finding["first_step"], finding["last_step"], finding["state"]) == (30, 32, "resolved")

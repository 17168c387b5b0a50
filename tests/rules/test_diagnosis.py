"""Diagnoses above symptoms: GET /api/runs/{id}/diagnosis and the `diagnosis` event."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.config import Settings
from app.main import create_app
from app.models import Event, Finding
from app.rules.diagnosis import RunFacts, diagnose
from app.rules.engine import RuleEngine
from tests.api.helpers import create_external_run, ingest
from tests.rules.helpers import noisy_decay


@pytest.fixture
def app_client(settings: Settings) -> Iterator[TestClient]:
    quiet = settings.model_copy(update={"rules_enabled": False, "rules_settle_seconds": 0.0})
    with TestClient(create_app(quiet)) as client:
        yield client


def judge(client: TestClient) -> None:
    engine = client.app.state.rules  # type: ignore[attr-defined]
    assert isinstance(engine, RuleEngine)
    engine.poll()


def diagnosis(client: TestClient, run_id: int) -> dict[str, Any]:
    response = client.get(f"/api/runs/{run_id}/diagnosis")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_an_lr_far_too_high_is_one_diagnosis_naming_the_lr_with_the_runs_numbers(
    app_client: TestClient,
) -> None:
    vocab = 65
    run_id = create_external_run(
        app_client, lr=0.5, grad_clip=1.0, warmup_steps=10, vocab_size=vocab
    )
    rng = np.random.default_rng(0)
    rows = []
    losses = {}
    for step in range(260):
        loss = math.log(vocab) * (0.97**step) if step < 2 else 25.0 + rng.normal(0, 0.3)
        losses[step] = loss
        metrics: dict[str, Any] = {"train/loss": loss, "train/grad_norm": 40 + rng.normal(0, 2)}
        metrics["train/lr"] = 0.5
        if step % 10 == 0:
            for layer in ("h0.mlp", "h1.mlp"):
                metrics[f"act/{layer}/frac_saturated"] = 0.6 if step >= 20 else 0.0
        rows.append({"step": step, "metrics": metrics})
    ingest(app_client, run_id, rows)
    judge(app_client)
    document = diagnosis(app_client, run_id)
    assert document["run_id"] == run_id and document["state"] == "problems"
    first = document["diagnoses"][0]
    assert first["cause"] == "lr_too_high" and first["severity"] == "critical"
    summary = first["summary"]
    assert summary.startswith("Learning rate 0.5 is too high: the loss rose at step 2 and ")
    # The value quoted is the loss at the step quoted beside it (the chart agrees).
    quoted = re.search(r"\(([\d.]+) at step (\d+), ([\d.]+)x ln V\)", summary)
    assert quoted is not None, summary
    value, step = float(quoted[1]), int(quoted[2])
    assert value == float(f"{losses[step]:.3g}") and quoted[3] == f"{value / math.log(vocab):.1f}"
    assert "x ln V" in summary and "grad norm at the clip on 100% of steps" in summary
    assert "2 of 2 MLP layers saturated (h0.mlp, h1.mlp)" in summary
    assert "to about 0.05-0.17" in first["fix"]  # lr / 10 .. lr / 3
    # 0.05 is still far above where Adam trains a small GPT: the fix says so, and no
    # checkpoint predates the first symptom (the schedule, at step 0).
    assert "usually train at 1e-4 to 1e-3" in first["fix"]
    assert first["fix"].endswith("Restart from scratch: the trouble began at the first step.")
    codes = {symptom["code"] for symptom in first["symptoms"]}
    assert {"divergence", "clip_saturation", "activation_saturation"} <= codes
    # Per-layer symptoms of one rule are one finding that lists the layers.
    findings = app_client.get(f"/api/runs/{run_id}/findings").json()
    (saturation,) = [f for f in findings if f["code"] == "activation_saturation"]
    assert saturation["evidence"]["layers"] == ["h0.mlp", "h1.mlp"]
    (symptom,) = [s for s in first["symptoms"] if s["code"] == "activation_saturation"]
    assert symptom["layers"] == ["h0.mlp", "h1.mlp"]
    assert set(first["finding_ids"]) <= {f["id"] for f in findings}
    # The same document went out on the run's stream.
    engine = app_client.app.state.rules  # type: ignore[attr-defined]
    with engine.db.session() as session:
        payloads = session.scalars(
            select(Event.payload).where(Event.run_id == run_id, Event.kind == "diagnosis")
        ).all()
    assert payloads and json.loads(payloads[-1]) == document


def loss_rows(loss: np.ndarray) -> list[dict[str, Any]]:
    return [{"step": s, "metrics": {"train/loss": float(v)}} for s, v in enumerate(loss)]


def test_a_bad_batch_a_healthy_run_and_a_run_without_data(app_client: TestClient) -> None:
    empty = create_external_run(app_client)
    assert diagnosis(app_client, empty) == {"run_id": empty, "state": "no_data", "diagnoses": []}
    healthy = create_external_run(app_client)
    loss = noisy_decay(200)
    ingest(app_client, healthy, loss_rows(loss))
    bad = create_external_run(app_client)
    loss[120] = 3 * loss[119]
    ingest(app_client, bad, loss_rows(loss))
    judge(app_client)
    assert diagnosis(app_client, healthy) == {
        "run_id": healthy,
        "state": "healthy",
        "diagnoses": [],
    }
    # With no finding to announce it, the healthy verdict still went out on the stream
    # (a page opened before the first step showed "no data yet"), once.
    engine = app_client.app.state.rules  # type: ignore[attr-defined]
    ingest(app_client, healthy, [{"step": 200, "metrics": {"train/loss": float(loss[-1])}}])
    judge(app_client)
    with engine.db.session() as session:
        sent = session.scalars(
            select(Event.payload).where(Event.run_id == healthy, Event.kind == "diagnosis")
        ).all()
    assert [json.loads(payload)["state"] for payload in sent] == ["healthy"]
    (batch,) = diagnosis(app_client, bad)["diagnoses"]
    assert batch["cause"] == "bad_batch" and batch["first_step"] == 120
    assert "the loss jumped to" in batch["summary"] and "at step 120" in batch["summary"]
    assert app_client.get("/api/runs/999999/diagnosis").status_code == 404


def test_spikes_whose_evidence_quotes_no_numbers_still_read_as_a_sentence() -> None:
    spikes = [
        Finding(
            id=i,
            run_id=1,
            code="loss_spike",
            title="Loss spike",
            severity="warning",
            state="resolved",
            first_step=step,
            last_step=step + 3,
            evidence={},
        )
        for i, step in ((1, 10), (2, 150))
    ]
    (batch,) = diagnose(1, RunFacts(config={}), spikes)["diagnoses"]
    assert batch["summary"] == "One-off spikes at steps 10, 150."
    (single,) = diagnose(1, RunFacts(config={}), spikes[:1])["diagnoses"]
    assert single["summary"] == "One-off spike at step 10."
    spikes[0].evidence = {"value": 9.0, "ratio": 3.0, "steps_to_resolve": 1}
    (quoted,) = diagnose(1, RunFacts(config={}), spikes[:1])["diagnoses"]
    assert quoted["summary"].endswith(
        "the loss jumped to 9 at step 10 (3.0x its median), back to its level after 1 step."
    )


def test_a_symptom_in_many_layers_names_four_and_counts_the_rest() -> None:
    layers = ["wte", "wpe", "h0", "h1", "ln_f"]
    saturated = Finding(
        id=1,
        run_id=1,
        code="update_ratio",
        title="Update-to-weight ratio out of range",
        severity="warning",
        state="firing",
        first_step=10,
        last_step=20,
        evidence={"layers": layers},
    )
    facts = RunFacts(config={}, layer_counts={"ratio": 5})
    (document,) = diagnose(1, facts, [saturated])["diagnoses"]
    assert "5 of 5 layers with updates outside the healthy band" in document["summary"]
    assert "(wte, wpe, h0, h1, +1 more)" in document["summary"]

"""POST /api/estimate, and launches refused when their memory budget cannot fit."""

from __future__ import annotations

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from trainer.config import TrainConfig
from trainer.memory import estimate_memory

# In bounds, but ~400 B parameters: ~6.6 TB of optimizer state alone.
HUGE_MODEL = {"n_layer": 128, "n_embd": 16_384, "n_head": 128, "device": "cpu"}


def test_estimate_returns_the_breakdown_in_bytes(client: httpx.Client) -> None:
    config = {"n_layer": 2, "n_embd": 64, "n_head": 4, "tokenizer": "bpe", "vocab_size": 1024}
    response = client.post("/api/estimate", json={"config": config})
    assert response.status_code == 200, response.text
    body = response.json()
    terms = body["terms"]
    expected = estimate_memory(TrainConfig(**config))
    assert terms == expected.terms
    assert terms["parameters"] == expected.parameters > 0
    assert body["total_bytes"] == sum(v for k, v in terms.items() if k != "parameters")
    for key in ("weights", "gradients", "optimizer", "activations"):
        assert terms[key] > 0
    assert body["activations_with_checkpointing"] < body["activations_without_checkpointing"]
    # device "auto" with no GPU named: this host's RAM.
    assert body["device_bytes"] == psutil.virtual_memory().total and body["fits"] is True
    assert "RAM" in body["device"]


def test_estimate_takes_a_preset_and_names_bad_fields(client: httpx.Client) -> None:
    response = client.post("/api/estimate", json={"preset": "lr_finder", "config": {}})
    assert response.status_code == 200, response.text
    response = client.post("/api/estimate", json={"config": {"n_layer": 100_000}})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["field"] == "config.n_layer" and "256" in error["msg"]


def test_impossible_launch_is_refused_and_nothing_is_written(client: httpx.Client) -> None:
    # The example: refused by the size bounds, naming the field and the limit.
    response = client.post(
        "/api/runs", json={"config": {"batch_size": 1_000_000, "block_size": 100_000}}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "config.batch_size"
    assert "65536" in response.json()["detail"][0]["msg"]
    # In bounds but larger than any memory: refused by the budget, naming the largest term.
    response = client.post("/api/runs", json={"name": "huge", "config": HUGE_MODEL})
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["field"] == "config"
    assert "largest term is optimizer" in error["msg"] and "smaller model" in error["msg"]
    assert client.get("/api/runs").json()["total"] == 0
    estimate = client.post("/api/estimate", json={"config": HUGE_MODEL}).json()
    assert estimate["fits"] is False and estimate["largest_term"] == "optimizer"


def test_activation_bound_launch_names_the_remedies(client: httpx.Client) -> None:
    config = {"batch_size": 65_536, "block_size": 131_072, "device": "cpu"}
    response = client.post("/api/runs", json={"config": config})
    assert response.status_code == 422
    message = response.json()["detail"][0]["msg"]
    assert "largest term is activations" in message
    for remedy in ("grad_accum_steps", "grad_checkpointing", "bf16"):
        assert remedy in message


@pytest.mark.parametrize(
    ("gpu_name", "device_bytes"), [("NVIDIA H100 80GB HBM3", 80e9), (None, 192e9)]
)
def test_cuda_runs_are_checked_against_the_named_or_largest_gpu(
    settings: Settings, gpu_name: str | None, device_bytes: float
) -> None:
    app = create_app(settings.model_copy(update={"gpu_name": gpu_name}))
    # ~70 GB: fits an 80 GB H100; twice the layers fit only the largest GPU.
    fits_h100 = {"n_layer": 16, "n_embd": 4096, "n_head": 32, "device": "cuda", "block_size": 64}
    with TestClient(app) as client:
        body = client.post("/api/estimate", json={"config": fits_h100}).json()
        assert body["device_bytes"] == int(device_bytes) and body["fits"] is True
        too_big = {**fits_h100, "n_layer": 32}
        response = client.post("/api/runs", json={"config": too_big})
        assert response.status_code == (422 if gpu_name else 201), response.text


def test_resume_is_refused_when_the_stored_config_cannot_fit(
    client: httpx.Client, settings: Settings
) -> None:
    from app.db import Database
    from app.models import Run

    run_id = client.post("/api/runs", json={"config": {"max_steps": 100}}).json()["id"]
    assert client.post(f"/api/runs/{run_id}/stop").json()["status"] == "stopped"
    # A run stored before the budget existed (or by an older version) with a huge model.
    db = Database(settings.resolved_database_url)
    with db.session(write=True) as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.config = {**run.config, **HUGE_MODEL}
    db.dispose()
    response = client.post(f"/api/runs/{run_id}/resume")
    assert response.status_code == 422
    assert "largest term is optimizer" in response.json()["detail"][0]["msg"]
    assert client.get(f"/api/runs/{run_id}").json()["status"] == "stopped"

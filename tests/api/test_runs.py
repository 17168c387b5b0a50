"""Run endpoints: create, list, read, lifecycle, delete, samples, presets."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from app.config import Settings
from app.db import Database
from app.models import Event, Finding, Metric, RunSeries, Sample
from tests.api.helpers import create_external_run, ingest


def _create(client: httpx.Client, **body: object) -> httpx.Response:
    return client.post("/api/runs", json=body)


def test_launched_run_is_queued_with_a_validated_config(client: httpx.Client) -> None:
    response = _create(
        client,
        name="tiny",
        config={"n_layer": 2, "n_embd": 64, "n_head": 4, "max_steps": 50, "warmup_steps": 5},
    )
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["status"] == "queued" and run["source"] == "launched"
    assert run["config"]["n_layer"] == 2
    # Defaults are filled in, so the stored config is the whole TrainConfig.
    assert run["config"]["seed"] is not None and "lr" in run["config"]
    assert run["max_steps"] == 50
    assert (
        run["tokens_per_step"]
        == run["config"]["batch_size"]
        * run["config"]["block_size"]
        * run["config"]["grad_accum_steps"]
    )


def test_invalid_configs_are_rejected_naming_the_field(
    client: httpx.Client, settings: Settings
) -> None:
    cases = [
        ({"n_embd": 100, "n_head": 3}, "n_embd (100) must be divisible by n_head (3)"),
        ({"lr": -1}, "config.lr"),
        ({"schedule": "exponential"}, "config.schedule"),
        ({"not_a_field": 1}, "config.not_a_field"),
        ({"dataset": "nowhere"}, "no dataset named 'nowhere'"),
    ]
    for config, expected in cases:
        response = _create(client, config=config)
        assert response.status_code == 422, config
        detail = response.json()["detail"]
        text = " ".join(f"{d['field']} {d['msg']}" for d in detail)
        assert expected in text, (config, detail)
    response = _create(client, preset="no_such_preset")
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "preset"
    assert client.get("/api/runs").json()["total"] == 0  # nothing was written


def test_preset_runs_take_overrides(client: httpx.Client) -> None:
    presets = client.get("/api/presets").json()
    names = {preset["name"] for preset in presets}
    assert "healthy" in names
    healthy = next(preset for preset in presets if preset["name"] == "healthy")
    assert healthy["config"]["max_steps"] > 0 and healthy["expected_findings"] == []
    response = _create(client, preset="healthy", config={"max_steps": 123})
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["preset"] == "healthy" and run["config"]["max_steps"] == 123
    assert run["name"].startswith(f"healthy-{run['id']} ")  # preset, id and shape


def test_external_run_keeps_its_free_form_config(client: httpx.Client) -> None:
    response = _create(
        client,
        name="my script",
        source="external",
        config={"vocab_size": 50257, "anything": [1, 2]},
    )
    assert response.status_code == 201
    run = response.json()
    assert run["status"] == "running" and run["source"] == "external"
    assert run["config"] == {"vocab_size": 50257, "anything": [1, 2]}
    assert run["started_at"] is not None
    assert _create(client, source="external", preset="healthy").status_code == 422
    assert _create(client, source="robot").status_code == 422


def test_list_filters_pages_and_sorts_newest_first(client: httpx.Client) -> None:
    ids = [create_external_run(client, name=f"run-{i}") for i in range(5)]
    queued = _create(client, name="queued-one", config={"max_steps": 10, "warmup_steps": 1}).json()[
        "id"
    ]
    listing = client.get("/api/runs").json()
    assert listing["total"] == 6
    assert [run["id"] for run in listing["runs"]] == [queued, *reversed(ids)]
    page = client.get("/api/runs", params={"limit": 2, "offset": 2}).json()
    assert [run["id"] for run in page["runs"]] == [ids[3], ids[2]]
    assert page["total"] == 6
    only_queued = client.get("/api/runs", params={"status": "queued"}).json()
    assert [run["id"] for run in only_queued["runs"]] == [queued]
    both = client.get("/api/runs", params={"status": "queued,running"}).json()
    assert both["total"] == 6
    named = client.get("/api/runs", params={"q": "run-3"}).json()
    assert [run["name"] for run in named["runs"]] == ["run-3"]
    bad = client.get("/api/runs", params={"status": "sleeping"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "status"
    assert client.get("/api/runs", params={"limit": 0}).status_code == 422


def test_summary_carries_latest_values_and_finding_counts(
    client: httpx.Client, settings: Settings
) -> None:
    run_id = create_external_run(client)
    ingest(
        client,
        run_id,
        [
            {
                "step": 7,
                "metrics": {
                    "train/loss": 2.0,
                    "val/loss": 2.2,
                    "perf/tokens_per_sec": 1000.0,
                    "act/h0.mlp/std": 1.0,
                },
            }
        ],
    )
    db = Database(settings.resolved_database_url)
    with db.session(write=True) as session:
        for severity, state in [
            ("warning", "firing"),
            ("critical", "resolved"),
            ("warning", "acknowledged"),
        ]:
            session.add(
                Finding(
                    run_id=run_id,
                    code="x",
                    title="x",
                    severity=severity,
                    state=state,
                    first_step=1,
                    last_step=2,
                )
            )
    db.dispose()
    summary = client.get("/api/runs").json()["runs"][0]
    assert summary["latest"]["train/loss"]["value"] == 2.0
    assert summary["latest"]["val/loss"]["step"] == 7
    assert "act/h0.mlp/std" not in summary["latest"]  # the list carries the headline keys only
    assert summary["findings"] == {"info": 0, "warning": 2, "critical": 1, "firing": 1}
    detail = client.get(f"/api/runs/{run_id}").json()
    assert "act/h0.mlp/std" in detail["latest"]
    assert detail["keys"] == sorted(
        ["train/loss", "val/loss", "perf/tokens_per_sec", "act/h0.mlp/std"]
    )


def test_lifecycle_transitions(client: httpx.Client) -> None:
    run_id = _create(client, config={"max_steps": 10, "warmup_steps": 1}).json()["id"]
    stopped = client.post(f"/api/runs/{run_id}/stop")
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    again = client.post(f"/api/runs/{run_id}/stop")
    assert again.status_code == 409 and "stopped" in again.json()["detail"]
    resumed = client.post(f"/api/runs/{run_id}/resume")
    assert resumed.status_code == 200
    assert resumed.json()["status"] == "queued" and resumed.json()["attempt"] == 1
    assert client.post(f"/api/runs/{run_id}/resume").status_code == 409
    assert (
        client.post(f"/api/runs/{run_id}/finish").status_code == 409
    )  # launched runs: worker reports

    external = create_external_run(client)
    assert client.post(f"/api/runs/{external}/resume").status_code == 409
    assert client.post(f"/api/runs/{external}/heartbeat").status_code == 204
    finished = client.post(
        f"/api/runs/{external}/finish", json={"status": "failed", "error": "OOM"}
    )
    assert finished.status_code == 200
    assert finished.json()["status"] == "failed" and finished.json()["error"] == "OOM"
    assert finished.json()["finished_at"] is not None
    assert client.post(f"/api/runs/{external}/finish", json={}).status_code == 409
    assert client.post(f"/api/runs/{external}/heartbeat").status_code == 409
    bad = client.post(f"/api/runs/{external}/finish", json={"status": "exploded"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "status"
    for path in ("stop", "resume", "finish", "heartbeat"):
        assert client.post(f"/api/runs/999/{path}").status_code == 404


def test_delete_takes_metrics_findings_and_samples_with_it(
    client: httpx.Client, settings: Settings
) -> None:
    run_id = create_external_run(client)
    keep_id = create_external_run(client, name="keep")
    for target in (run_id, keep_id):
        ingest(client, target, [{"step": s, "metrics": {"loss": 1.0}} for s in range(100)])
        assert (
            client.post(
                f"/api/runs/{target}/samples", json={"step": 5, "text": "hello"}
            ).status_code
            == 201
        )
    db = Database(settings.resolved_database_url)
    with db.session(write=True) as session:
        session.add(Finding(run_id=run_id, code="x", title="x", severity="info", state="firing"))
    assert client.delete(f"/api/runs/{run_id}").status_code == 204
    assert client.get(f"/api/runs/{run_id}").status_code == 404
    assert client.delete(f"/api/runs/{run_id}").status_code == 404
    with db.session() as session:
        for model in (Metric, Sample, Finding, RunSeries):
            remaining = session.scalar(
                select(func.count()).select_from(model).where(model.run_id == run_id)
            )
            assert remaining == 0, model.__name__
        kept = session.scalar(
            select(func.count()).select_from(Metric).where(Metric.run_id == keep_id)
        )
        assert kept == 100
        kinds = session.scalars(select(Event.kind).where(Event.run_id == run_id)).all()
        assert "deleted" in kinds
    db.dispose()


def test_a_deleted_runs_id_is_never_given_to_a_new_run(client: httpx.Client) -> None:
    """A script still logging to a deleted run, or a worker reporting how its child
    ended, must not write into whichever run is created next."""
    first = create_external_run(client)
    newest = create_external_run(client, name="newest")
    assert client.delete(f"/api/runs/{newest}").status_code == 204
    created = create_external_run(client, name="after")
    assert created > newest > first
    assert (
        client.post(
            f"/api/runs/{newest}/metrics", json={"rows": [{"step": 0, "metrics": {"loss": 1.0}}]}
        ).status_code
        == 404
    )


def test_samples_newest_first(client: httpx.Client) -> None:
    run_id = create_external_run(client)
    for step in (10, 30, 20):
        client.post(f"/api/runs/{run_id}/samples", json={"step": step, "text": f"sample at {step}"})
    samples = client.get(f"/api/runs/{run_id}/samples", params={"limit": 2}).json()
    assert [sample["step"] for sample in samples] == [30, 20]
    assert samples[0]["text"] == "sample at 30"
    bad = client.post(f"/api/runs/{run_id}/samples", json={"step": -5, "text": "x"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "step"


def test_config_schema_describes_train_config(client: httpx.Client) -> None:
    schema = client.get("/api/config-schema").json()
    properties = schema["properties"]
    assert properties["n_layer"]["default"] > 0
    assert set(properties["schedule"]["enum"]) == {"constant", "cosine", "linear"}
    assert {"lr", "warmup_steps", "grad_clip", "precision", "dataset"} <= set(properties)

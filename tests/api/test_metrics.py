"""Ingest and query: faithful non-finite values, idempotent writes, atomic batches,
extreme-preserving downsampling."""

from __future__ import annotations

import math

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select

from app.config import Settings
from app.db import Database
from app.metrics.store import MetricRow, MetricStore
from app.models import Metric, NonFinite
from tests.api.helpers import create_external_run, decode, ingest, series, strict_json


def _point_count(settings: Settings, run_id: int) -> int:
    db = Database(settings.resolved_database_url)
    with db.session() as session:
        count = session.scalar(
            select(func.count()).select_from(Metric).where(Metric.run_id == run_id)
        )
    db.dispose()
    return int(count or 0)


def test_nan_and_infinities_round_trip(client: httpx.Client, settings: Settings) -> None:
    run_id = create_external_run(client)
    rows = [
        {"step": 0, "metrics": {"train/loss": 4.0, "train/grad_norm": 1.5}},
        {"step": 1, "metrics": {"train/loss": "NaN", "train/grad_norm": "Infinity"}},
        {"step": 2, "metrics": {"train/loss": "-Infinity", "train/grad_norm": 0.0}},
    ]
    assert ingest(client, run_id, rows).status_code == 200

    loss = series(client, run_id, "train/loss")
    assert loss["steps"] == [0, 1, 2]
    assert loss["values"] == [4.0, "NaN", "-Infinity"]
    grad = series(client, run_id, "train/grad_norm")
    assert grad["values"] == [1.5, "Infinity", 0.0]

    # Stored faithfully: SQLite would turn NaN into NULL, so the marker must say which.
    db = Database(settings.resolved_database_url)
    with db.session() as session:
        flags = session.execute(
            select(Metric.step, Metric.nonfinite)
            .where(Metric.run_id == run_id)
            .order_by(Metric.step)
        ).all()
    db.dispose()
    by_step = {}
    for step, flag in flags:
        by_step.setdefault(step, set()).add(flag)
    assert by_step[1] == {NonFinite.nan, NonFinite.pos_inf}
    assert NonFinite.neg_inf in by_step[2]

    detail = strict_json(client.get(f"/api/runs/{run_id}").text)
    assert detail["latest"]["train/loss"]["value"] == "-Infinity"
    csv_text = client.get(f"/api/runs/{run_id}/metrics.csv").text
    assert "train/loss,1,NaN," in csv_text and "train/grad_norm,1,Infinity," in csv_text


def test_json_nan_tokens_are_accepted_but_never_returned(client: httpx.Client) -> None:
    run_id = create_external_run(client)
    body = '{"rows": [{"step": 3, "metrics": {"train/loss": NaN}}]}'
    response = client.post(
        f"/api/runs/{run_id}/metrics", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    strict_json(client.get(f"/api/runs/{run_id}/metrics").text)  # raises on NaN tokens
    assert series(client, run_id, "train/loss")["values"] == ["NaN"]


def test_retried_batch_never_duplicates(client: httpx.Client, settings: Settings) -> None:
    run_id = create_external_run(client)
    rows = [
        {"step": s, "metrics": {"train/loss": 5.0 - s * 0.01, "train/lr": 1e-3}} for s in range(500)
    ]
    assert ingest(client, run_id, rows).status_code == 200
    assert ingest(client, run_id, rows).status_code == 200
    assert _point_count(settings, run_id) == 1000
    # A re-sent step with a new value replaces the old one (a resumed run rewrites).
    assert ingest(client, run_id, [{"step": 10, "metrics": {"train/loss": 9.0}}]).status_code == 200
    loss = series(client, run_id, "train/loss")
    assert loss["total_points"] == 500
    assert loss["values"][10] == 9.0
    assert _point_count(settings, run_id) == 1000


def test_rejected_batch_writes_nothing(client: httpx.Client, settings: Settings) -> None:
    run_id = create_external_run(client)
    rows: list[dict[str, object]] = [
        {"step": s, "metrics": {"train/loss": 1.0}} for s in range(1000)
    ]
    rows[737] = {"step": 737, "metrics": {"train/loss": "lots"}}
    response = ingest(client, run_id, rows)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail[0]["field"] == "rows[737].metrics.train/loss"
    assert "NaN" in detail[0]["msg"]
    assert _point_count(settings, run_id) == 0
    # Other malformed rows name their row and field too.
    for bad_row, field in [
        ({"metrics": {"a": 1.0}}, "rows[0].step"),
        ({"step": -1, "metrics": {"a": 1.0}}, "rows[0].step"),
        ({"step": 1, "metrics": {}}, "rows[0].metrics"),
        ({"step": 1, "metrics": {"a": True}}, "rows[0].metrics.a"),
        ({"step": 1, "metrics": {"a": 1.0}, "extra": 1}, "rows[0].extra"),
    ]:
        response = ingest(client, run_id, [bad_row])
        assert response.status_code == 422, bad_row
        assert response.json()["detail"][0]["field"] == field
    assert ingest(client, run_id, []).status_code == 422
    assert _point_count(settings, run_id) == 0


def test_unknown_run_is_404(client: httpx.Client) -> None:
    response = ingest(client, 12345, [{"step": 0, "metrics": {"a": 1.0}}])
    assert response.status_code == 404
    assert "run 12345 not found" in response.json()["detail"]
    assert client.get("/api/runs/12345/metrics").status_code == 404
    assert client.get("/api/runs/12345/metrics.csv").status_code == 404


def test_ten_thousand_rows_in_one_request(client: httpx.Client, settings: Settings) -> None:
    run_id = create_external_run(client)
    rows = [
        {
            "step": s,
            "metrics": {"train/loss": 3.0, "train/grad_norm": 1.0, "perf/step_ms": 12.0},
            "time": 1.7e9 + s,
        }
        for s in range(10_000)
    ]
    response = ingest(client, run_id, rows)
    assert response.status_code == 200
    assert response.json()["points"] == 30_000
    assert _point_count(settings, run_id) == 30_000
    assert client.get(f"/api/runs/{run_id}").json()["last_step"] == 9_999


def test_full_resolution_when_range_fits(client: httpx.Client) -> None:
    run_id = create_external_run(client)
    rows = [{"step": s, "metrics": {"x": float(s % 7)}} for s in range(300)]
    ingest(client, run_id, rows)
    whole = series(client, run_id, "x", max_points=300)
    assert whole["downsampled"] is False and whole["method"] == "none"
    assert whole["steps"] == list(range(300))
    window = series(client, run_id, "x", start=100, end=149, max_points=50)
    assert window["steps"] == list(range(100, 150)) and window["total_points"] == 50
    assert window["downsampled"] is False


# The query and downsampling path is the same code on both databases; a million-row
# write is the slow part, so this runs on SQLite only.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_one_step_spike_survives_downsampling(settings: Settings, client: httpx.Client) -> None:
    """1,000,000 steps answered with 1,000 points: the one-step spike and the one-step dip
    are in the answer. Stride sampling would keep every 1000th step and miss both."""
    run_id = create_external_run(client)
    n = 1_000_000
    rng = np.random.default_rng(0)
    values = 3.0 + 0.05 * rng.standard_normal(n)
    spike_step, dip_step = 612_347, 88_881
    values[spike_step] = 40.0
    values[dip_step] = -20.0
    store = MetricStore(Database(settings.resolved_database_url))
    steps = np.arange(n)
    for lo in range(0, n, 100_000):
        store.write(
            run_id,
            [
                MetricRow(int(s), {"train/loss": float(values[s])}, 1.7e9)
                for s in steps[lo : lo + 100_000]
            ],
        )
    store.db.dispose()
    stride_sample = set(range(0, n, n // 1000))
    assert spike_step not in stride_sample and dip_step not in stride_sample

    answer = series(client, run_id, "train/loss", max_points=1000)
    assert answer["downsampled"] is True and answer["method"] == "m4"
    assert answer["total_points"] == n
    assert len(answer["steps"]) <= 1000
    returned = dict(zip(answer["steps"], answer["values"], strict=True))
    assert returned.get(spike_step) == 40.0
    assert returned.get(dip_step) == -20.0
    assert answer["steps"] == sorted(answer["steps"])
    for method in ("minmax", "minmaxlttb"):
        other = series(client, run_id, "train/loss", max_points=1000, method=method)
        assert spike_step in other["steps"], method
    # A zoomed window around the spike is also downsampled with it kept.
    zoom = series(client, run_id, "train/loss", start=600_000, end=700_000, max_points=200)
    assert zoom["total_points"] == 100_001 and spike_step in zoom["steps"]


def test_non_finite_points_survive_downsampling(client: httpx.Client) -> None:
    run_id = create_external_run(client)
    rows = [{"step": s, "metrics": {"loss": 1.0 + (s % 5) * 0.1}} for s in range(20_000)]
    rows[4321]["metrics"]["loss"] = "NaN"
    rows[15000]["metrics"]["loss"] = "Infinity"
    ingest(client, run_id, rows)
    answer = series(client, run_id, "loss", max_points=100)
    returned = dict(zip(answer["steps"], answer["values"], strict=True))
    assert returned[4321] == "NaN" and returned[15000] == "Infinity"
    assert len(answer["steps"]) <= 100


def test_cached_series_follow_later_writes(client: httpx.Client) -> None:
    run_id = create_external_run(client)
    ingest(client, run_id, [{"step": s, "metrics": {"loss": 1.0}} for s in range(100)])
    assert series(client, run_id, "loss")["total_points"] == 100
    # Appending extends the series.
    ingest(client, run_id, [{"step": s, "metrics": {"loss": 2.0}} for s in range(100, 150)])
    appended = series(client, run_id, "loss")
    assert appended["total_points"] == 150 and appended["values"][-1] == 2.0
    # Rewriting earlier steps (a resumed run) replaces them.
    ingest(client, run_id, [{"step": s, "metrics": {"loss": 7.0}} for s in range(90, 120)])
    rewritten = series(client, run_id, "loss")
    assert rewritten["total_points"] == 150
    assert decode(rewritten["values"][90:120]) == [7.0] * 30
    assert rewritten["values"][89] == 1.0 and rewritten["values"][120] == 2.0


def test_query_parameters_are_validated(client: httpx.Client) -> None:
    run_id = create_external_run(client)
    cases = [
        ({"start": 10, "end": 5}, "end"),
        ({"max_points": 2}, "max_points"),
        ({"max_points": 10_000_000}, "max_points"),
        ({"method": "stride"}, "method"),
        ({"start": -1}, "start"),
        ({"keys": ","}, "keys"),
    ]
    for params, field in cases:
        response = client.get(f"/api/runs/{run_id}/metrics", params=params)
        assert response.status_code == 422, params
        assert response.json()["detail"][0]["field"] == field, response.json()


def test_all_keys_when_none_named_and_unknown_keys_empty(client: httpx.Client) -> None:
    run_id = create_external_run(client)
    ingest(client, run_id, [{"step": 0, "metrics": {"a": 1.0, "b/c": 2.0}}])
    body = client.get(f"/api/runs/{run_id}/metrics").json()
    assert set(body["series"]) == {"a", "b/c"}
    missing = series(client, run_id, "not/there")
    assert missing["total_points"] == 0 and missing["steps"] == []


def test_csv_export_is_full_resolution(client: httpx.Client) -> None:
    run_id = create_external_run(client)
    ingest(
        client,
        run_id,
        [
            {"step": s, "metrics": {"loss": s / 10, "lr": 0.5}, "time": 100.0 + s}
            for s in range(5000)
        ],
    )
    response = client.get(f"/api/runs/{run_id}/metrics.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    lines = response.text.strip().split("\n")
    assert lines[0] == "key,step,value,wall_time"
    assert len(lines) == 1 + 10_000
    assert "loss,4999,499.9,5099.0" in lines
    only_lr = client.get(f"/api/runs/{run_id}/metrics.csv", params={"keys": "lr"}).text
    assert len(only_lr.strip().split("\n")) == 1 + 5000
    assert all(line.startswith("lr,") for line in only_lr.strip().split("\n")[1:])


def test_latest_values_in_run_detail(client: httpx.Client) -> None:
    run_id = create_external_run(client)
    ingest(client, run_id, [{"step": 5, "metrics": {"train/loss": 2.5}}])
    ingest(client, run_id, [{"step": 3, "metrics": {"train/loss": 9.9}}])  # older step later
    detail = client.get(f"/api/runs/{run_id}").json()
    assert detail["latest"]["train/loss"]["step"] == 5
    assert detail["latest"]["train/loss"]["value"] == 2.5
    assert detail["last_step"] == 5
    assert math.isclose(series(client, run_id, "train/loss")["values"][0], 9.9)

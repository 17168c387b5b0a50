"""Strict input: ids and offsets within the database's integer range, names without
control characters, configs the database stores as sent, spreadsheet-safe CSV, short
error messages, and an OpenAPI schema that lists every status the service answers."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.config import Settings
from app.main import create_app
from app.models import Event
from app.spreadsheet import formula_safe
from tests.api.helpers import create_external_run, ingest
from tests.conftest import free_port

HUGE_IDS = [2**31, 2**63, 2**64]


@pytest.mark.parametrize("run_id", HUGE_IDS)
def test_ids_beyond_the_integer_column_are_422_not_500(client: TestClient, run_id: int) -> None:
    for method, path in (
        ("GET", f"/api/runs/{run_id}"),
        ("POST", f"/api/runs/{run_id}/stop"),
        ("POST", f"/api/runs/{run_id}/heartbeat"),
        ("DELETE", f"/api/runs/{run_id}"),
        ("GET", f"/api/runs/{run_id}/metrics"),
        ("GET", f"/api/runs/{run_id}/metrics.csv"),
        ("GET", f"/api/runs/{run_id}/findings"),
        ("GET", f"/api/runs/{run_id}/samples"),
        ("GET", f"/api/runs/{run_id}/stream"),
        ("POST", f"/api/findings/{run_id}/ack"),
    ):
        response = client.request(method, path)
        assert response.status_code == 422, (method, path, response.text)
        assert "run_id" in response.text or "finding_id" in response.text
    # The largest id that fits is simply not found.
    assert client.get(f"/api/runs/{2**31 - 1}").status_code == 404


def test_offsets_and_step_bounds_beyond_64_bits_are_422(client: TestClient) -> None:
    run_id = create_external_run(client)
    assert client.get("/api/runs", params={"offset": 2**63}).status_code == 422
    largest = client.get("/api/runs", params={"offset": 2**63 - 1})
    assert largest.status_code == 200 and largest.json()["runs"] == []
    for name in ("start", "end"):
        response = client.get(f"/api/runs/{run_id}/metrics", params={name: 2**63})
        assert response.status_code == 422, name
    response = client.get(f"/api/runs/{run_id}/stream", headers={"Last-Event-ID": str(2**63)})
    assert response.status_code == 422


@pytest.mark.parametrize("name", ["a\x00b", "line\nbreak", "bell\x07", "del\x7f"])
def test_run_names_with_control_characters_are_refused(client: TestClient, name: str) -> None:
    response = client.post("/api/runs", json={"name": name, "source": "external"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "name"
    assert "control characters" in response.json()["detail"][0]["msg"]
    assert client.get("/api/runs", params={"q": "a\x00b"}).status_code == 422
    assert client.get("/api/runs").json()["total"] == 0


def test_nul_in_logged_text_is_stored_as_a_replacement_character(client: TestClient) -> None:
    """A byte-level tokenizer can sample a NUL, which PostgreSQL text cannot hold: the
    sample (and any free text a script or person writes) is stored with U+FFFD in its
    place, not refused, so a script never retries a line it cannot deliver."""
    run_id = create_external_run(client)
    sample = client.post(f"/api/runs/{run_id}/samples", json={"step": 1, "text": "a\x00b\x00"})
    assert sample.status_code == 201, sample.text
    assert sample.json()["text"] == "a\ufffdb\ufffd"
    notes = client.patch(f"/api/runs/{run_id}", json={"notes": "lr\x00 too high"})
    assert notes.status_code == 200, notes.text
    finish = client.post(f"/api/runs/{run_id}/finish", json={"status": "failed", "error": "\x00!"})
    assert finish.status_code == 200, finish.text
    (stored,) = client.get(f"/api/runs/{run_id}/samples").json()
    assert stored["text"] == "a\ufffdb\ufffd"
    run = client.get(f"/api/runs/{run_id}").json()
    assert (run["notes"], run["error"]) == ("lr\ufffd too high", "\ufffd!")
    # Tabs and line breaks are ordinary text.
    ok = client.post(f"/api/runs/{run_id}/samples", json={"step": 2, "text": "a\n\tb"})
    assert ok.status_code == 201 and ok.json()["text"] == "a\n\tb"


def test_nul_in_a_sample_reaches_the_live_stream_replaced(client: TestClient) -> None:
    run_id = create_external_run(client)
    assert (
        client.post(f"/api/runs/{run_id}/samples", json={"step": 3, "text": "\x00"}).status_code
        == 201
    )
    db = client.app.state.db  # type: ignore[attr-defined]
    with db.session() as session:
        payload = session.scalars(
            select(Event.payload).where(Event.run_id == run_id, Event.kind == "sample")
        ).one()
    assert json.loads(payload)["text"] == "\ufffd"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a\x00b"}, "name"),
        ({"name": "line\nbreak"}, "name"),
        ({"tags": ["ok", "t\x00g"]}, "tags[1]"),
    ],
)
def test_renames_and_tags_with_control_characters_are_refused(
    client: TestClient, body: dict[str, object], field: str
) -> None:
    """Names and tags identify a run (lists, filters, file names): like a new run's name
    they refuse control characters, naming the field, rather than store a lookalike."""
    run_id = create_external_run(client, "kept")
    response = client.patch(f"/api/runs/{run_id}", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"] == field
    run = client.get(f"/api/runs/{run_id}").json()
    assert (run["name"], run["tags"]) == ("kept", [])


def test_nul_in_a_dataset_is_refused(client: TestClient) -> None:
    """A corpus is uploaded once, by a person who can fix it: refused, not altered."""
    dataset = client.post("/api/datasets", json={"name": "nul", "text": "abc\x00def"})
    assert dataset.status_code == 422


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("source", ["external", "launched"])
def test_configs_refuse_raw_non_finite_tokens(client: TestClient, token: str, source: str) -> None:
    body = f'{{"name": "x", "source": "{source}", "config": {{"lr": {token}}}}}'
    response = client.post(
        "/api/runs", content=body.encode(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    problem = response.json()["detail"][0]
    assert problem["field"] == "config.lr" and "finite" in problem["msg"]
    assert client.get("/api/runs").json()["total"] == 0


def test_configs_refuse_nul_in_keys_and_strings(client: TestClient) -> None:
    for config in ({"tag": "a\x00"}, {"a\x00": 1}, {"nested": [{"x": "\x00"}]}):
        response = client.post(
            "/api/runs", json={"name": "x", "source": "external", "config": config}
        )
        assert response.status_code == 422, config
    assert client.get("/api/runs").json()["total"] == 0


def test_csv_cells_that_a_spreadsheet_would_run_are_escaped(client: TestClient) -> None:
    run_id = create_external_run(client)
    keys = ['=HYPERLINK("http://evil.example")', "+cmd", "-x", "@SUM(A1)", "train/loss"]
    response = ingest(client, run_id, [{"step": 0, "metrics": {key: -1.5 for key in keys}}])
    assert response.status_code == 200, response.text
    rows = list(csv.reader(io.StringIO(client.get(f"/api/runs/{run_id}/metrics.csv").text)))
    cells = {row[0]: row for row in rows[1:]}
    assert set(cells) == {"'" + key for key in keys[:4]} | {"train/loss"}
    assert all(row[2] == "-1.5" for row in cells.values())  # numbers stay numbers
    assert formula_safe("\tx") == "'\tx" and formula_safe("a=b") == "a=b"


def test_error_messages_quote_bad_input_briefly(client: TestClient) -> None:
    long_key = "k" * 1_000_000
    body = f'{{"name": "x", "source": "external", "config": {{"{long_key}": NaN}}}}'
    response = client.post(
        "/api/runs", content=body.encode(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422 and len(response.content) < 2000
    response = client.get("/api/runs", params={"status": "s" * 10_000})
    assert response.status_code == 422 and len(response.content) < 2000
    response = client.post("/api/runs", json={"name": "x", "source": "external", long_key: 1})
    assert response.status_code == 422 and len(response.content) < 2000
    # The repro: a 5 MB metric name came back three times (15.7 MB).
    run_id = create_external_run(client)
    response = ingest(client, run_id, [{"step": 0, "metrics": {"k" * 5_000_000: 1.0}}])
    assert response.status_code == 422 and len(response.content) < 2000


def test_openapi_documents_every_status_and_the_422_shape(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    problem = schema["components"]["schemas"]["ValidationProblem"]
    assert problem["properties"]["detail"]["items"]["$ref"].endswith("/FieldProblem")
    assert set(schema["components"]["schemas"]["FieldProblem"]["required"]) == {
        "loc",
        "field",
        "msg",
        "type",
    }
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert "400" in statuses, (method, path)
            if path.startswith("/api"):
                assert {"401", "404", "413", "422"} <= statuses, (method, path)
                assert operation["responses"]["422"]["content"]["application/json"]["schema"][
                    "$ref"
                ].endswith("/ValidationProblem")
            if method in ("post", "delete"):
                assert {"403", "409", "415"} <= statuses, (method, path)


def test_unsupported_methods_are_answered_by_the_api_not_the_file_server(
    client: TestClient,
) -> None:
    for method, path in (("OPTIONS", "/api/runs"), ("PUT", "/api/runs/1"), ("PATCH", "/api/runs")):
        response = client.request(method, path)
        assert response.status_code == 405, (method, path)
        assert response.headers["allow"]
        assert response.json() == {"detail": "Method Not Allowed"}
    assert client.get("/api/no-such-thing").status_code == 404
    assert client.get("/api/no-such-thing").headers["content-type"] == "application/json"
    assert client.get("/index.html").status_code == 200


def test_healthz_fails_when_the_database_cannot_serve(tmp_path: Path) -> None:
    unreachable = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone"
    settings = Settings(data_dir=tmp_path, database_url=unreachable)
    # No lifespan (it would refuse to start): the process is up, the database is not.
    response = TestClient(create_app(settings)).get("/healthz")
    assert response.status_code == 503 and "database" in response.json()["detail"]


def test_the_422_body_matches_its_schema(client: httpx.Client) -> None:
    response = client.post("/api/runs", json={"name": 5})
    assert response.status_code == 422
    for item in response.json()["detail"]:
        assert set(item) == {"loc", "field", "msg", "type"}


def test_a_sample_step_beyond_the_column_is_422(client: TestClient) -> None:
    """Found by schemathesis: a 2**72 step was a 500 on PostgreSQL."""
    run_id = create_external_run(client)
    response = client.post(f"/api/runs/{run_id}/samples", json={"step": 2**72, "text": "x"})
    assert response.status_code == 422


@pytest.mark.parametrize("name", ["a\x00b", "tab\there", "bell\x07"])
def test_metric_names_with_control_characters_are_refused(client: TestClient, name: str) -> None:
    """Found by schemathesis: NUL in a metric name was a 500 on PostgreSQL."""
    run_id = create_external_run(client)
    response = ingest(client, run_id, [{"step": 0, "metrics": {name: 1.0, "ok": 2.0}}])
    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["field"] == "rows[0].metrics" and ascii(name) in problem["msg"], problem
    assert client.get(f"/api/runs/{run_id}").json()["keys"] == []


def test_dataset_uploads_are_parsed_off_the_loop_with_the_same_errors(
    client: TestClient,
) -> None:
    schema = client.get("/openapi.json").json()["paths"]["/api/datasets"]["post"]
    body_schema = schema["requestBody"]["content"]["application/json"]["schema"]
    assert set(body_schema["required"]) == {"name", "text"}
    json_type = {"Content-Type": "application/json"}
    broken = client.post("/api/datasets", content=b'{"name": "x", "text": ', headers=json_type)
    assert broken.status_code == 422 and broken.json()["detail"][0]["type"] == "json_invalid"
    extra = client.post("/api/datasets", json={"name": "x", "text": "abc", "more": 1})
    assert extra.status_code == 422 and extra.json()["detail"][0]["field"] == "more"
    ok = client.post("/api/datasets", json={"name": "tiny", "text": "abc " * 100})
    assert ok.status_code == 201 and ok.json()["n_chars"] == 400


def test_configs_nested_too_deeply_are_422_not_500(client: TestClient) -> None:
    """300 levels of lists was a 500: the stored run could not be serialized back."""
    for depth in (300, 900):
        nested = "[" * depth + "]" * depth
        body = f'{{"name": "x", "source": "external", "config": {{"a": {nested}}}}}'
        response = client.post(
            "/api/runs", content=body.encode(), headers={"Content-Type": "application/json"}
        )
        assert response.status_code in (400, 422), (depth, response.status_code)
    shallow = client.post(
        "/api/runs", json={"name": "x", "source": "external", "config": {"a": [[[1]]]}}
    )
    assert shallow.status_code == 201

"""Schemathesis against the running service's own /openapi.json, with and without a
token, on SQLite and PostgreSQL: no server errors, no status the schema does not list,
no response that breaks its schema, and unsupported methods answered 405.

The SSE streams are left out (a stream never ends, so it is no request/response
case); their refusals (401, 404, 422) are tested in test_security and test_strict_input.
Bounded: a fixed seed and a few examples per operation (about 20-40 s per server on
a busy 2-core machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, _fresh_postgres

CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance,unsupported_method"
TOKEN = "fuzz-token"


@pytest.fixture(
    params=[
        pytest.param(("sqlite", None), id="sqlite-no-token"),
        pytest.param(("sqlite", TOKEN), id="sqlite-token"),
        # The handlers are the same with or without a token: one PostgreSQL pass keeps
        # the whole file near a minute.
        pytest.param(("postgres", TOKEN), id="postgres-token", marks=pytest.mark.postgres),
    ]
)
def fuzz_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[LiveServer, str | None]]:
    database, token = request.param
    if database == "sqlite":
        urls: Iterator[str] = iter([request.getfixturevalue("sqlite_url")])
    else:
        urls = _fresh_postgres(request.getfixturevalue("postgres_template"))
    url = next(urls)
    env = {"TRAINLENS_TOKEN": token or "", "TRAINLENS_RULES_ENABLED": "0"}
    server = LiveServer(tmp_path / "live", url, extra_env=env)
    try:
        server.wait_ready()
        yield server, token
    finally:
        server.stop()
        for _ in urls:  # drops the PostgreSQL database
            pass


def seed(server: LiveServer, headers: dict[str, str]) -> None:
    """A run with points, a sample and a finished run, so run paths reach real data."""
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        for name in ("seeded", "finished"):
            created = client.post("/api/runs", json={"name": name, "source": "external"})
            assert created.status_code == 201, created.text
        metrics = {"train/loss": 2.5, "val/loss": "NaN"}
        rows = [{"step": s, "metrics": metrics} for s in range(5)]
        assert client.post("/api/runs/1/metrics", json={"rows": rows}).status_code == 200
        assert client.post("/api/runs/1/samples", json={"step": 4, "text": "hi"}).status_code == 201
        assert client.post("/api/runs/2/finish", json={"status": "completed"}).status_code == 200


def test_schemathesis_finds_nothing(
    fuzz_server: tuple[LiveServer, str | None], tmp_path: Path
) -> None:
    server, token = fuzz_server
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    seed(server, headers)
    report_path = tmp_path / "schemathesis.json"
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
        "--checks", CHECKS,
        "--max-examples", "8",
        "--seed", "14",
        "--exclude-path-regex", "/stream$",
        "--request-timeout", "20",
        "--report", "json", "--report-json-path", str(report_path),
        "--no-color",
    ]  # fmt: skip
    for name, value in headers.items():
        command += ["--header", f"{name}: {value}"]
    # cwd: schemathesis keeps a cache in the working directory.
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert report_path.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    report: dict[str, Any] = json.loads(report_path.read_text())
    cases = report["test_cases"]["generated"]
    failures = {group["title"]: group["count"] for group in report["failures"]}
    mode = "token" if token else "no token"
    # The closing note quotes these figures (pytest -s shows them).
    print(f"\nschemathesis ({mode}): {cases} cases, failures by check: {failures or 'none'}")
    assert report["operations"]["tested"] >= 20, report["operations"]
    assert cases > 300
    assert failures == {}, result.stdout[-6000:]
    assert report["errors"] == [], result.stdout[-6000:]
    assert "Internal Server Error" not in server.log_path.read_text()

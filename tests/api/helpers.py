"""Small helpers shared by the API tests."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx


def strict_json(text: str) -> Any:
    """Parse as RFC 8259 JSON: the NaN/Infinity tokens Python accepts are refused."""

    def refuse(token: str) -> Any:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def create_external_run(client: httpx.Client, name: str = "script", **config: Any) -> int:
    response = client.post("/api/runs", json={"name": name, "source": "external", "config": config})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def ingest(client: httpx.Client, run_id: int, rows: list[dict[str, Any]]) -> httpx.Response:
    return client.post(f"/api/runs/{run_id}/metrics", json={"rows": rows})


def series(client: httpx.Client, run_id: int, key: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/api/runs/{run_id}/metrics", params={"keys": key, **params})
    assert response.status_code == 200, response.text
    return strict_json(response.text)["series"][key]  # type: ignore[no-any-return]


def decode(values: list[float | str]) -> list[float]:
    special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
    return [special[v] if isinstance(v, str) else v for v in values]


# What a worker stores when a run's model does not fit in memory.
OOM_TRACEBACK = """exit code 1
2026-12-02 07:00:00 trainlens.job run 7: rank 0 of 1
Traceback (most recent call last):
  File "/app/trainer/train.py", line 160, in _setup
    self.model = build_model(config, vocab).to(self.device)
RuntimeError: [enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough \
memory: you tried to allocate 800008000000 bytes."""


def set_run_status(database_url: str, run_id: int, status: Any, error: str | None) -> None:
    """Change a run's status as the worker does (one transition, one change-feed event)."""
    from app.db import Database
    from app.models import Run
    from app.runs.lifecycle import transition

    db = Database(database_url)
    try:
        with db.session(write=True) as session:
            run = session.get(Run, run_id)
            assert run is not None
            transition(session, run, status, error)
    finally:
        db.dispose()

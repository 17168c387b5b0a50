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

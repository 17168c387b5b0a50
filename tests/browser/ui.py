"""Helpers for the browser tests: writing runs and metrics over REST, and reading what a
chart has actually plotted out of the page (Plotly keeps it on the plot element)."""

from __future__ import annotations

import math
from typing import Any

import httpx

from bench.ui_latency import wait_for_point
from tests.conftest import LiveServer

# The plotted data of one series: the trace whose meta names the key (and run).
_TRACE_JS = """
([chartId, key, role]) => {
  const plot = document.querySelector(`#chart-${chartId} .plot`);
  if (!plot || !plot.data) return null;
  const trace = plot.data.find((t) => t.meta && t.meta.key === key && t.meta.role === role);
  return trace ? { x: Array.from(trace.x), y: Array.from(trace.y), name: trace.name,
                   opacity: trace.opacity, visible: trace.visible } : null;
}
"""


def external_run(server: LiveServer, name: str, **config: Any) -> int:
    response = httpx.post(
        f"{server.url}/api/runs", json={"name": name, "source": "external", "config": config}
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def ingest(server: LiveServer, run_id: int, rows: list[dict[str, Any]]) -> None:
    response = httpx.post(
        f"{server.url}/api/runs/{run_id}/metrics", json={"rows": rows}, timeout=120
    )
    assert response.status_code == 200, response.text


def loss_at(step: int) -> float:
    """A healthy loss curve for a 65-symbol vocabulary: it starts at ln(65), the loss of
    a uniform guess (anything else is a finding of the rule engine), and falls."""
    return 1.0 + (math.log(65) - 1.0) / (1 + step / 100)


def loss_rows(first: int, count: int, **extra: float) -> list[dict[str, Any]]:
    """A falling loss curve, one row per step."""
    return [
        {"step": step, "metrics": {"train/loss": loss_at(step), **extra}}
        for step in range(first, first + count)
    ]


def trace(page: Any, chart_id: str, key: str, role: str = "raw") -> dict[str, Any] | None:
    return page.evaluate(_TRACE_JS, [chart_id, key, role])  # type: ignore[no-any-return]


def wait_for_step(page: Any, chart_id: str, key: str, step: float, timeout: float = 10_000) -> None:
    """Until the chart's series for `key` has a point at x == step (step axis)."""
    wait_for_point(page, step, timeout, chart=chart_id, key=key)


def wait_until_ready(page: Any, chart_id: str, fetches: int = 1) -> None:
    """Until the chart has finished at least `fetches` fetches and is idle."""
    page.wait_for_function(
        """([chartId, fetches]) => {
          const plot = document.querySelector(`#chart-${chartId} .plot`);
          return plot && plot.dataset.state === "ready" && Number(plot.dataset.fetches) >= fetches;
        }""",
        arg=[chart_id, fetches],
    )


def fetches(page: Any, chart_id: str) -> int:
    return int(
        page.evaluate(
            "(id) => Number(document.querySelector(`#chart-${id} .plot`)?.dataset.fetches ?? 0)",
            chart_id,
        )
    )


def add_finding(server: LiveServer, run_id: int, **fields: Any) -> dict[str, Any]:
    """Write a finding as the rule engine would (row + change-feed event), so the panel can
    be tested without the engine."""
    from app.db import Database
    from app.events import EventKind, publish
    from app.findings.service import finding_payload
    from app.models import Finding

    values: dict[str, Any] = {
        "code": "loss_spike",
        "title": "Loss spike",
        "severity": "warning",
        "state": "firing",
        "first_step": 100,
        "last_step": 104,
        "evidence": {"zscore": 9.1},
        "explanation": "The loss jumped far above its recent level.",
        "fix": "Lower the learning rate or skip bad batches.",
        **fields,
    }
    db = Database(server.database_url)
    try:
        with db.session(write=True) as session:
            finding = Finding(run_id=run_id, **values)
            session.add(finding)
            session.flush()
            payload = finding_payload(finding)
            publish(session, run_id, EventKind.finding, payload)
    finally:
        db.dispose()
    return payload

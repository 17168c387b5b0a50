"""The run page's diagnosis card against the real diagnosis API and rule engine: the
root cause first with the run's numbers and the fix, the zoom link, the live
`diagnosis` event, and the one-line healthy state."""

from __future__ import annotations

import math
import time
from typing import Any

import httpx
import numpy as np
import pytest

from tests.browser.conftest import UI
from tests.browser.ui import external_run, ingest, wait_until_ready
from tests.conftest import LiveServer
from tests.rules.helpers import noisy_decay

pytestmark = pytest.mark.browser

VOCAB = 65


def lr_too_high_rows() -> list[dict[str, Any]]:
    """A run whose LR is far too high: the loss jumps to ~25 after step 2 and stays,
    the grad norm sits at the clip, two MLP layers saturate."""
    rng = np.random.default_rng(0)
    rows = []
    for step in range(260):
        loss = math.log(VOCAB) * (0.97**step) if step < 2 else 25.0 + rng.normal(0, 0.3)
        metrics: dict[str, Any] = {
            "train/loss": loss,
            "train/grad_norm": 40 + rng.normal(0, 2),
            "train/lr": 0.5,
        }
        if step % 10 == 0:
            for layer in ("h0.mlp", "h1.mlp"):
                metrics[f"act/{layer}/frac_saturated"] = 0.6 if step >= 20 else 0.0
        rows.append({"step": step, "metrics": metrics})
    return rows


def curve_rows(loss: np.ndarray, first: int = 0) -> list[dict[str, Any]]:
    return [{"step": first + i, "metrics": {"train/loss": float(v)}} for i, v in enumerate(loss)]


def wait_for_diagnosis(
    server: LiveServer, run_id: int, state: str, cause: str | None = None, through: int = -1
) -> dict[str, Any]:
    """Until the server's rule engine has judged the run, its root cause's evidence
    reaching step `through` (the last step is judged once it settles; 20 s deadline)."""
    deadline = time.monotonic() + 20
    while True:
        document = httpx.get(f"{server.url}/api/runs/{run_id}/diagnosis").json()
        causes = [d["cause"] for d in document["diagnoses"]]
        last = document["diagnoses"][0]["last_step"] if causes else None
        reached = through < 0 or (last is not None and last >= through)
        if document["state"] == state and (cause is None or cause in causes) and reached:
            return document  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"no {state} diagnosis: {document}"
        time.sleep(0.1)


def x_range(page: Any, chart_id: str) -> list[float] | None:
    return page.evaluate(  # type: ignore[no-any-return]
        """(id) => {
          const layout = document.querySelector(`#chart-${id} .plot`).layout;
          return layout.xaxis.autorange === false ? Array.from(layout.xaxis.range) : null;
        }""",
        chart_id,
    )


def test_the_card_shows_the_root_cause_first_and_zooms_to_its_evidence(
    ui: UI, shared_server: LiveServer
) -> None:
    run_id = external_run(
        shared_server, "lr-too-high", lr=0.5, grad_clip=1.0, warmup_steps=10, vocab_size=VOCAB
    )
    ingest(shared_server, run_id, lr_too_high_rows())
    document = wait_for_diagnosis(shared_server, run_id, "problems", "lr_too_high", through=259)
    root = document["diagnoses"][0]
    assert root["cause"] == "lr_too_high"

    page = ui.page
    page.goto(f"{shared_server.url}/run.html?id={run_id}")
    wait_until_ready(page, "loss")
    card = page.locator("#diagnosis")
    card.locator("article.diagnosis.root").wait_for()
    # The card comes before the charts on the page, and the root cause is its first entry.
    assert page.evaluate(
        """() => {
          const card = document.getElementById("diagnosis");
          const charts = document.getElementById("charts");
          return Boolean(card.compareDocumentPosition(charts) & Node.DOCUMENT_POSITION_FOLLOWING);
        }"""
    )
    first = card.locator("article.diagnosis").first
    assert first.get_attribute("data-cause") == "lr_too_high"
    assert first.locator(".finding-head strong").inner_text() == f"Root cause: {root['title']}"
    text = first.inner_text()
    assert "Learning rate 0.5 is too high" in text and "5.9x ln V" in text
    assert root["summary"] in text
    assert first.locator(".fix").inner_text() == f"Fix: {root['fix']}"
    assert "0.05" in root["fix"]
    # Symptoms fold under their cause, closed, one line each.
    symptoms = first.locator("details.symptoms")
    assert symptoms.get_attribute("open") is None
    assert symptoms.locator("summary").inner_text() == f"{len(root['symptoms'])} symptom(s)"
    assert symptoms.locator("li").count() == len(root["symptoms"])
    assert not symptoms.locator("li").first.is_visible()
    symptoms.locator("summary").click()
    saturated = symptoms.locator('li[data-code="activation_saturation"]')
    assert saturated.is_visible()
    assert saturated.inner_text().count("h0.mlp, h1.mlp") == 1  # the layers, named once

    # The zoom link narrows every chart's x range to the evidence.
    assert x_range(page, "loss") is None
    first.locator("a.zoom-evidence").click()
    page.wait_for_function(
        "() => document.querySelector('#chart-loss .plot').layout.xaxis.autorange === false"
    )
    low, high = x_range(page, "loss")  # type: ignore[misc]
    first_step, last_step = root["first_step"], root["last_step"]
    # The evidence with half its width again on each side (at least 5 steps).
    pad = max(5, math.floor((last_step - first_step) * 0.5 + 0.5))  # JS Math.round
    assert [low, high] == [max(0, first_step - pad), last_step + pad]
    ui.screenshot("diagnosis-card")


def test_a_healthy_run_says_so_in_one_line_and_a_live_diagnosis_replaces_it(
    ui: UI, shared_server: LiveServer
) -> None:
    run_id = external_run(shared_server, "healthy-then-bad-batch")
    page = ui.page
    page.goto(f"{shared_server.url}/run.html?id={run_id}")
    page.locator("#diagnosis .diagnosis-line", has_text="no data yet").wait_for()

    # The first steps arrive while the page is open: the healthy verdict replaces "no data
    # yet" over the stream, though no finding ever announced it.
    loss = noisy_decay(300)
    ingest(shared_server, run_id, curve_rows(loss[:200]))
    wait_until_ready(page, "loss")
    line = page.locator("#diagnosis .diagnosis-line.healthy")
    line.wait_for(timeout=20_000)
    assert line.inner_text().startswith("No findings")
    assert page.locator("#diagnosis").evaluate("(card) => card.children.length") == 1
    assert page.locator("#diagnosis article.diagnosis").count() == 0

    # A bad batch arrives: the engine's `diagnosis` event updates the open card.
    loss[250] = 3 * loss[249]
    ingest(shared_server, run_id, curve_rows(loss[200:], first=200))
    page.locator('#diagnosis article.diagnosis[data-cause="bad_batch"]').wait_for(timeout=20_000)
    assert page.locator("#diagnosis .diagnosis-line.healthy").count() == 0
    entry = page.locator('#diagnosis article[data-cause="bad_batch"]')
    assert "at step 250" in entry.inner_text()
    zoom = entry.locator("a.zoom-evidence")
    assert "step 250" in zoom.inner_text()
    # Its zoom link narrows the charts to the bad step, away from the rest of the run.
    assert x_range(page, "loss") is None
    zoom.click()
    page.wait_for_function(
        "() => document.querySelector('#chart-loss .plot').layout.xaxis.autorange === false"
    )
    low, high = x_range(page, "loss")  # type: ignore[misc]
    assert low <= 250 <= high and high - low <= 20

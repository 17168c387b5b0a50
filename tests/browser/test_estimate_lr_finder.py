"""The launch form's live memory estimate, and the LR range test's panel on the run page."""

from __future__ import annotations

import math

import httpx
import pytest

from tests.browser.conftest import UI
from tests.conftest import LiveServer

pytestmark = pytest.mark.browser


def test_launch_form_shows_the_memory_estimate_live(ui: UI, shared_server: LiveServer) -> None:
    page = ui.page
    page.goto(shared_server.url + "/#launch")
    estimate = page.locator("#launch-estimate")
    page.wait_for_function(
        "document.querySelector('#launch-estimate')?.dataset.totalBytes !== undefined"
    )
    assert "Memory estimate:" in estimate.inner_text()
    assert estimate.get_attribute("data-fits") == "true"
    healthy = int(estimate.get_attribute("data-total-bytes") or 0)
    expected = httpx.post(
        f"{shared_server.url}/api/estimate", json={"preset": "healthy", "config": {}}
    ).json()
    assert healthy == expected["total_bytes"]

    # Typing a new batch size updates it, without launching anything.
    page.locator("#cfg-batch_size").fill("64")
    page.wait_for_function(
        f"Number(document.querySelector('#launch-estimate').dataset.totalBytes) > {healthy}"
    )
    # A model no machine holds: the estimate says so, naming the largest term.
    for field, value in (("n_layer", "128"), ("n_head", "128"), ("n_embd", "16384")):
        page.locator(f"#cfg-{field}").fill(value)
    page.wait_for_function("document.querySelector('#launch-estimate').dataset.fits === 'false'")
    assert "does not fit" in estimate.inner_text() and "optimizer" in estimate.inner_text()

    # Launching it anyway is refused up front, with the reason, and queues nothing.
    def runs() -> int:
        return int(httpx.get(f"{shared_server.url}/api/runs").json()["total"])

    before = runs()
    ui.allow(r"status of 422 .*/api/runs\)")  # the refusal, as the browser logs it
    page.get_by_role("button", name="Launch", exact=True).click()
    page.get_by_role("alert").filter(has_text="largest term is optimizer").wait_for()
    assert runs() == before


def test_lr_finder_run_plots_loss_against_lr_and_launches_the_suggestion(
    ui: UI, shared_server: LiveServer
) -> None:
    base = shared_server.url
    created = httpx.post(f"{base}/api/runs", json={"name": "sweep", "preset": "lr_finder"})
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    rows = []
    for step in range(60):
        lr = 1e-6 * 10 ** (step / 10)
        loss = 4.6 - 2.0 * math.exp(-((step - 40) ** 2) / 200) + (0.5 if step > 50 else 0.0)
        metrics = {"train/lr": lr, "train/loss": loss, "lr_finder/smoothed_loss": loss}
        if step == 59:
            metrics["lr_finder/suggested_lr"] = 0.001
        rows.append({"step": step, "metrics": metrics, "time": 1.7e9 + step})
    response = httpx.post(f"{base}/api/runs/{run_id}/metrics", json={"rows": rows})
    assert response.status_code < 300, response.text

    page = ui.page
    page.goto(f"{base}/run.html?id={run_id}")
    page.locator("#lr-finder-summary").get_by_text("Suggested learning rate: 0.001").wait_for()
    page.wait_for_function(
        "document.querySelector('#lr-finder-plot')?.layout?.xaxis?.type === 'log'"
    )
    points = page.evaluate("document.querySelector('#lr-finder-plot').data[1].x.length")
    assert points == 60

    page.locator("#lr-finder-launch").click()
    page.wait_for_url(f"**/run.html?id={run_id + 1}")
    launched = httpx.get(f"{base}/api/runs/{run_id + 1}").json()
    assert launched["config"]["lr"] == 0.001 and launched["config"]["min_lr"] == 0.0001
    assert launched["config"]["lr_finder"] is None and launched["config"]["rules"] == {}
    assert launched["config"]["n_embd"] == created.json()["config"]["n_embd"]

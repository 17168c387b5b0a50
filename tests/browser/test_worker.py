"""End to end with the real trainer: launch from the form, watch a run learn, see a
fault preset's finding, stop a run with its button."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app.migrations import upgrade_to_head
from tests.browser.conftest import UI, start_server
from tests.browser.ui import wait_until_ready
from tests.conftest import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TRAINING_TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def worker_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server with its embedded worker for this module (starting torch is slow)."""
    root = tmp_path_factory.mktemp("worker-server")
    url = f"sqlite:///{root / 'trainlens.db'}"
    upgrade_to_head(url)
    server = start_server(root / "data", url, worker=True)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _stop_leftover_runs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Stop whatever a test left training, so the next one has the CPU."""
    yield
    if "worker_server" not in request.fixturenames:
        return
    server = request.getfixturevalue("worker_server")
    active = httpx.get(f"{server.url}/api/runs", params={"status": "queued,running"}).json()
    for run in active["runs"]:
        httpx.post(f"{server.url}/api/runs/{run['id']}/stop")


def _plotted_loss_points(ui: UI) -> int:
    return int(
        ui.page.evaluate(
            """() => {
              const plot = document.querySelector('#chart-loss .plot');
              const trace = plot?.data?.find(
                (t) => t.meta?.key === 'train/loss' && t.meta.role === 'raw');
              return trace ? trace.x.length : 0;
            }"""
        )
    )


def test_launch_a_healthy_run_from_the_form_and_watch_it_learn(
    worker_server: LiveServer, ui: UI
) -> None:
    page = ui.page
    page.goto(worker_server.url + "/#launch")
    page.get_by_label("Preset").select_option("healthy")
    page.locator("#launch-name").fill("healthy-from-form")
    page.get_by_role("button", name="Launch", exact=True).click()
    page.wait_for_url("**/run.html?id=*")
    page.locator("#run-status .status-running").wait_for(timeout=TRAINING_TIMEOUT_MS)
    page.wait_for_function(
        "document.querySelector('#chart-loss .plot')?.data?.[0]?.x?.length >= 2",
        timeout=TRAINING_TIMEOUT_MS,
    )
    seen = _plotted_loss_points(ui)
    # More points arrive live, without a reload.
    page.wait_for_function(
        f"""() => {{
          const trace = document.querySelector('#chart-loss .plot').data.find(
            (t) => t.meta?.key === 'train/loss' && t.meta.role === 'raw');
          return trace.x.length >= {seen + 5};
        }}""",
        timeout=TRAINING_TIMEOUT_MS,
    )
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    ui.screenshot("run-healthy-live")


def test_a_fault_preset_shows_its_finding_in_the_panel_and_on_the_chart(
    worker_server: LiveServer, ui: UI
) -> None:
    preset = next(
        p for p in httpx.get(f"{worker_server.url}/api/presets").json() if p["name"] == "nan"
    )
    page = ui.page
    page.goto(worker_server.url + "/#launch")
    page.get_by_label("Preset").select_option(preset["name"])
    page.get_by_role("button", name="Launch", exact=True).click()
    page.wait_for_url("**/run.html?id=*")
    codes = ",".join(f"[data-code='{code}']" for code in preset["expected_findings"])
    item = page.locator(f"#findings li:is({codes})").first
    item.wait_for(timeout=TRAINING_TIMEOUT_MS)
    # One line until expanded: open it as a user would (on the line, beside the title,
    # which zooms the charts instead), then read why and what to do.
    item.locator("summary .meta").click()
    assert item.locator(".explanation").inner_text() and item.locator(".fix").inner_text()
    finding_id = item.get_attribute("data-finding-id")
    wait_until_ready(page, "loss")
    # Marked on the loss chart's x axis (a band only once the finding is chosen).
    page.wait_for_function(
        f"""() => (document.querySelector('#chart-loss .plot').layout.annotations || [])
              .some((a) => a.name === 'finding-{finding_id}')""",
        timeout=30_000,
    )
    ui.screenshot("run-fault-finding")


def test_stop_a_running_run_with_its_button(worker_server: LiveServer, ui: UI) -> None:
    response = httpx.post(
        f"{worker_server.url}/api/runs",
        json={"name": "to-stop", "preset": "healthy", "config": {"max_steps": 100_000}},
    )
    run_id = response.json()["id"]
    page = ui.page
    page.goto(f"{worker_server.url}/run.html?id={run_id}")
    page.locator("#run-status .status-running").wait_for(timeout=TRAINING_TIMEOUT_MS)
    page.get_by_role("button", name="Stop").click()
    page.locator("#run-status .status-stopped").wait_for(timeout=60_000)
    assert httpx.get(f"{worker_server.url}/api/runs/{run_id}").json()["status"] == "stopped"
    assert page.get_by_role("button", name="Resume").is_enabled()

"""Every page in a real browser: no console errors, screenshots as artifacts, the runs
table updating live, the status filter, the launch form, and comparing runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.migrations import upgrade_to_head
from tests.browser.conftest import UI, start_server
from tests.browser.ui import (
    add_finding,
    external_run,
    ingest,
    loss_at,
    loss_rows,
    trace,
    wait_until_ready,
)
from tests.conftest import LiveServer

pytestmark = pytest.mark.browser


def _row(ui: UI, run_id: int) -> object:
    return ui.page.locator(f"#runs-table tr[data-run-id='{run_id}']")


def test_every_page_renders_without_console_errors(ui: UI, shared_server: LiveServer) -> None:
    """Runs, launch form, run (with data, findings, a NaN and samples), compare, and the
    pages' empty states; a screenshot of each goes to test-artifacts/."""
    first = external_run(shared_server, "tour-a", vocab_size=65, grad_clip=1.0, max_steps=1000)
    second = external_run(shared_server, "tour-b", vocab_size=65, grad_clip=1.0)
    for run_id, shift in ((first, 0.0), (second, 0.3)):
        rows = loss_rows(0, 600)
        for row in rows:
            step = row["step"]
            row["metrics"]["train/loss"] += shift
            row["metrics"].update(
                {
                    "train/grad_norm": 0.8 + (step % 7) * 0.1,
                    "train/grad_clipped": float(step % 7 == 6),
                    "train/lr": 1e-3 * min(1, step / 50),
                    "perf/tokens_per_sec": 20_000.0,
                    "perf/mfu": 0.31,
                }
            )
            if step % 50 == 0:
                row["metrics"]["val/loss"] = row["metrics"]["train/loss"] + 0.05
                for layer in range(4):
                    row["metrics"][f"act/h{layer}.mlp/std"] = 1.0 + 0.1 * layer
                    row["metrics"][f"act/h{layer}.mlp/frac_saturated"] = 0.01 * layer
                    row["metrics"][f"act/h{layer}.mlp/frac_dead"] = 0.005 * layer
                    row["metrics"][f"update/h{layer}/ratio"] = 10 ** (-3 + 0.1 * layer)
        rows[450]["metrics"]["train/loss"] = 12.0
        ingest(shared_server, run_id, rows)
    httpx.post(
        f"{shared_server.url}/api/runs/{first}/samples",
        json={"step": 599, "text": "ROMEO: What light through yonder"},
    )
    page = ui.page

    page.goto(shared_server.url + "/")
    _row(ui, first).wait_for()
    ui.screenshot("runs")

    page.get_by_role("button", name="Launch a run…").click()
    page.locator("#cfg-lr").wait_for()
    ui.screenshot("launch-form")

    page.goto(f"{shared_server.url}/run.html?id={first}")
    for chart in (
        "loss",
        "grad-norm",
        "lr",
        "throughput",
        "update-ratio",
        "act-std",
        "act-saturated",
        "act-dead",
    ):
        wait_until_ready(page, chart)
    # The rule engine's own finding for the spike at step 450.
    page.locator("#findings li[data-code='loss_spike']").first.wait_for()
    page.locator("#samples li[data-step='599']").wait_for()
    ui.screenshot("run")

    page.goto(f"{shared_server.url}/compare.html?runs={first},{second}")
    wait_until_ready(page, "train-loss")
    ui.screenshot("compare")

    page.goto(f"{shared_server.url}/compare.html")
    page.get_by_text("Choose two or more runs").wait_for()
    page.goto(f"{shared_server.url}/run.html?id=999999")
    page.get_by_text("Run 999999 does not exist.").wait_for()
    # That 404 is the page asking about a run that is not there, reported on the page.
    ui.allow(r"status of 404 .*/api/runs/999999")


def test_runs_table_updates_live(ui: UI, shared_server: LiveServer) -> None:
    ui.page.goto(shared_server.url + "/")
    ui.page.locator("#live-indicator[data-state='live']").wait_for()

    run_id = external_run(shared_server, "live-table", max_steps=500)  # appears without a reload
    row = _row(ui, run_id)
    row.wait_for()
    assert "running" in row.locator(".status-cell").inner_text()

    ingest(shared_server, run_id, loss_rows(0, 42, **{"val/loss": 2.5}))
    ui.page.wait_for_function(
        f"document.querySelector(\"tr[data-run-id='{run_id}'] .step\")?.textContent === '41 / 500'"
    )
    assert row.locator(".train-loss").inner_text() == f"{loss_at(41):.4g}"
    assert row.locator(".val-loss").inner_text() == "2.5"

    httpx.post(f"{shared_server.url}/api/runs/{run_id}/finish", json={"status": "completed"})
    row.locator(".status-completed").wait_for()

    add_finding(shared_server, run_id, severity="critical")
    row.locator(".findings-cell .sev-critical").wait_for()
    assert ui.page.evaluate("performance.getEntriesByType('navigation').length") == 1  # no reload


def test_status_filter(ui: UI, shared_server: LiveServer) -> None:
    done = external_run(shared_server, "filter-done")
    httpx.post(
        f"{shared_server.url}/api/runs/{done}/finish", json={"status": "failed", "error": "boom"}
    )
    running = external_run(shared_server, "filter-running")
    ui.page.goto(shared_server.url + "/")
    _row(ui, running).wait_for()
    ui.page.get_by_label("Status").select_option("failed")
    _row(ui, running).wait_for(state="detached")
    assert _row(ui, done).is_visible()
    for badge in ui.page.locator("#runs-table .status-cell").all_inner_texts():
        assert badge == "failed"


def test_compare_two_runs_selected_in_the_table(ui: UI, shared_server: LiveServer) -> None:
    first = external_run(shared_server, "cmp-first")
    second = external_run(shared_server, "cmp-second")
    ingest(shared_server, first, loss_rows(0, 120))
    ingest(shared_server, second, loss_rows(0, 80, **{"perf/tokens_per_sec": 1000.0}))
    page = ui.page
    page.goto(shared_server.url + "/")
    compare = page.get_by_role("button", name="Compare selected")
    assert compare.is_disabled()
    page.get_by_label("Select cmp-first for comparison").check()
    page.get_by_label("Select cmp-second for comparison").check()
    page.get_by_role("button", name="Compare selected (2)").click()
    page.wait_for_url(f"**/compare.html?runs=*{first}*")
    wait_until_ready(page, "train-loss")

    plotted = page.evaluate(
        "document.querySelector('#chart-train-loss .plot').data"
        ".filter((t) => t.meta.role === 'raw').map((t) => [t.name, t.x.length])"
    )
    assert sorted(plotted) == [["cmp-first", 120], ["cmp-second", 80]]
    # A metric only one run has is still compared (with one line).
    wait_until_ready(page, "perf-tokens-per-sec")

    # Both runs advance live on the compare page too.
    ingest(shared_server, second, [{"step": 80, "metrics": {"train/loss": 7.5}}])
    page.wait_for_function(
        """() => document.querySelector('#chart-train-loss .plot').data
            .some((t) => t.name === 'cmp-second' && t.meta.role === 'raw' && t.x.includes(80))"""
    )

    # Zoom is shared: zooming one chart zooms the others.
    page.evaluate(
        "Plotly.relayout(document.querySelector('#chart-train-loss .plot'), "
        "{'xaxis.range[0]': 10, 'xaxis.range[1]': 20})"
    )
    page.wait_for_function(
        "(document.querySelector('#chart-perf-tokens-per-sec .plot').layout.xaxis.range"
        " || [])[1] === 20"
    )


def test_launch_form_from_schema_with_errors_beside_fields(
    ui: UI, shared_server: LiveServer
) -> None:
    page = ui.page
    # Chrome logs every 4xx response; the rejected launches below are the point of the test.
    ui.allow(r"status of 422")
    page.goto(shared_server.url + "/#launch")
    form = page.locator("#launch-form")
    page.locator("#cfg-lr").wait_for()

    # Every TrainConfig field has an input, nested ones included.
    schema = httpx.get(f"{shared_server.url}/api/config-schema").json()
    for name, prop in schema["properties"].items():
        nested = schema["$defs"][prop["$ref"].split("/")[-1]] if "$ref" in prop else None
        for path in [f"{name}.{sub}" for sub in nested["properties"]] if nested else [name]:
            assert form.locator(f"[name='{path}']").count() == 1, path

    # A preset fills the form with its config.
    presets = httpx.get(f"{shared_server.url}/api/presets").json()
    preset_lr = next(p["config"]["lr"] for p in presets if p["name"] == "lr_too_high")
    page.get_by_label("Preset").select_option("lr_too_high")
    assert float(page.locator("#cfg-lr").input_value()) == preset_lr
    assert "Expected findings" in page.inner_text("#launch-preset-description")

    page.locator("#cfg-lr").fill("-1")
    page.locator("#cfg-max_steps").fill("1.5")
    page.get_by_role("button", name="Launch", exact=True).click()
    lr_error = page.locator("#cfg-lr-error")
    lr_error.wait_for()
    assert "greater than 0" in lr_error.inner_text()
    assert page.locator("#cfg-lr").get_attribute("aria-invalid") == "true"
    assert page.locator("#cfg-max_steps-error").is_visible()

    # An error about the whole config (n_embd not divisible by n_head) sits above the fields.
    page.get_by_label("Preset").select_option("healthy")
    page.locator("#cfg-n_head").fill("3")
    page.get_by_role("button", name="Launch", exact=True).click()
    page.locator("#launch-form .error-box").get_by_text("divisible").wait_for()
    assert not page.locator("#cfg-lr-error").is_visible()

    page.locator("#cfg-n_head").fill("4")
    page.locator("#launch-name").fill("from-the-form")
    page.locator("#cfg-max_steps").fill("321")
    page.get_by_role("button", name="Launch", exact=True).click()
    page.wait_for_url("**/run.html?id=*")
    page.locator("#run-name").get_by_text("from-the-form").wait_for()
    run_id = int(page.url.split("id=")[1])
    run = httpx.get(f"{shared_server.url}/api/runs/{run_id}").json()
    assert run["preset"] == "healthy" and run["config"]["max_steps"] == 321
    assert run["status"] == "queued"


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server that wants a token (requested before `ui`, so it outlives the page)."""
    url = f"sqlite:///{tmp_path / 'token.db'}"
    upgrade_to_head(url)
    server = start_server(tmp_path / "data", url, extra_env={"TRAINLENS_TOKEN": "s3cret"})
    yield server
    server.stop()


def test_the_login_form_trades_the_token_for_a_session_cookie(
    token_server: LiveServer, ui: UI
) -> None:
    headers = {"Authorization": "Bearer s3cret"}
    response = httpx.post(
        f"{token_server.url}/api/runs",
        headers=headers,
        json={"name": "guarded", "source": "external"},
    )
    run_id = response.json()["id"]
    ui.allow(r"status of 401")  # the first, session-less requests
    page = ui.page
    page.goto(token_server.url + "/")
    page.get_by_label("Token (TRAINLENS_TOKEN of the server)").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("That token was refused.").wait_for()
    page.get_by_label("Token (TRAINLENS_TOKEN of the server)").fill("s3cret")
    page.get_by_role("button", name="Log in").click()
    _row(ui, run_id).wait_for()
    # The stream authenticates with the cookie and delivers live progress.
    page.locator("#live-indicator[data-state='live']").wait_for()
    httpx.post(
        f"{token_server.url}/api/runs/{run_id}/metrics",
        headers=headers,
        json={"rows": loss_rows(0, 5)},
    )
    page.wait_for_function(
        f"document.querySelector(\"tr[data-run-id='{run_id}'] .step\")?.textContent === '4'"
    )
    # The token is nowhere the page's scripts (or a URL) can reach it.
    (cookie,) = page.context.cookies()
    assert cookie["name"] == "trainlens_session" and "s3cret" not in cookie["value"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""
    assert page.evaluate("localStorage.getItem('trainlens.token')") is None
    assert "s3cret" not in token_server.log_path.read_text()
    # The CSV link downloads with the session.
    page.goto(f"{token_server.url}/run.html?id={run_id}")
    with page.expect_download() as download:
        page.get_by_role("link", name="CSV (long)").click()
    assert "train/loss" in Path(download.value.path()).read_text()


def test_run_page_lists_other_metrics_of_external_runs(ui: UI, shared_server: LiveServer) -> None:
    run_id = external_run(shared_server, "custom-keys")
    perf = {"perf/step_ms": 12.0, "sys/mem_estimate_gb": 0.1}
    rows = [
        {"step": s, "metrics": {"my/reward": s * 0.5, "sys/mem_gb": 0.21 + s / 1000, **perf}}
        for s in range(30)
    ]
    rows[0]["metrics"]["perf/peak_estimated"] = 1.0  # a marker, as our trainer logs it
    ingest(shared_server, run_id, rows)
    ui.page.goto(f"{shared_server.url}/run.html?id={run_id}")
    ui.page.get_by_role("heading", name="my/reward").wait_for()
    wait_until_ready(ui.page, "other-0")
    assert trace(ui.page, "other-0", "my/reward")["y"][-1] == 14.5  # type: ignore[index]
    assert ui.page.locator("#chart-loss").is_hidden()
    # Known keys join their chart (the estimate beside the measured memory); the marker
    # gets no chart of its own: "my/reward" is the only other metric.
    wait_until_ready(ui.page, "step-time")
    assert trace(ui.page, "step-time", "sys/mem_estimate_gb")["y"][-1] == 0.1  # type: ignore[index]
    # The memory axis (right) is labelled in round numbers, not synced to the left grid.
    labels = ui.page.evaluate(
        "document.querySelector('#chart-step-time .plot')._fullLayout.yaxis2._vals"
        ".map((tick) => tick.text)"
    )
    assert labels and all(len(label.strip("0.")) <= 2 for label in labels), labels
    assert ui.page.locator("section.chart[id^='chart-other-']").count() == 1

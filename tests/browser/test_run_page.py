"""The run page in a real browser: live points, spikes, zoom re-fetch, chart options,
reference lines, heatmaps, findings, samples, and the Stop button."""

from __future__ import annotations

import math

import httpx
import pytest

from tests.browser.conftest import UI
from tests.browser.ui import (
    add_finding,
    external_run,
    fetches,
    ingest,
    loss_rows,
    trace,
    wait_for_step,
    wait_until_ready,
)
from tests.conftest import LiveServer

pytestmark = pytest.mark.browser


def open_run(ui: UI, server: LiveServer, run_id: int) -> None:
    ui.page.goto(f"{server.url}/run.html?id={run_id}")
    wait_until_ready(ui.page, "loss")


def test_a_spike_written_over_rest_appears_on_the_chart(ui: UI, shared_server: LiveServer) -> None:
    run_id = external_run(shared_server, "spiky", vocab_size=65)
    ingest(shared_server, run_id, loss_rows(0, 300))
    open_run(ui, shared_server, run_id)
    before = trace(ui.page, "loss", "train/loss")
    assert before is not None and len(before["x"]) == 300
    renders = ui.page.evaluate("document.querySelector('#chart-loss .plot').dataset.renders")

    ingest(shared_server, run_id, [{"step": 300, "metrics": {"train/loss": 40.0}}])
    wait_for_step(ui.page, "loss", "train/loss", 300)
    after = trace(ui.page, "loss", "train/loss")
    assert after is not None
    assert after["y"][-1] == 40.0 and max(after["y"]) == 40.0
    # Appended with extendTraces: no new full render.
    assert (
        ui.page.evaluate("document.querySelector('#chart-loss .plot').dataset.renders") == renders
    )
    # Outliers are never hidden by default: no smoothing, raw line fully drawn, linear y.
    assert after["opacity"] == 1
    assert trace(ui.page, "loss", "train/loss", "ema")["visible"] is False  # type: ignore[index]
    layout_y = ui.page.evaluate("document.querySelector('#chart-loss .plot').layout.yaxis.type")
    assert layout_y == "linear"


def test_zoom_refetches_the_visible_range_at_full_resolution(
    ui: UI, shared_server: LiveServer
) -> None:
    run_id = external_run(shared_server, "long", vocab_size=65)
    rows = loss_rows(0, 50_000)
    rows[31_337]["metrics"]["train/loss"] = 99.0  # one spike among 50,000 points
    ingest(shared_server, run_id, rows)
    open_run(ui, shared_server, run_id)

    overview = trace(ui.page, "loss", "train/loss")
    assert overview is not None
    max_points = int(
        ui.page.evaluate("Number(document.querySelector('#chart-loss .plot').dataset.maxPoints)")
    )
    # The browser holds about a point per pixel, not 50,000 points, and the spike is kept.
    assert len(overview["x"]) <= max_points * 1.2 < 50_000
    assert 99.0 in overview["y"] and 31_337 in overview["x"]

    count = fetches(ui.page, "loss")
    ui.page.evaluate(
        "Plotly.relayout(document.querySelector('#chart-loss .plot'), "
        "{'xaxis.range[0]': 20000, 'xaxis.range[1]': 20200})"
    )
    wait_until_ready(ui.page, "loss", count + 1)
    zoomed = trace(ui.page, "loss", "train/loss")
    assert zoomed is not None
    inside = [x for x in zoomed["x"] if 20_000 <= x <= 20_200]
    assert inside == list(range(20_000, 20_201))  # every step: full resolution
    assert "full resolution" in ui.page.inner_text("#chart-loss .chart-note")

    # Double-click (autorange) goes back to the whole run, downsampled again.
    count = fetches(ui.page, "loss")
    ui.page.evaluate(
        "Plotly.relayout(document.querySelector('#chart-loss .plot'), {'xaxis.autorange': true})"
    )
    wait_until_ready(ui.page, "loss", count + 1)
    assert len(trace(ui.page, "loss", "train/loss")["x"]) <= max_points * 1.2  # type: ignore[index]


def test_chart_options_log_y_smoothing_and_x_axis(ui: UI, shared_server: LiveServer) -> None:
    response = httpx.post(
        f"{shared_server.url}/api/runs",
        json={"name": "tokens", "config": {"batch_size": 4, "block_size": 8}},
    )
    run_id = response.json()["id"]  # launched (queued): tokens per step = 4 x 8 = 32
    ingest(shared_server, run_id, loss_rows(0, 50))
    open_run(ui, shared_server, run_id)
    page = ui.page
    chart = page.locator("#chart-loss")

    chart.get_by_label("log y").check()
    page.wait_for_function(
        "document.querySelector('#chart-loss .plot').layout.yaxis.type === 'log'"
    )

    chart.get_by_label("Loss smoothing").fill("0.9")
    page.wait_for_function(
        """() => {
          const data = document.querySelector('#chart-loss .plot').data;
          const ema = data.find((t) => t.meta?.role === 'ema' && t.meta.key === 'train/loss');
          return ema && ema.visible === true;
        }"""
    )
    raw = trace(page, "loss", "train/loss")
    ema = trace(page, "loss", "train/loss", "ema")
    assert raw is not None and ema is not None
    assert raw["opacity"] < 1  # the raw line stays, faint, behind the EMA
    # Bias correction: the first smoothed point is the first raw point, not 10% of it.
    assert ema["y"][0] == pytest.approx(raw["y"][0])
    expected = 0.0
    for i, value in enumerate(raw["y"][:5]):
        expected = 0.9 * expected + 0.1 * value
        assert ema["y"][i] == pytest.approx(expected / (1 - 0.9 ** (i + 1)))

    chart.locator("select").select_option("tokens")
    page.wait_for_function(
        "document.querySelector('#chart-loss .plot').layout.xaxis.title.text === 'tokens seen'"
    )
    assert trace(page, "loss", "train/loss")["x"][:3] == [0, 32, 64]  # type: ignore[index]

    chart.locator("select").select_option("time")
    page.wait_for_function(
        "document.querySelector('#chart-loss .plot').layout.xaxis.title.text"
        ".startsWith('wall time')"
    )

    csv = chart.get_by_role("link", name="CSV")
    href = csv.get_attribute("href")
    assert href is not None and href.startswith(f"/api/runs/{run_id}/metrics.csv?keys=")
    body = httpx.get(f"{shared_server.url}{href}").text
    assert body.splitlines()[0] == "key,step,value,wall_time"
    assert len(body.splitlines()) == 51


def test_reference_lines_clipped_steps_heatmaps_and_update_ratio(
    ui: UI, shared_server: LiveServer
) -> None:
    run_id = external_run(shared_server, "instrumented", vocab_size=100, grad_clip=1.0)
    rows = []
    for step in range(0, 60):
        metrics: dict[str, float | str] = {
            "train/loss": 4.0 - step * 0.01,
            "train/grad_norm": 2.5 if step in (5, 6) else 0.5,
            "train/grad_clipped": 1.0 if step in (5, 6) else 0.0,
        }
        if step % 10 == 0:
            for layer in range(3):
                metrics[f"act/h{layer}.mlp/std"] = 1.0 + layer
                metrics[f"act/h{layer}.mlp/frac_saturated"] = 0.01 * layer
                metrics[f"act/h{layer}.mlp/frac_dead"] = 0.02 * layer
            for layer in ("wte", "h0", "h1", "h2"):
                metrics[f"update/{layer}/ratio"] = 1e-3
        rows.append({"step": step, "metrics": metrics})
    ingest(shared_server, run_id, rows)
    open_run(ui, shared_server, run_id)
    page = ui.page
    wait_until_ready(page, "act-std")
    wait_until_ready(page, "update-ratio")

    shapes = page.evaluate("document.querySelector('#chart-loss .plot').layout.shapes")
    ln_vocab = next(s for s in shapes if s.get("name") == "ln-vocab")
    assert ln_vocab["y0"] == pytest.approx(math.log(100))
    shapes = page.evaluate("document.querySelector('#chart-grad-norm .plot').layout.shapes")
    assert next(s for s in shapes if s.get("name") == "clip-threshold")["y0"] == 1.0
    clipped = trace(page, "grad-norm", "train/grad_clipped", "flags")
    assert clipped is not None and clipped["x"] == [5, 6] and clipped["y"] == [2.5, 2.5]

    layout = page.evaluate("document.querySelector('#chart-update-ratio .plot').layout")
    assert layout["yaxis"]["type"] == "log"
    assert any(s.get("name") == "ratio-guide" and s["y0"] == 1e-3 for s in layout["shapes"])

    heat = page.evaluate("document.querySelector('#chart-act-std .plot').data[0]")
    assert heat["y"] == ["h0", "h1", "h2"]
    assert heat["x"] == [0, 10, 20, 30, 40, 50]
    assert heat["z"][0] == [1.0, 2.0, 3.0]  # transposed: one column per step

    # A new instrumented step becomes a new column, live.
    ingest(
        shared_server,
        run_id,
        [{"step": 60, "metrics": {f"act/h{i}.mlp/std": 5.0 for i in range(3)}}],
    )
    page.wait_for_function("document.querySelector('#chart-act-std .plot').data[0].x.includes(60)")
    heat = page.evaluate("document.querySelector('#chart-act-std .plot').data[0]")
    assert heat["z"][-1] == [5.0, 5.0, 5.0]


def test_findings_panel_markers_and_click_to_zoom(ui: UI, shared_server: LiveServer) -> None:
    run_id = external_run(shared_server, "findings", vocab_size=65)
    ingest(shared_server, run_id, loss_rows(0, 400, **{"train/grad_norm": 0.5}))
    open_run(ui, shared_server, run_id)
    page = ui.page
    wait_until_ready(page, "grad-norm")
    assert page.inner_text("#findings").strip().endswith("No findings.")

    # Written while the page is open: it arrives over the stream.
    finding = add_finding(shared_server, run_id, first_step=200, last_step=210)
    item = page.locator(f"#findings li[data-finding-id='{finding['id']}']")
    item.wait_for()
    for part in ("warning", "Loss spike", "steps 200–210"):
        assert part in item.inner_text()
    # One line until expanded; then the explanation and the fix.
    assert finding["explanation"] not in item.inner_text()
    item.locator("summary .meta").click()
    for part in (finding["explanation"], finding["fix"]):
        assert part in item.inner_text()
    for chart in ("loss", "grad-norm"):
        # A marker on the x axis at the first step; no band until the finding is chosen.
        page.wait_for_function(
            f"""() => (document.querySelector('#chart-{chart} .plot').layout.annotations || [])
                .some((a) => a.name === 'finding-{finding["id"]}' && a.x === 200)"""
        )

    loss_fetches = fetches(page, "loss")
    grad_fetches = fetches(page, "grad-norm")
    item.get_by_role("button", name="Loss spike").click()
    wait_until_ready(page, "loss", loss_fetches + 1)
    wait_until_ready(page, "grad-norm", grad_fetches + 1)
    for chart in ("loss", "grad-norm"):
        x_range = page.evaluate(
            f"document.querySelector('#chart-{chart} .plot').layout.xaxis.range"
        )
        assert x_range[0] <= 200 and x_range[1] >= 210 and x_range[1] - x_range[0] < 100
        page.wait_for_function(
            f"""() => (document.querySelector('#chart-{chart} .plot').layout.shapes || [])
                .some((s) => s.name === 'finding-{finding["id"]}'
                             && s.x0 === 200 && s.x1 === 210)"""
        )
    zoomed = trace(page, "loss", "train/loss")
    assert zoomed is not None and 200 in zoomed["x"] and min(zoomed["x"]) >= 180

    item.get_by_role("button", name="Acknowledge").click()
    page.wait_for_function(
        f"document.querySelector(\"#findings li[data-finding-id='{finding['id']}']\")"
        ".className.includes('state-acknowledged')"
    )
    ui.screenshot("run-page-finding")


def test_samples_arrive_live(ui: UI, shared_server: LiveServer) -> None:
    run_id = external_run(shared_server, "samples")
    ingest(shared_server, run_id, loss_rows(0, 10))
    open_run(ui, shared_server, run_id)
    httpx.post(
        f"{shared_server.url}/api/runs/{run_id}/samples", json={"step": 9, "text": "To be, or not"}
    )
    ui.page.locator("#samples li[data-step='9']").wait_for()
    assert "To be, or not" in ui.page.inner_text("#samples")


def test_stop_and_resume_buttons(ui: UI, shared_server: LiveServer) -> None:
    # A launched run waits in the queue (this server has no worker): Stop stops it at once.
    response = httpx.post(
        f"{shared_server.url}/api/runs", json={"name": "queued", "preset": "healthy"}
    )
    run_id = response.json()["id"]
    ui.page.goto(f"{shared_server.url}/run.html?id={run_id}")
    page = ui.page
    page.locator("#run-status .status-queued").wait_for()
    assert page.get_by_role("button", name="Resume").is_disabled()
    page.get_by_role("button", name="Stop").click()
    page.locator("#run-status .status-stopped").wait_for()
    assert page.get_by_role("button", name="Stop").is_disabled()
    assert httpx.get(f"{shared_server.url}/api/runs/{run_id}").json()["status"] == "stopped"

    page.get_by_role("button", name="Resume").click()
    page.locator("#run-status .status-queued").wait_for()
    assert httpx.get(f"{shared_server.url}/api/runs/{run_id}").json()["status"] == "queued"


def test_non_finite_values_are_marked_not_dropped(ui: UI, shared_server: LiveServer) -> None:
    run_id = external_run(shared_server, "nan")
    rows = loss_rows(0, 20)
    rows[12]["metrics"]["train/loss"] = "NaN"
    ingest(shared_server, run_id, rows)
    open_run(ui, shared_server, run_id)
    shapes = ui.page.evaluate("document.querySelector('#chart-loss .plot').layout.shapes")
    assert any(s.get("name", "").startswith("nonfinite-") and s["x0"] == 12 for s in shapes)
    ingest(shared_server, run_id, [{"step": 20, "metrics": {"train/loss": "Infinity"}}])
    ui.page.wait_for_function(
        """() => document.querySelector('#chart-loss .plot').layout.shapes
            .some((s) => (s.name || '').startsWith('nonfinite-') && s.x0 === 20)"""
    )
    # Four layers turning NaN at one step: one band and one label, not four stacked.
    layers = [f"update/h{i}/ratio" for i in range(4)]
    ingest(shared_server, run_id, [{"step": 21, "metrics": dict.fromkeys(layers, 1e-3)}])
    ingest(shared_server, run_id, [{"step": 22, "metrics": dict.fromkeys(layers, "NaN")}])
    ui.page.locator("#chart-update-ratio").scroll_into_view_if_needed()
    marks = ui.page.wait_for_function(
        """() => { const layout = document.querySelector('#chart-update-ratio .plot')?.layout;
                   const bands = (layout?.shapes || [])
                     .filter((s) => (s.name || '').startsWith('nonfinite-'));
                   return bands.length && [bands.length, (layout.annotations || [])
                     .filter((a) => (a.text || '').endsWith(': NaN')).map((a) => a.text)]; }"""
    ).json_value()
    assert marks == [1, ["4 series: NaN"]]


def test_a_live_series_past_its_budget_is_fetched_again_downsampled(
    ui: UI, shared_server: LiveServer
) -> None:
    run_id = external_run(shared_server, "budget")
    ingest(shared_server, run_id, loss_rows(0, 100))
    open_run(ui, shared_server, run_id)
    page = ui.page
    max_points = int(
        page.evaluate("Number(document.querySelector('#chart-loss .plot').dataset.maxPoints)")
    )
    budget = 2 * max_points + 64
    count = fetches(page, "loss")
    held = []
    step = 100
    # Live batches small enough to travel inline, until well past the budget.
    while step < 100 + 3 * budget:
        ingest(shared_server, run_id, loss_rows(step, 400))
        step += 400
        wait_for_step(page, "loss", "train/loss", step - 1)
        held.append(len(trace(page, "loss", "train/loss")["x"]))  # type: ignore[index]
    assert fetches(page, "loss") > count  # re-fetched instead of accumulating
    assert max(held) <= budget + 400
    final = trace(page, "loss", "train/loss")
    assert final is not None and final["x"][-1] == step - 1
    assert "extremes kept" in page.inner_text("#chart-loss .chart-note")


def test_a_large_batch_arrives_as_a_range_and_is_fetched(ui: UI, shared_server: LiveServer) -> None:
    run_id = external_run(shared_server, "big-batch")
    ingest(shared_server, run_id, loss_rows(0, 10))
    open_run(ui, shared_server, run_id)
    count = fetches(ui.page, "loss")
    rows = loss_rows(10, 6000)  # above the stream's inline limit: the event carries a range
    rows[3000]["metrics"]["train/loss"] = 50.0
    ingest(shared_server, run_id, rows)
    wait_until_ready(ui.page, "loss", count + 1)
    wait_for_step(ui.page, "loss", "train/loss", 6009)
    plotted = trace(ui.page, "loss", "train/loss")
    assert plotted is not None and 50.0 in plotted["y"]


def test_charts_appear_when_the_first_points_arrive(ui: UI, shared_server: LiveServer) -> None:
    run_id = external_run(shared_server, "empty-at-first", grad_clip=1.0)
    ui.page.goto(f"{shared_server.url}/run.html?id={run_id}")
    ui.page.locator("#run-status .status-running").wait_for()
    ui.page.locator("#live-indicator[data-state='live']").wait_for()
    assert ui.page.locator("#chart-loss").is_hidden()
    ingest(shared_server, run_id, loss_rows(0, 3, **{"train/grad_norm": 0.7}))
    wait_for_step(ui.page, "loss", "train/loss", 2)
    wait_for_step(ui.page, "grad-norm", "train/grad_norm", 2)
    assert ui.page.locator("#chart-loss").is_visible()
    assert ui.page.locator("#chart-act-std").is_hidden()  # no activation statistics logged
    # The header follows too (it redraws at most four times a second).
    ui.page.wait_for_function("document.querySelector('#run-step')?.textContent === '2'")

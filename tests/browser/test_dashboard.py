"""The dashboard a practitioner switches to: no dead ends (queued, starting and failed
runs say what is happening; the log and checkpoints are one click away), a runs table
with chosen columns, filters, sort, tags, notes, rename and groups, findings that stay
one line and mark charts without tinting them, honest axes, and an HTML 404 page.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.db import Database
from app.models import Run, RunStatus
from tests.api.helpers import OOM_TRACEBACK, set_run_status
from tests.browser.conftest import UI
from tests.browser.ui import add_finding, external_run, ingest, loss_rows, wait_until_ready
from tests.conftest import LiveServer

pytestmark = pytest.mark.browser

OOM = OOM_TRACEBACK


def _launch(server: LiveServer, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{server.url}/api/runs", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _set_status(server: LiveServer, run_id: int, status: RunStatus, error: str | None) -> None:
    set_run_status(server.database_url, run_id, status, error)


def _layout(ui: UI, chart: str) -> dict[str, Any]:
    return ui.page.evaluate(f"document.querySelector('#chart-{chart} .plot').layout")  # type: ignore[no-any-return]


def test_a_failed_run_shows_its_error_first_and_refuses_resume(
    ui: UI, shared_server: LiveServer
) -> None:
    run = _launch(shared_server, preset="nan")
    run_id = run["id"]
    _set_status(shared_server, run_id, RunStatus.running, None)
    _set_status(shared_server, run_id, RunStatus.failed, OOM)
    run_dir = shared_server.data_dir / "runs" / str(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "output.log"
    log.write_text("2026-12-02 07:00:00 trainlens.job loading dataset stdlib\n" + OOM + "\n")
    (run_dir / "ckpt_latest.pt").write_bytes(b"\0" * 2048)
    (run_dir / "ckpt_latest.json").write_text(json.dumps({"step": 100, "val_loss": 2.25}))

    page = ui.page
    page.goto(f"{shared_server.url}/run.html?id={run_id}")
    line = page.locator("#run-error .error-line")
    line.wait_for()
    assert "tried to allocate 800008000000 bytes" in line.inner_text()
    # The error line comes before the (folded) traceback.
    assert not page.locator("#run-error details").evaluate("d => d.open")
    resume = page.get_by_role("button", name="Resume")
    assert resume.is_disabled()
    assert "would fail the same way" in (resume.get_attribute("title") or "")
    assert "Resume is off" in page.locator("#resume-blocked").inner_text()
    # Every config field, the preset's fault setting first and marked.
    fault = page.locator(".config-all .fault").first
    assert fault.get_attribute("data-key", timeout=5000).startswith("faults.")
    # Only what the preset changed from the defaults: output_init_scale is 1 by default.
    marked = page.locator(".config-all .fault").evaluate_all(
        "(all) => all.map((d) => d.dataset.key)"
    )
    assert marked == ["faults.nan_step"], marked
    assert page.locator(".config-all [data-key='lr']").count() == 1
    # Checkpoints: step, val loss, size, a download link.
    row = page.locator("#checkpoints tr[data-name='ckpt_latest.pt']")
    row.wait_for()
    assert "100" in row.inner_text() and "2.25" in row.inner_text()
    link = row.get_by_role("link", name="Download")
    download = httpx.get(shared_server.url + (link.get_attribute("href") or ""))
    assert download.status_code == 200 and len(download.content) == 2048
    # The log, opened from the page.
    page.locator("#log-panel summary").click()
    page.wait_for_function(
        "document.querySelector('#log-panel pre').textContent.includes('loading dataset')"
    )
    ui.screenshot("failed-run")


def test_the_log_follows_a_running_run(ui: UI, shared_server: LiveServer) -> None:
    run_id = _launch(shared_server, preset="healthy")["id"]
    _set_status(shared_server, run_id, RunStatus.running, None)
    run_dir = shared_server.data_dir / "runs" / str(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "output.log"
    log.write_text("2026-12-02 07:00:00 trainlens.train building the model\n")
    page = ui.page
    page.goto(f"{shared_server.url}/run.html?id={run_id}")
    # A started run without steps says what it is doing, not blank charts.
    phase = page.locator("#run-phase")
    phase.wait_for()
    assert "Starting" in phase.inner_text() and "building the model" in phase.inner_text()
    page.locator("#log-panel summary").click()
    page.wait_for_function(
        "document.querySelector('#log-panel pre').textContent.includes('building the model')"
    )
    with log.open("a") as handle:
        handle.write("step 0 | loss 4.17\n")
    page.wait_for_function(
        "document.querySelector('#log-panel pre').textContent.includes('step 0 | loss 4.17')"
    )
    text = page.locator("#log-panel pre").inner_text()
    assert text.count("building the model") == 1  # appended, not re-read
    # No step yet is "no data yet" only while the run may still log one.
    diagnosis = page.locator("#diagnosis .diagnosis-line")
    assert diagnosis.inner_text() == "Diagnosis: no data yet."
    _set_status(shared_server, run_id, RunStatus.failed, OOM)
    page.locator("#run-status .status-failed").wait_for()
    diagnosis.filter(has_text="the run logged no metrics").wait_for()


def test_a_queued_run_shows_its_place_in_the_queue(ui: UI, shared_server: LiveServer) -> None:
    ahead = _launch(shared_server, preset="healthy")
    run = _launch(shared_server, preset="healthy")
    ui.page.goto(f"{shared_server.url}/run.html?id={run['id']}")
    phase = ui.page.locator("#run-phase")
    phase.wait_for()
    assert "Queued" in phase.inner_text() and "ahead in the queue" in phase.inner_text()
    for queued in (ahead, run):
        httpx.post(f"{shared_server.url}/api/runs/{queued['id']}/stop")
    ui.page.locator("#run-status .status-stopped").wait_for()
    assert ui.page.locator("#run-phase").count() == 0


def test_runs_table_columns_filter_sort_tags_and_groups(ui: UI, shared_server: LiveServer) -> None:
    tag = f"sweep{int(time.time() * 1000) % 100000}"
    ids = {}
    for name, lr, val in (("lr-small", 1e-4, 1.9), ("lr-mid", 1e-3, 1.55), ("lr-big", 3e-3, 1.2)):
        ids[name] = external_run(shared_server, f"{tag}-{name}", lr=lr, n_layer=4)
        metrics = {"val/loss": val, "perf/mfu": val / 10}
        ingest(shared_server, ids[name], [{"step": 0, "metrics": metrics}])
    page = ui.page
    page.on("dialog", lambda dialog: dialog.accept(f"{tag}, baseline"))
    page.goto(shared_server.url + "/")
    page.locator(f"tr[data-run-id='{ids['lr-big']}']").wait_for()
    # Columns from config keys and latest metrics.
    page.locator("#column-picker > summary").click()
    page.locator("#column-options input[value='lr']").check()
    page.locator("#column-options input[value='n_layer']").check()
    page.locator("#column-options input[value='perf/mfu']").check()
    page.locator("#column-picker > summary").click()
    cell = page.locator(f"tr[data-run-id='{ids['lr-mid']}'] td[data-column='perf/mfu']")
    cell.wait_for()
    assert cell.inner_text() == "0.155"
    assert (
        page.locator(f"tr[data-run-id='{ids['lr-mid']}'] td[data-column='lr']").inner_text()
        == "0.001"
    )
    # Filter by a config key and a metric; sort by a metric from its header.
    page.locator("#name-filter").fill(tag)
    page.locator("#runs-query").fill("lr >= 1e-3; val/loss < 1.6")
    page.locator(f"tr[data-run-id='{ids['lr-small']}']").wait_for(state="detached")
    page.locator("#runs-table th", has_text="Val loss").click()
    page.wait_for_function(
        f"""() => [...document.querySelectorAll('#runs-table tbody tr')]
            .map((tr) => tr.dataset.runId).join() === '{ids["lr-big"]},{ids["lr-mid"]}'"""
    )
    # Tags (the dialog answers with two tags), then group by tag.
    page.get_by_label(f"Edit tags of {tag}-lr-mid").click()
    page.locator(f"tr[data-run-id='{ids['lr-mid']}'] .tag", has_text="baseline").wait_for()
    assert httpx.get(f"{shared_server.url}/api/runs/{ids['lr-mid']}").json()["tags"] == sorted(
        [tag, "baseline"]
    )
    page.get_by_label("Group by").select_option("tag")
    page.locator("tr.group-row[data-group='baseline']").wait_for()
    ui.screenshot("runs-table")
    # Rename from the table (the same dialog answer becomes the name).
    page.get_by_label(f"Rename {tag}-lr-big").click()
    page.locator(
        f"tr[data-run-id='{ids['lr-big']}'] td.name a", has_text="baseline"
    ).first.wait_for()
    # A filter nothing passes says so, and names a key no run has (a typo, mostly).
    page.locator("#runs-query").fill("lr >= 1e-3; learning_rate > 1")
    empty = page.locator("#runs-empty")
    empty.filter(has_text="No run has “learning_rate”").wait_for()
    assert empty.inner_text().startswith("No runs match these filters.")
    page.evaluate("localStorage.clear()")


def test_findings_are_one_line_with_axis_markers_and_one_band(
    ui: UI, shared_server: LiveServer
) -> None:
    run_id = external_run(shared_server, "marks", vocab_size=65)
    ingest(shared_server, run_id, loss_rows(0, 300, **{"train/lr": 1e-3}))
    long = add_finding(
        shared_server, run_id, first_step=10, last_step=290, title="Gradient clipping on most steps"
    )
    short = add_finding(shared_server, run_id, first_step=150, last_step=155)
    page = ui.page
    page.goto(f"{shared_server.url}/run.html?id={run_id}")
    wait_until_ready(page, "loss")
    item = page.locator(f"#findings li[data-finding-id='{long['id']}']")
    item.wait_for()
    assert not item.locator("details.finding-more").evaluate("d => d.open")
    ui.screenshot("findings-panel")
    assert item.bounding_box()["height"] < 60  # one line until expanded
    # A real rule's title is read whole on that line, not cut to "Gradient clip…".
    title = item.locator(".finding-zoom")
    assert title.evaluate("b => b.scrollWidth <= b.clientWidth"), title.evaluate(
        "b => [b.scrollWidth, b.clientWidth]"
    )
    page.wait_for_function(
        """() => (document.querySelector('#chart-loss .plot').layout.annotations || [])
            .filter((a) => (a.name || '').startsWith('finding-')).length === 2"""
    )
    layout = _layout(ui, "loss")
    assert not [s for s in layout.get("shapes", []) if s.get("name", "").startswith("finding-")]
    assert page.locator("#chart-loss .marks-legend").is_visible()
    page.locator(f"#findings li[data-finding-id='{short['id']}'] .finding-zoom").click()
    page.wait_for_function(
        f"""() => (document.querySelector('#chart-loss .plot').layout.shapes || [])
            .filter((s) => (s.name || '').startsWith('finding-'))
            .map((s) => s.name).join() === 'finding-{short["id"]}'"""
    )
    # A constant learning rate gets a range around its value, not -0.5..1.5.
    wait_until_ready(page, "lr")
    low, high = _layout(ui, "lr")["yaxis"]["range"]
    assert 0 < low < 1e-3 < high < 2e-3
    # Once live values leave the constant, the axis follows them (none drawn off-chart).
    page.locator("#reset-zoom").click()
    ingest(shared_server, run_id, [{"step": 300, "metrics": {"train/lr": 3e-3}}])
    page.wait_for_function(
        "document.querySelector('#chart-lr .plot').layout.yaxis.range[1] >= 3e-3"
    )
    empty = external_run(shared_server, "no-findings")
    ingest(shared_server, empty, loss_rows(0, 5))
    page.goto(f"{shared_server.url}/run.html?id={empty}")
    page.locator("#no-findings").wait_for()
    assert page.locator("#no-findings").inner_text() == "No findings."


def test_honest_axes(ui: UI, shared_server: LiveServer) -> None:
    run_id = external_run(shared_server, "axes")
    start = time.time() - 3600
    rows = []
    for step in range(40):
        # 20 steps, a 28-minute stop, 20 more.
        at = start + step * 2 + (28 * 60 if step >= 20 else 0)
        metrics = {
            "train/loss": 3.0 - step * 0.01,
            "update/h0/ratio": 10 ** (-4 + step * 0.05),
            "perf/tokens_per_sec": 20_000.0 + step,
            "perf/mfu": 0.31,
        }
        rows.append({"step": step, "time": at, "metrics": metrics})
    rows[10]["metrics"]["val/loss"] = 2.95  # evaluated once: the header says how stale
    rows[0]["metrics"].update(
        {"act/h0.mlp/frac_saturated": 0.02, "act/h1.mlp/frac_saturated": 0.04}
    )
    ingest(shared_server, run_id, rows)
    db = Database(shared_server.database_url)
    try:
        with db.session(write=True) as session:
            run = session.get(Run, run_id)
            assert run is not None
            run.started_at = start  # the script began an hour ago
    finally:
        db.dispose()
    page = ui.page
    page.goto(f"{shared_server.url}/run.html?id={run_id}")
    for chart in ("loss", "update-ratio", "act-saturated", "throughput", "mfu"):
        wait_until_ready(page, chart)
    assert page.locator("#val-loss-step").inner_text().strip() == "@10"
    # Fractions colour from 0 to 1; a one-step heatmap is a column labelled by its step.
    heat = page.evaluate("document.querySelector('#chart-act-saturated .plot').data[0]")
    assert (heat["zmin"], heat["zmax"], heat["reversescale"]) == (0, 1, True)
    assert _layout(ui, "act-saturated")["xaxis"]["tickvals"] == [0]
    # The next instrumented step, live: a second column, in view (the axis is freed).
    page.locator("#chart-act-saturated").scroll_into_view_if_needed()
    late = {"act/h0.mlp/frac_saturated": 0.5, "act/h1.mlp/frac_saturated": 0.6}
    ingest(shared_server, run_id, [{"step": 40, "time": start + 28 * 60 + 80, "metrics": late}])
    page.wait_for_function(
        """() => { const plot = document.querySelector('#chart-act-saturated .plot');
                   return plot.data[0].x.length === 2 && plot.layout.xaxis.autorange !== false
                     && !plot.layout.xaxis.tickvals; }"""
    )
    page.locator("#charts").scroll_into_view_if_needed()
    # Log y: one labelled tick per decade.
    update_axis = _layout(ui, "update-ratio")["yaxis"]
    assert update_axis["type"] == "log" and update_axis["dtick"] == 1
    # Every download under its own file name; the wide CSV one row per step.
    downloads = page.evaluate(
        "[...document.querySelectorAll('#csv-long, #csv-wide, #chart-loss .csv a')]"
        ".map((a) => [a.download, a.getAttribute('href')])"
    )
    names = [name for name, _ in downloads]
    assert names == [
        f"run-{run_id}-metrics-long.csv",
        f"run-{run_id}-metrics-wide.csv",
        f"run-{run_id}-loss.csv",
    ]
    assert "layout=wide" in downloads[1][1]
    # Tokens/s and MFU each on a chart of their own.
    assert page.locator("#chart-mfu h3").inner_text() == "MFU (estimate)"
    # Wall time: the stop is a gap in the line, and Duration counts active time apart.
    page.locator("#x-all").select_option("time")
    page.wait_for_function(
        """() => document.querySelector('#chart-loss .plot').data[0].y.includes(null)"""
    )
    httpx.post(f"{shared_server.url}/api/runs/{run_id}/finish", json={"status": "completed"})
    duration = page.locator("#run-duration", has_text="stopped")
    duration.wait_for()
    # An hour since the start, 28 minutes of it stopped: about 32 minutes active.
    assert re.fullmatch(r"3[12]m \d\ds \(\+28m \d\ds stopped\)", duration.inner_text())
    ui.screenshot("honest-axes")


def test_html_404_page(ui: UI, shared_server: LiveServer) -> None:
    response = ui.page.goto(f"{shared_server.url}/no/such/page")
    assert response is not None and response.status == 404
    ui.page.get_by_role("heading", name="Page not found").wait_for()
    assert ui.page.get_by_role("link", name="runs table").is_visible()
    ui.allow(r"status of 404")


def test_compare_any_metric_config_diff_and_finding_markers(
    ui: UI, shared_server: LiveServer
) -> None:
    first = external_run(shared_server, "cmp-lr-1e-3", lr=1e-3, n_layer=4, seed=1, dropout=0.1)
    second = external_run(shared_server, "cmp-lr-3e-3", lr=3e-3, n_layer=4, seed=1)
    for run_id, shift in ((first, 0.0), (second, 0.2)):
        rows = loss_rows(0, 120)
        for row in rows:
            row["metrics"]["train/loss"] += shift
            row["metrics"]["val/loss"] = row["metrics"]["train/loss"] + 0.1
            for layer in range(2):
                row["metrics"][f"update/h{layer}/ratio"] = 10 ** (-3 + 0.1 * layer) * (1 + shift)
        ingest(shared_server, run_id, rows)
    finding = add_finding(shared_server, second, first_step=60, last_step=70)
    page = ui.page
    page.goto(f"{shared_server.url}/compare.html?runs={first},{second}")
    wait_until_ready(page, "train-loss")
    # Titles as on the run page, not raw keys.
    assert page.locator("#chart-train-loss h3").inner_text() == "Loss · train"
    assert page.locator("#chart-val-loss h3").inner_text() == "Loss · val"
    # Only the config values that differ.
    diff_keys = page.locator("#config-diff tr[data-key]").evaluate_all(
        "rows => rows.map((r) => r.dataset.key)"
    )
    assert diff_keys == ["lr"]
    # A key only one run has is no difference to lead with: it folds under the table.
    partial = page.locator("#config-partial")
    assert not partial.evaluate("d => d.open")
    assert partial.locator("summary").inner_text() == "1 more set in only some of the runs"
    assert partial.locator("tr[data-partial-key]").evaluate_all(
        "rows => rows.map((r) => r.dataset.partialKey)"
    ) == ["dropout"]
    # The second run's finding marks the axis of the charts.
    page.wait_for_function(
        f"""() => (document.querySelector('#chart-train-loss .plot').layout.annotations || [])
            .some((a) => a.name === 'finding-{finding["id"]}' && a.x === 60)"""
    )
    # Any metric, per-layer ones included: chosen from the union of keys.
    page.locator("#metric-picker-box > summary").click()
    page.locator("#metric-picker details summary", has_text="update/…/ratio").click()
    page.locator("#metric-picker input[value='update/h1/ratio']").check()
    page.locator("#metric-picker input[value='val/loss']").uncheck()
    page.get_by_role("button", name="Show these").click()
    wait_until_ready(page, "update-h1-ratio")
    title = page.locator("#chart-update-h1-ratio h3").inner_text()
    assert title == "Update-to-data ratio per layer · h1"
    names = page.evaluate(
        "document.querySelector('#chart-update-h1-ratio .plot').data"
        ".filter((t) => t.meta.role === 'raw').map((t) => t.name)"
    )
    assert names == ["cmp-lr-1e-3", "cmp-lr-3e-3"]
    assert page.locator("#chart-val-loss").count() == 0
    assert "metrics=" in page.url
    page.locator("#metric-picker-box > summary").click()
    ui.screenshot("compare-page")


def test_dataset_upload_from_the_launch_form(
    ui: UI, shared_server: LiveServer, tmp_path: Path
) -> None:
    corpus = tmp_path / "my corpus.txt"
    corpus.write_text("To be, or not to be, that is the question.\n" * 50)
    page = ui.page
    page.goto(shared_server.url + "/#launch")
    page.locator("#dataset-file").set_input_files(str(corpus))
    status = page.locator("#dataset-upload-status")
    page.wait_for_function(
        "document.querySelector('#dataset-upload-status').textContent.startsWith('Uploaded')"
    )
    assert "2,150 characters" in status.inner_text()
    assert page.locator("#cfg-dataset").input_value() == "my-corpus"
    names = [d["name"] for d in httpx.get(f"{shared_server.url}/api/datasets").json()]
    assert "my-corpus" in names
    # The server's validation shows beside the box: the same name again is refused.
    page.locator("#dataset-file").set_input_files(str(corpus))
    page.wait_for_function(
        "document.querySelector('#dataset-upload-status').textContent.startsWith('Upload refused')"
    )
    assert "exists already" in status.inner_text()
    ui.allow(r"status of 409")

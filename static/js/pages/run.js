// pages/run.js — one run: header (status, progress, config summary, Stop / Resume),
// live charts, the findings panel and the latest text samples.
//
// One EventSource (/api/runs/{id}/stream) feeds everything: `points` go to every chart
// (each appends its own keys), `status` refreshes the header, `finding` updates the panel
// and the markers on the charts, `sample` the samples list. After a `reset`, or a stream
// that had to be reopened, everything is fetched again.

import { api, apiUrl } from "../api.js";
import { schemaDefaults } from "../config-schema.js";
import { FindingsPanel } from "../findings.js";
import {
  ACTIVE_STATUSES, RESUMABLE_STATUSES, decodeValue, el, formatCount, formatDuration, formatNumber,
  formatPercent, formatRate, formatTime, runDuration, statusBadge,
} from "../format.js";
import { HeatmapChart } from "../heatmap.js";
import { LineChart } from "../line-chart.js";
import { LrFinderPanel } from "../lr-finder.js";
import { RUN_CHARTS, otherKeys } from "../run-charts.js";
import { loadPlotly } from "../plotly.js";
import { LiveStream } from "../stream.js";
import { DiagnosisCard, LogViewer, configTable, errorBlock, loadCheckpoints, phaseBanner } from "../run-panels.js";

const SAMPLES_SHOWN = 5;

const runId = Number(new URLSearchParams(location.search).get("id"));
const runs = new Map(); // what the charts read: this run, mutated in place as it changes
const keys = new Set();
const charts = [];
const otherCharts = new Map(); // key → chart
let run = null;
let markLoaded;
const loaded = new Promise((resolve) => { markLoaded = resolve; });
// The stream opens before the run's first load returns; an event that arrives in
// between waits for that load instead of finding no run.
const afterLoad = (handler) => (event) => (run ? handler(event) : loaded.then(() => handler(event)));
let headerTimer = null;
let lrFinder = null; // the LR range test's panel, for lr_finder runs
let configDefaults = null; // TrainConfig's defaults by dotted path, to mark the faults a run set

const header = document.getElementById("run-header");
const chartsHost = document.getElementById("charts");
const xAll = document.getElementById("x-all");
const linkZoom = document.getElementById("link-zoom");
const pageError = document.getElementById("page-error");

function zoomTo(first, last, selected = null) {
  for (const chart of charts) {
    chart.setSelectedFinding(selected);
    chart.zoomToSteps(runId, first, last ?? first);
  }
}

const findings = new FindingsPanel(document.getElementById("findings"), {
  onSelect: (finding) => zoomTo(finding.first_step, finding.last_step, finding.id),
  onChange: (all) => charts.forEach((chart) => chart.setFindings(all)),
});
const diagnosis = new DiagnosisCard(document.getElementById("diagnosis"), {
  onZoom: (item) => zoomTo(item.first_step, item.last_step, item.finding_ids?.[0] ?? null),
  isActive: () => ACTIVE_STATUSES.has(run?.status),
});

function showError(message) {
  pageError.textContent = message;
  pageError.hidden = !message;
}

// -- header ----------------------------------------------------------------------------

async function loadRun() {
  const detail = await api(`/runs/${runId}`);
  if (run) Object.assign(run, detail);
  else {
    run = detail;
    runs.set(runId, run);
    markLoaded();
  }
  detail.keys.forEach((key) => keys.add(key));
  document.title = `${run.name} · trainlens`;
  renderHeader();
  explainEmptyCharts();
  return run;
}

/** The numbers that change with every step: the only part of the header that live
 *  points redraw (rebuilding the whole header would cost layout time on every batch and
 *  take the notes box from under the user's cursor). */
function facts() {
  const latest = run.latest ?? {};
  const value = (key) => latest[key]?.value;
  const step = run.last_step;
  const stepText = step === null || step === undefined ? "—"
    : run.max_steps ? `${formatCount(step)} / ${formatCount(run.max_steps)}` : formatCount(step);
  const rows = [
    ["Step", el("span", { id: "run-step" }, stepText),
      run.max_steps && step !== null ? el("progress", { max: run.max_steps, value: Math.min(step + 1, run.max_steps),
        "aria-label": "progress" }) : null],
    ["Train loss", formatNumber(value("train/loss"))],
    // Evaluated every eval_interval steps: its step says how fresh it is.
    ["Val loss", formatNumber(value("val/loss")), latest["val/loss"] && latest["val/loss"].step !== step
      ? el("span", { className: "muted", id: "val-loss-step" }, ` @${formatCount(latest["val/loss"].step)}`) : null],
    ["Tokens/s", formatRate(value("perf/tokens_per_sec"))],
    // MFU against a nominal peak: on a CPU that peak is a guess, so it is marked as one.
    ["MFU (est.)", formatPercent(value("perf/mfu"))],
    ["Started", formatTime(run.started_at)],
    ["Duration", el("span", { id: "run-duration", title: "Time spent training; stopped time is shown apart" },
      durationText())],
  ];
  if (run.attempt > 0) rows.push(["Resumed", `${run.attempt}×`]);
  return rows.map(([term, ...detail]) => el("div", {}, el("dt", {}, term), el("dd", {}, ...detail)));
}

function renderFacts() {
  document.getElementById("run-facts")?.replaceChildren(...facts());
}

function renderHeader() {
  const stop = el("button", { type: "button", id: "stop-button", className: "danger",
    disabled: !(run.status === "queued" || run.status === "running"),
    onclick: () => steer("stop") }, "Stop");
  const resume = el("button", { type: "button", id: "resume-button",
    disabled: !(run.source === "launched" && RESUMABLE_STATUSES.has(run.status)) || Boolean(run.resume_blocked),
    title: run.resume_blocked ? `Resume is off: ${run.resume_blocked}`
      : run.source === "external" ? "An external run resumes from its own script" : "Continue from the latest checkpoint",
    onclick: () => steer("resume") }, "Resume");
  const rename = el("button", { type: "button", id: "rename-button", className: "small", onclick: renameRun }, "Rename");
  const remove = el("button", { type: "button", className: "danger", onclick: removeRun }, "Delete");
  const config = run.config ?? {};
  header.replaceChildren(...[
    el("div", { className: "run-title" },
      el("h1", { id: "run-name" }, run.name), rename,
      el("span", { id: "run-status" }, statusBadge(run.status)),
      ...(run.tags ?? []).map((tag) => el("span", { className: "tag" }, tag)),
      run.preset ? el("span", { className: "muted" }, `preset ${run.preset}`) : null,
      el("span", { className: "muted" }, `${run.source} run #${run.id}`),
      el("span", { className: "toolbar", style: "margin-left:auto" }, stop, resume,
        el("a", { className: "button", id: "csv-long", href: apiUrl(`/runs/${runId}/metrics.csv`),
          download: `run-${runId}-metrics-long.csv`, title: "One row per step and key" }, "CSV (long)"),
        el("a", { className: "button", id: "csv-wide",
          href: apiUrl(`/runs/${runId}/metrics.csv`, { layout: "wide" }),
          download: `run-${runId}-metrics-wide.csv`, title: "One row per step, one column per key" }, "CSV (wide)"),
        el("a", { className: "button", href: `/compare.html?runs=${runId}` }, "Compare…"),
        remove)),
    el("dl", { className: "run-facts", id: "run-facts" }, facts()),
    phaseBanner(run),
    errorBlock(run),
    Object.keys(config).length ? configTable(config, configDefaults) : null,
    el("label", { className: "notes" }, "Notes ",
      el("textarea", { id: "run-notes", rows: 1, value: run.notes ?? "", placeholder: "what this run is for…",
        onchange: (event) => patchRun({ notes: event.target.value }) })),
  ].filter(Boolean));
}

/** Active training time; time the run spent stopped (gaps in its wall times) apart. */
function durationText() {
  const total = runDuration(run);
  if (total === null) return "—";
  const loss = charts.find((chart) => chart.id === "loss");
  const stopped = loss ? loss.stoppedSeconds(runId) : 0;
  return stopped > 0 ? `${formatDuration(total - stopped)} (+${formatDuration(stopped)} stopped)` : formatDuration(total);
}

async function patchRun(body) {
  try {
    Object.assign(run, await api(`/runs/${runId}`, { method: "PATCH", body }));
    renderHeader();
    showError("");
  } catch (error) {
    showError(`Could not save: ${error.message}`);
  }
}

function renameRun() {
  const name = window.prompt("New name for this run", run.name);
  if (name && name.trim() && name !== run.name) patchRun({ name: name.trim() });
}

function scheduleHeader() {
  if (headerTimer) return;
  headerTimer = setTimeout(() => {
    headerTimer = null;
    // The first step of a starting run ends its "Starting…" banner: a full redraw, once.
    if (document.getElementById("run-phase") && run.last_step !== null) renderHeader();
    else renderFacts();
  }, 250);
}

async function steer(action) {
  try {
    const detail = await api(`/runs/${runId}/${action}`, { method: "POST" });
    Object.assign(run, detail);
    renderHeader();
    showError("");
  } catch (error) {
    showError(`Could not ${action} the run: ${error.message}`);
  }
}

async function removeRun() {
  if (!window.confirm(`Delete run "${run.name}" with all its metrics, findings and checkpoints?`)) return;
  try {
    await api(`/runs/${runId}`, { method: "DELETE" });
    location.href = "/";
  } catch (error) {
    showError(`Could not delete the run: ${error.message}`);
  }
}

// -- charts ------------------------------------------------------------------------------

function chartOptions(definition) {
  return {
    ...definition,
    runs,
    xMode: xAll.value,
    onZoom: (source, xRange) => {
      if (!linkZoom.checked) return;
      for (const chart of charts) if (chart !== source && chart.xMode === source.xMode) chart.setXRange(xRange);
    },
  };
}

function buildCharts() {
  for (const definition of RUN_CHARTS) {
    const Chart = definition.kind === "heatmap" ? HeatmapChart : LineChart;
    charts.push(new Chart(chartsHost, chartOptions(definition)));
  }
  updateCharts();
}

/** Give every chart the run's current keys; new keys may add series or charts. */
function updateCharts() {
  const keysByRun = new Map([[runId, keys]]);
  for (const key of otherKeys(keys)) {
    if (otherCharts.has(key)) continue;
    const chart = new LineChart(chartsHost, chartOptions({
      id: `other-${otherCharts.size}`, title: key, yTitle: "",
      match: (runKeys) => (runKeys.has(key) ? [{ key, label: key }] : []),
    }));
    otherCharts.set(key, chart);
    charts.push(chart);
  }
  for (const chart of charts) {
    if (chart.updateKeys(keysByRun) && chart.visible) chart.scheduleFetch(0);
  }
  for (const chart of charts) chart.setFindings(findings.all());
  explainEmptyCharts();
}

/** No metric yet: say why instead of an empty column. */
function explainEmptyCharts() {
  const note = document.getElementById("charts-empty");
  const empty = keys.size === 0 && run;
  note.hidden = !empty;
  if (!empty) return;
  note.textContent = run.status === "queued" ? "Charts appear when a worker has claimed the run and it logs its first step."
    : ACTIVE_STATUSES.has(run.status) ? "Charts appear with the first logged step."
      : `The run ended (${run.status}) before logging any metric${run.error ? "; its error is above" : ""}.`;
}

// -- live ------------------------------------------------------------------------------

function onPoints(event) {
  if (!run) return;
  let newKeys = false;
  for (const [key, entry] of Object.entries(event.keys)) {
    if (!keys.has(key)) {
      keys.add(key);
      newKeys = true;
    }
    if (entry.values?.length) {
      const last = entry.values.length - 1;
      run.latest ??= {};
      const previous = run.latest[key];
      if (!previous || entry.steps[last] >= previous.step) {
        run.latest[key] = { step: entry.steps[last], value: entry.values[last], time: entry.times[last] };
      }
    }
  }
  if (run.last_step === null || event.last_step > run.last_step) run.last_step = event.last_step;
  scheduleHeader();
  if (!charts.length) return; // the charts' first fetch will include these points
  if (newKeys) updateCharts();
  // The trainer logs its vocabulary size at the first step: the ln(vocab) line follows.
  const loss = charts.find((chart) => chart.id === "loss");
  if (event.keys["data/vocab_size"] && loss?.plotted) loss.redecorate();
  for (const chart of charts) chart.onPoints(runId, event.keys);
  lrFinder?.refreshSoon();
}

async function onStatus(event) {
  Object.assign(run, { status: event.status, error: event.error, last_step: event.last_step ?? run.last_step });
  renderHeader();
  try {
    await loadRun(); // started/finished times come with the full run
    if (!ACTIVE_STATUSES.has(run.status) || run.status === "running") await loadFiles();
    if (!ACTIVE_STATUSES.has(run.status)) await diagnosis.load(runId); // its final word
  } catch (error) {
    showError(error.message);
  }
}

function onSample(sample) {
  const list = document.getElementById("samples");
  list.querySelector(".muted")?.remove();
  list.prepend(sampleItem(sample));
  while (list.children.length > SAMPLES_SHOWN) list.lastElementChild.remove();
}

function sampleItem(sample) {
  return el("li", { dataset: { step: sample.step } },
    el("div", { className: "muted" }, `step ${formatCount(sample.step)}`),
    el("pre", {}, sample.text));
}

async function loadSamples() {
  const samples = await api(`/runs/${runId}/samples`, { params: { limit: SAMPLES_SHOWN } });
  const list = document.getElementById("samples");
  list.replaceChildren(...(samples.length ? samples.map(sampleItem)
    : [el("li", { className: "muted" }, run?.source === "launched"
      ? "No samples yet. The trainer writes one every sample_interval steps."
      : "No samples yet. A script adds one with run.sample(step, text).")]));
}

async function loadFindings() {
  findings.setAll(await api(`/runs/${runId}/findings`));
  await diagnosis.load(runId);
}

const logViewer = new LogViewer(document.getElementById("run-files"), runId, () => ACTIVE_STATUSES.has(run?.status));

async function loadFiles() {
  if (run.source !== "launched") {
    document.getElementById("run-files").hidden = true;
    return;
  }
  await loadCheckpoints(document.getElementById("checkpoints"), runId);
  if (logViewer.details.open) logViewer.poll();
}

async function reloadEverything() {
  try {
    await loadRun();
    updateCharts();
    for (const chart of charts) if (chart.visible) chart.scheduleFetch(0);
    await Promise.all([loadFindings(), loadSamples(), loadFiles()]);
    showError("");
  } catch (error) {
    showError(`Could not reload: ${error.message}`);
  }
}

// -- page ------------------------------------------------------------------------------

xAll.addEventListener("change", () => charts.forEach((chart) => chart.setXMode(xAll.value)));
document.getElementById("reset-zoom").addEventListener("click", () => charts.forEach((chart) => chart.setXRange(null)));

setInterval(() => {
  if (run && ACTIVE_STATUSES.has(run.status)) {
    const cell = document.getElementById("run-duration");
    if (cell) cell.textContent = durationText();
  }
}, 1000);

async function main() {
  if (!runId) {
    showError("No run given: open a run from the runs table.");
    return;
  }
  // Subscribe first and fetch after the stream's hello: then every point is either in
  // the charts' first fetch or arrives live (duplicates are dropped), never neither.
  let subscribed;
  const hello = new Promise((resolve) => { subscribed = resolve; });
  const stream = new LiveStream(`/runs/${runId}/stream`, {
    hello: () => subscribed(),
    points: afterLoad(onPoints),
    status: afterLoad(onStatus),
    finding: (finding) => findings.upsert(finding),
    diagnosis: (body) => diagnosis.render(body),
    updated: afterLoad((event) => { Object.assign(run, event); renderHeader(); }),
    sample: onSample,
    deleted: () => showError("This run has been deleted."),
    reload: reloadEverything,
  }).start();
  // Off the critical path: the header is drawn again once the defaults are in.
  api("/config-schema").then((schema) => {
    configDefaults = schemaDefaults(schema);
    if (run) renderHeader();
  }).catch(() => {});
  try {
    await loadRun();
  } catch (error) {
    stream.close();
    showError(error.status === 404 ? `Run ${runId} does not exist.` : `Could not load run ${runId}: ${error.message}`);
    header.replaceChildren();
    return;
  }
  await Promise.race([hello, new Promise((resolve) => setTimeout(resolve, 3000))]);
  // A status change between that first read and the stream's subscription reached
  // neither (a queued run claimed while the page opened): read the run once more, now
  // that every later change arrives live.
  try {
    await loadRun();
  } catch (error) {
    showError(error.message);
  }
  buildCharts();
  if (run.config?.lr_finder) {
    lrFinder = new LrFinderPanel(chartsHost.closest("section"), run);
    lrFinder.refresh().catch((error) => showError(error.message));
  }
  setTimeout(loadPlotly, 0); // after the charts' first requests are on their way
  await Promise.all([loadFindings(), loadSamples(), loadFiles()]).catch((error) => showError(error.message));
  // For the browser tests and the benchmark.
  window.trainlens = { run, charts, stream, decodeValue };
}

main();

// pages/run.js — one run: header (status, progress, config summary, Stop / Resume),
// live charts, the findings panel and the latest text samples.
//
// One EventSource (/api/runs/{id}/stream) feeds everything: `points` go to every chart
// (each appends its own keys), `status` refreshes the header, `finding` updates the panel
// and the markers on the charts, `sample` the samples list. After a `reset`, or a stream
// that had to be reopened, everything is fetched again.

import { api, apiUrl } from "../api.js";
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

const SAMPLES_SHOWN = 5;
const CONFIG_SUMMARY = ["n_layer", "n_head", "n_embd", "block_size", "batch_size", "grad_accum_steps",
  "lr", "min_lr", "schedule", "warmup_steps", "max_steps", "grad_clip", "weight_decay", "precision",
  "dataset", "tokenizer", "vocab_size"];

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

const header = document.getElementById("run-header");
const chartsHost = document.getElementById("charts");
const xAll = document.getElementById("x-all");
const linkZoom = document.getElementById("link-zoom");
const pageError = document.getElementById("page-error");

const findings = new FindingsPanel(document.getElementById("findings"), {
  onSelect: (finding) => {
    const last = finding.last_step ?? finding.first_step;
    for (const chart of charts) chart.zoomToSteps(runId, finding.first_step, last);
  },
  onChange: (all) => charts.forEach((chart) => chart.setFindings(all)),
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
  return run;
}

function renderHeader() {
  const latest = run.latest ?? {};
  const value = (key) => latest[key]?.value;
  const step = run.last_step;
  const stepText = step === null || step === undefined ? "—"
    : run.max_steps ? `${formatCount(step)} / ${formatCount(run.max_steps)}` : formatCount(step);
  const stop = el("button", { type: "button", id: "stop-button", className: "danger",
    disabled: !(run.status === "queued" || run.status === "running"),
    onclick: () => steer("stop") }, "Stop");
  const resume = el("button", { type: "button", id: "resume-button",
    disabled: !(run.source === "launched" && RESUMABLE_STATUSES.has(run.status)),
    title: run.source === "external" ? "An external run resumes from its own script" : "Continue from the latest checkpoint",
    onclick: () => steer("resume") }, "Resume");
  const remove = el("button", { type: "button", className: "danger", onclick: removeRun }, "Delete");
  const facts = [
    ["Step", el("span", { id: "run-step" }, stepText),
      run.max_steps && step !== null ? el("progress", { max: run.max_steps, value: Math.min(step + 1, run.max_steps),
        "aria-label": "progress" }) : null],
    ["Train loss", formatNumber(value("train/loss"))],
    ["Val loss", formatNumber(value("val/loss"))],
    ["Tokens/s", formatRate(value("perf/tokens_per_sec"))],
    ["MFU", formatPercent(value("perf/mfu"))],
    ["Started", formatTime(run.started_at)],
    ["Duration", el("span", { id: "run-duration" }, formatDuration(runDuration(run)))],
  ];
  if (run.attempt > 0) facts.push(["Resumed", `${run.attempt}×`]);
  const config = run.config ?? {};
  const summary = CONFIG_SUMMARY.filter((name) => config[name] !== undefined && config[name] !== null);
  header.replaceChildren(...[
    el("div", { className: "run-title" },
      el("h1", { id: "run-name" }, run.name),
      el("span", { id: "run-status" }, statusBadge(run.status)),
      run.preset ? el("span", { className: "muted" }, `preset ${run.preset}`) : null,
      el("span", { className: "muted" }, `${run.source} run #${run.id}`),
      el("span", { className: "toolbar", style: "margin-left:auto" }, stop, resume,
        el("a", { className: "button", href: apiUrl(`/runs/${runId}/metrics.csv`, {}, { withToken: true }),
          download: `run-${runId}-metrics.csv` }, "All metrics (CSV)"),
        el("a", { className: "button", href: `/compare.html?runs=${runId}` }, "Compare…"),
        remove)),
    el("dl", { className: "run-facts" }, facts.map(([term, ...detail]) =>
      el("div", {}, el("dt", {}, term), el("dd", {}, ...detail)))),
    run.error ? el("pre", { className: "run-error", role: "alert" }, run.error) : null,
    summary.length ? el("dl", { className: "config-summary", "aria-label": "Configuration summary" },
      summary.map((name) => el("div", {}, el("dt", {}, name), el("dd", {}, String(config[name]))))) : null,
    Object.keys(config).length ? el("details", {}, el("summary", {}, "Full configuration"),
      el("pre", { className: "config-json" }, JSON.stringify(config, null, 2))) : null,
  ].filter(Boolean));
}

function scheduleHeader() {
  if (headerTimer) return;
  headerTimer = setTimeout(() => {
    headerTimer = null;
    renderHeader();
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
    : [el("li", { className: "muted" }, "No samples yet. The trainer writes one every sample_interval steps.")]));
}

async function loadFindings() {
  findings.setAll(await api(`/runs/${runId}/findings`));
}

async function reloadEverything() {
  try {
    await loadRun();
    updateCharts();
    for (const chart of charts) if (chart.visible) chart.scheduleFetch(0);
    await Promise.all([loadFindings(), loadSamples()]);
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
    if (cell) cell.textContent = formatDuration(runDuration(run));
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
    sample: onSample,
    deleted: () => showError("This run has been deleted."),
    reload: reloadEverything,
  }).start();
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
  await Promise.all([loadFindings(), loadSamples()]).catch((error) => showError(error.message));
  // For the browser tests and the benchmark.
  window.trainlens = { run, charts, stream, decodeValue };
}

main();

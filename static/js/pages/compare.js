// pages/compare.js — chosen runs overlaid per metric, one colour per run, on a shared x
// axis (step, tokens seen or wall time since each run's start). Any metric from the union
// of the runs' keys (per-layer ones included) can be charted, titled as on the run page;
// a table shows only the config values that differ; each run's findings mark the x axis.
//
// The page's one EventSource is the cross-run stream (/api/stream): it says which run
// advanced to which step, and the page then fetches just the new tail of the charted
// keys for that run (one request per run at a time) and appends it to the charts.

import { api } from "../api.js";
import { PALETTE } from "../marks.js";
import { el, formatCount, formatNumber, statusBadge } from "../format.js";
import { LineChart } from "../line-chart.js";
import { loadPlotly } from "../plotly.js";
import { metricChart } from "../run-charts.js";
import { LiveStream } from "../stream.js";

// Metrics worth comparing, in this order; other scalar keys the runs share follow.
const PREFERRED = ["train/loss", "val/loss", "train/loss_eval", "train/grad_norm", "train/lr",
  "perf/tokens_per_sec", "perf/mfu", "perf/step_ms", "sys/mem_gb"];
// Shown unless chosen: per-layer series (many) and 0/1 flags and constants.
const PER_LAYER = /^(act|grad|param|update)\//;
const FLAGS = [/^data\//, /^train\/grad_clipped$/, /^train\/resumed$/, /^train\/skipped$/];
const TAIL_POINTS = 5000;

const query = new URLSearchParams(location.search);
const runIds = (query.get("runs") ?? "")
  .split(",").map(Number).filter((id) => Number.isInteger(id) && id > 0);
// The user's choice of metrics (null: the default set).
let chosen = query.has("metrics") ? query.get("metrics").split(",").filter(Boolean) : null;
const findingsByRun = new Map();
let findingsTimer = null;
const runs = new Map();
const keysByRun = new Map();
const charts = new Map(); // metric key → chart
const tails = new Map(); // run id → {busy, again}

const chartsHost = document.getElementById("charts");
const xAll = document.getElementById("x-all");
const linkZoom = document.getElementById("link-zoom");
const pageError = document.getElementById("page-error");

function showError(message) {
  pageError.textContent = message;
  pageError.hidden = !message;
}

function colorOf(runId) {
  return PALETTE[runIds.indexOf(runId) % PALETTE.length];
}

async function loadRuns() {
  const details = await Promise.all(runIds.map((id) => api(`/runs/${id}`).catch((error) => {
    showError(`Run ${id}: ${error.message}`);
    return null;
  })));
  for (const detail of details.filter(Boolean)) {
    if (runs.has(detail.id)) Object.assign(runs.get(detail.id), detail);
    else {
      runs.set(detail.id, detail);
      // Live tails start after what the charts' first fetch will hold at the latest.
      tails.set(detail.id, { busy: false, again: false, after: detail.last_step ?? -1 });
    }
    keysByRun.set(detail.id, new Set(detail.keys));
  }
  renderChips();
  renderConfigDiff();
  renderMetricPicker();
}

function renderChips() {
  document.getElementById("run-chips").replaceChildren(...[...runs.values()].map((run) =>
    el("li", { className: "run-chip", dataset: { runId: run.id } },
      el("span", { className: "swatch", style: `background:${colorOf(run.id)}`, "aria-hidden": "true" }),
      el("a", { href: `/run.html?id=${run.id}` }, run.name),
      statusBadge(run.status),
      el("span", { className: "muted" }, `step ${formatCount(run.last_step)}`),
      el("span", { className: "muted" }, `loss ${formatNumber(run.latest?.["train/loss"]?.value)}`))));
  document.title = `Compare ${[...runs.values()].map((run) => run.name).join(" · ")} · trainlens`;
}

function allKeys() {
  const all = new Set();
  for (const keys of keysByRun.values()) for (const key of keys) all.add(key);
  return [...all].sort();
}

function defaultKeys(all) {
  const scalar = all.filter((key) => !PER_LAYER.test(key) && !FLAGS.some((pattern) => pattern.test(key)));
  const preferred = PREFERRED.filter((key) => scalar.includes(key));
  return [...preferred, ...scalar.filter((key) => !PREFERRED.includes(key))];
}

function comparedKeys() {
  const all = allKeys();
  return chosen ? chosen.filter((key) => all.includes(key)) : defaultKeys(all);
}

/** Checkboxes for every key any run has; per-layer keys folded by family. */
function renderMetricPicker() {
  const all = allKeys();
  const shown = new Set(comparedKeys());
  const box = (key) => el("label", { title: metricChart(key).title },
    el("input", { type: "checkbox", name: "metric", value: key, checked: shown.has(key) }), ` ${key}`);
  const layered = all.filter((key) => PER_LAYER.test(key));
  const families = [...new Set(layered.map((key) => key.split("/")[0] + "/…/" + key.split("/").at(-1)))];
  document.getElementById("metric-picker").replaceChildren(
    el("div", { className: "metric-picker" }, all.filter((key) => !PER_LAYER.test(key)).map(box)),
    ...families.map((family) => el("details", {}, el("summary", {}, `per layer: ${family}`),
      el("div", { className: "metric-picker" }, layered.filter((key) =>
        key.startsWith(family.split("/")[0] + "/") && key.endsWith("/" + family.split("/").at(-1))).map(box)))));
}

function applyMetricChoice(event) {
  event.preventDefault();
  chosen = [...event.target.querySelectorAll("input[name=metric]:checked")].map((input) => input.value);
  const params = new URLSearchParams(location.search);
  params.set("metrics", chosen.join(","));
  history.replaceState(null, "", `?${params}`);
  for (const [key, chart] of charts) {
    if (!chosen.includes(key)) {
      chart.element.remove();
      charts.delete(key);
    }
  }
  updateCharts();
}

/** Config keys whose values differ between the runs (nested keys flattened). A key that
 *  some runs lack and the others agree on is not a difference worth the first screen (a
 *  launched run's full config beside a script's few keys): those fold under the table. */
function renderConfigDiff() {
  const flat = (object, prefix = "", out = {}) => {
    for (const [key, value] of Object.entries(object ?? {})) {
      if (value && typeof value === "object" && !Array.isArray(value)) flat(value, `${prefix}${key}.`, out);
      else out[`${prefix}${key}`] = value;
    }
    return out;
  };
  const list = [...runs.values()];
  const configs = list.map((run) => flat(run.config));
  const keys = [...new Set(configs.flatMap(Object.keys))].sort();
  const text = (value) => (value === undefined ? "—" : value === null ? "null" : String(value));
  const valuesOf = (key) => new Set(configs.filter((config) => key in config).map((config) => text(config[key])));
  const differing = keys.filter((key) => valuesOf(key).size > 1);
  const partial = keys.filter((key) => valuesOf(key).size === 1 && configs.some((config) => !(key in config)));
  const table = (rowKeys, attribute) => el("table", { className: "config-diff" },
    el("thead", {}, el("tr", {}, el("th", {}, "config"), list.map((run) => el("th", {},
      el("span", { className: "swatch", style: `background:${colorOf(run.id)}` }), ` ${run.name}`)))),
    el("tbody", {}, rowKeys.map((key) => el("tr", { dataset: { [attribute]: key } }, el("th", { scope: "row" }, key),
      configs.map((config) => el("td", {}, text(config[key])))))));
  const host = document.getElementById("config-diff");
  host.replaceChildren(
    differing.length ? table(differing, "key")
      : el("p", { className: "muted" }, list.length > 1 ? "The configs that the runs share are identical." : ""),
    partial.length ? el("details", { id: "config-partial" },
      el("summary", {}, `${partial.length} more set in only some of the runs`), table(partial, "partialKey")) : null);
  host.previousElementSibling.textContent = `Config differences (${differing.length})`;
}

async function loadFindings() {
  await Promise.all([...runs.keys()].map(async (runId) => {
    findingsByRun.set(runId, await api(`/runs/${runId}/findings`).catch(() => []));
  }));
  const all = [...findingsByRun.values()].flat();
  for (const chart of charts.values()) chart.setFindings(all);
}

function updateCharts() {
  for (const key of comparedKeys()) {
    if (charts.has(key)) continue;
    const shared = metricChart(key);
    charts.set(key, new LineChart(chartsHost, {
      id: key.replace(/[^a-z0-9]+/gi, "-"),
      title: shared.title,
      yTitle: shared.yTitle,
      logY: shared.logY,
      yFormat: shared.yFormat,
      help: key,
      runs,
      xMode: xAll.value,
      match: (keys, run) => (keys.has(key)
        ? [{ key, label: run?.name ?? String(run?.id), color: colorOf(run?.id), markers: key === "val/loss" }]
        : []),
      onZoom: (source, xRange) => {
        if (!linkZoom.checked) return;
        for (const chart of charts.values()) {
          if (chart !== source && chart.xMode === source.xMode) chart.setXRange(xRange);
        }
      },
    }));
  }
  for (const chart of charts.values()) {
    if (chart.updateKeys(keysByRun) && chart.visible) chart.scheduleFetch(0);
  }
  document.getElementById("charts").dataset.metrics = String(charts.size);
  const all = [...findingsByRun.values()].flat();
  for (const chart of charts.values()) chart.setFindings(all);
  if (!charts.size && runs.size) {
    chartsHost.replaceChildren(el("p", { className: "muted" }, "These runs have no metrics yet."));
  }
}

/** Fetch what a run wrote after the steps the charts hold, and append it. */
async function pullTail(runId) {
  const tail = tails.get(runId);
  if (!tail) return;
  if (tail.busy) {
    tail.again = true;
    return;
  }
  tail.busy = true;
  try {
    do {
      tail.again = false;
      const keys = [...charts.keys()].filter((key) => keysByRun.get(runId)?.has(key));
      if (!keys.length) break;
      const answer = await api(`/runs/${runId}/metrics`, {
        params: { keys: keys.join(","), start: tail.after + 1, max_points: TAIL_POINTS },
      });
      const batch = {};
      let downsampled = false;
      for (const [key, series] of Object.entries(answer.series)) {
        if (!series.steps.length) continue;
        downsampled ||= series.downsampled;
        batch[key] = { first: series.steps[0], last: series.steps.at(-1),
          steps: series.steps, values: series.values, times: series.times };
        tail.after = Math.max(tail.after, series.steps.at(-1));
      }
      for (const chart of charts.values()) {
        if (downsampled) chart.scheduleFetch(0); // far behind: fetch the window afresh
        else chart.onPoints(runId, batch);
      }
    } while (tail.again);
  } catch (error) {
    showError(`Live update failed: ${error.message}`);
  } finally {
    tail.busy = false;
  }
}

function onProgress(event) {
  const run = runs.get(event.run_id);
  if (!run) return;
  run.last_step = Math.max(run.last_step ?? -1, event.last_step);
  for (const [key, value] of Object.entries(event.latest ?? {})) run.latest[key] = { value, step: event.last_step };
  renderChips();
  pullTail(event.run_id);
}

async function onStatus(event) {
  if (!runs.has(event.run_id)) return;
  await loadRuns().catch(() => {});
  updateCharts();
}

async function reloadEverything() {
  await loadRuns().catch((error) => showError(error.message));
  updateCharts();
  for (const chart of charts.values()) chart.scheduleFetch(0);
}

async function buildPicker() {
  const answer = await api("/runs", { params: { limit: 100 } });
  document.getElementById("run-picker").replaceChildren(...answer.runs.map((run) =>
    el("label", {}, el("input", { type: "checkbox", name: "run", value: run.id, checked: runIds.includes(run.id) }),
      ` ${run.name} `, el("span", { className: "muted" }, `#${run.id} ${run.status}`))));
}

document.getElementById("run-picker-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const chosen = [...event.target.querySelectorAll("input[name=run]:checked")].map((input) => input.value);
  location.href = `/compare.html?runs=${chosen.join(",")}`;
});
document.getElementById("metric-form").addEventListener("submit", applyMetricChoice);
xAll.addEventListener("change", () => charts.forEach((chart) => chart.setXMode(xAll.value)));
document.getElementById("reset-zoom").addEventListener("click", () => charts.forEach((chart) => chart.setXRange(null)));

async function main() {
  buildPicker().catch(() => {});
  if (!runIds.length) {
    document.getElementById("run-picker-box").open = true;
    chartsHost.replaceChildren(el("p", { className: "muted" },
      "Choose two or more runs above, or select them in the runs table."));
    return;
  }
  let subscribed;
  const hello = new Promise((resolve) => { subscribed = resolve; });
  new LiveStream("/stream", {
    hello: () => subscribed(),
    progress: onProgress,
    status: onStatus,
    finding: (finding) => {
      // Findings come in bursts: read them again once the burst has passed.
      if (!runs.has(finding.run_id)) return;
      clearTimeout(findingsTimer);
      findingsTimer = setTimeout(loadFindings, 500);
    },
    created: () => buildPicker().catch(() => {}),
    deleted: (event) => runs.has(event.run_id) && showError(`Run ${event.run_id} has been deleted.`),
    reload: reloadEverything,
  }).start();
  await loadRuns();
  await Promise.race([hello, new Promise((resolve) => setTimeout(resolve, 3000))]);
  updateCharts();
  setTimeout(loadPlotly, 0); // after the charts' first requests are on their way
  await loadFindings();
  window.trainlens = { runs, charts };
}

main();

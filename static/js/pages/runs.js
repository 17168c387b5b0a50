// pages/runs.js — the runs table: live status and step for every run, a status and name
// filter, selection for comparison, and the launch form.
//
// Live updates come from the cross-run stream (/api/stream): `progress` events patch a
// row's step and latest values in place (they arrive with every write); anything that
// can change which rows are shown or their order (a new run, a status change, a
// finding, a deletion) re-reads the list, at most a few times a second.

import { api } from "../api.js";
import {
  ACTIVE_STATUSES, el, formatCount, formatDuration, formatNumber, formatRate, formatTime,
  runDuration, statusBadge,
} from "../format.js";
import { setupLaunchForm } from "../launch.js";
import { LiveStream } from "../stream.js";

const PAGE_SIZE = 50;
const RELOAD_DEBOUNCE_MS = 150;

const state = {
  runs: new Map(), // id → run summary, in table order
  selected: new Set(),
  limit: PAGE_SIZE,
  total: 0,
  reloadTimer: null,
  loading: null,
};

const tbody = document.querySelector("#runs-table tbody");
const statusFilter = document.getElementById("status-filter");
const nameFilter = document.getElementById("name-filter");
const compareButton = document.getElementById("compare-button");
const moreButton = document.getElementById("more-button");
const errorBox = document.getElementById("runs-error");

async function load() {
  const controller = new AbortController();
  state.loading?.abort();
  state.loading = controller;
  try {
    const answer = await api("/runs", {
      params: { status: statusFilter.value, q: nameFilter.value.trim(), limit: state.limit },
      signal: controller.signal,
    });
    if (state.loading !== controller) return;
    state.total = answer.total;
    state.runs = new Map(answer.runs.map((run) => [run.id, run]));
    render();
    errorBox.hidden = true;
  } catch (error) {
    if (error.name === "AbortError") return;
    errorBox.textContent = `Could not load runs: ${error.message}`;
    errorBox.hidden = false;
  }
}

function scheduleReload() {
  clearTimeout(state.reloadTimer);
  state.reloadTimer = setTimeout(load, RELOAD_DEBOUNCE_MS);
}

function render() {
  tbody.replaceChildren(...[...state.runs.values()].map(row));
  document.getElementById("runs-empty").hidden = state.runs.size > 0;
  moreButton.hidden = state.total <= state.runs.size;
  moreButton.textContent = `Show more (${state.total - state.runs.size} older)`;
  updateCompareButton();
}

function row(run) {
  const checkbox = el("input", {
    type: "checkbox", checked: state.selected.has(run.id),
    "aria-label": `Select ${run.name} for comparison`,
    onchange: () => {
      if (checkbox.checked) state.selected.add(run.id);
      else state.selected.delete(run.id);
      tr.classList.toggle("selected", checkbox.checked);
      updateCompareButton();
    },
  });
  const tr = el("tr", { dataset: { runId: run.id }, className: state.selected.has(run.id) ? "selected" : "" },
    el("td", {}, checkbox),
    el("td", { className: "name" },
      el("a", { href: `/run.html?id=${run.id}` }, run.name),
      run.preset ? el("span", { className: "preset" }, run.preset) : null,
      run.source === "external" ? el("span", { className: "preset" }, "external") : null),
    el("td", { className: "status-cell" }, statusBadge(run.status)),
    el("td", { className: "num progress-cell" }),
    el("td", { className: "num train-loss" }),
    el("td", { className: "num val-loss" }),
    el("td", { className: "num tokens" }),
    el("td", { className: "findings-cell" }, findingBadges(run.findings)),
    el("td", { className: "started" }, formatTime(run.started_at)),
    el("td", { className: "num duration" }, formatDuration(runDuration(run))));
  fillProgress(tr, run);
  if (run.error) tr.title = run.error;
  return tr;
}

function fillProgress(tr, run) {
  const step = run.last_step;
  const cell = tr.querySelector(".progress-cell");
  const text = step === null || step === undefined ? "—"
    : run.max_steps ? `${formatCount(step)} / ${formatCount(run.max_steps)}` : formatCount(step);
  const parts = [el("span", { className: "step" }, text)];
  if (run.max_steps && step !== null && step !== undefined) {
    parts.push(el("progress", { max: run.max_steps, value: Math.min(step + 1, run.max_steps),
      "aria-label": `${run.name} progress` }));
  }
  cell.replaceChildren(...parts);
  const latest = run.latest ?? {};
  tr.querySelector(".train-loss").textContent = formatNumber(latest["train/loss"]?.value);
  tr.querySelector(".val-loss").textContent = formatNumber(latest["val/loss"]?.value);
  tr.querySelector(".tokens").textContent = formatRate(latest["perf/tokens_per_sec"]?.value);
}

function findingBadges(counts) {
  if (!counts) return [];
  const badges = ["critical", "warning", "info"]
    .filter((severity) => counts[severity] > 0)
    .map((severity) => el("span", { className: `sev sev-${severity}`, title: `${counts[severity]} ${severity}` },
      String(counts[severity])));
  return badges.length ? badges : [el("span", { className: "muted" }, "—")];
}

function updateCompareButton() {
  const count = state.selected.size;
  compareButton.disabled = count < 2;
  compareButton.textContent = count ? `Compare selected (${count})` : "Compare selected";
}

// -- live ----------------------------------------------------------------------------

function onProgress(event) {
  const run = state.runs.get(event.run_id);
  if (!run) return;
  if (run.last_step === null || event.last_step >= run.last_step) run.last_step = event.last_step;
  run.latest ??= {};
  for (const [key, value] of Object.entries(event.latest ?? {})) {
    run.latest[key] = { ...(run.latest[key] ?? {}), value, step: event.last_step };
  }
  const tr = tbody.querySelector(`tr[data-run-id="${event.run_id}"]`);
  if (tr) fillProgress(tr, run);
}

function onStatus(event) {
  const run = state.runs.get(event.run_id);
  if (run) {
    // Show the new status at once; the reload that follows brings the timestamps.
    run.status = event.status;
    const cell = tbody.querySelector(`tr[data-run-id="${event.run_id}"] .status-cell`);
    cell?.replaceChildren(statusBadge(event.status));
  }
  scheduleReload();
}

function tickDurations() {
  const now = Date.now() / 1000;
  for (const run of state.runs.values()) {
    if (!ACTIVE_STATUSES.has(run.status) || !run.started_at) continue;
    const cell = tbody.querySelector(`tr[data-run-id="${run.id}"] .duration`);
    if (cell) cell.textContent = formatDuration(runDuration(run, now));
  }
}

// -- wiring --------------------------------------------------------------------------

statusFilter.addEventListener("change", () => {
  state.limit = PAGE_SIZE;
  load();
});
let nameTimer = null;
nameFilter.addEventListener("input", () => {
  clearTimeout(nameTimer);
  nameTimer = setTimeout(load, 250);
});
moreButton.addEventListener("click", () => {
  state.limit += PAGE_SIZE;
  load();
});
compareButton.addEventListener("click", () => {
  location.href = `/compare.html?runs=${[...state.selected].join(",")}`;
});

const launchToggle = document.getElementById("launch-toggle");
const launchSection = document.getElementById("launch");
let launchReady = false;
launchToggle.addEventListener("click", () => {
  const open = launchSection.hidden;
  launchSection.hidden = !open;
  launchToggle.setAttribute("aria-expanded", String(open));
  if (open && !launchReady) {
    launchReady = true;
    setupLaunchForm(document.getElementById("launch-form"), {
      onLaunched: (run) => { location.href = `/run.html?id=${run.id}`; },
    });
  }
});
if (location.hash === "#launch") launchToggle.click();

new LiveStream("/stream", {
  // A change between the first load and the subscription reached neither: load again
  // once the stream is live.
  hello: scheduleReload,
  progress: onProgress,
  status: onStatus,
  created: scheduleReload,
  finding: scheduleReload,
  deleted: (event) => {
    state.selected.delete(event.run_id);
    scheduleReload();
  },
  reload: scheduleReload,
}).start();

setInterval(tickDurations, 1000);
load();

// pages/runs.js — the runs table: live status and step for every run; columns chosen
// from config keys and latest metrics, sorted and filtered by any of them on the server
// (`lr > 1e-3; val/loss < 1.6`); tags, notes, rename; grouping by tag or preset;
// selection for comparison, and the launch form.
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
const COLUMNS_KEY = "trainlens.runs.columns";

// Fixed columns: [id, header, sort name (null: not sortable), numeric]. The cells with
// these classes are what live progress events patch in place.
const BASE_COLUMNS = [
  ["progress-cell", "Step", "step", true],
  ["train-loss", "Train loss", "train/loss", true],
  ["val-loss", "Val loss", "val/loss", true],
  ["tokens", "Tokens/s", "perf/tokens_per_sec", true],
  ["findings-cell", "Findings", null, false],
  ["tags-cell", "Tags", "tags", false],
  ["started", "Started", "created_at", false],
  ["duration", "Duration", null, true],
];

const SHOWN_METRICS = new Set(BASE_COLUMNS.map(([, , sortName]) => sortName).filter((name) => name?.includes("/")));

function savedColumns() {
  try {
    const saved = JSON.parse(localStorage.getItem(COLUMNS_KEY) ?? "[]");
    return Array.isArray(saved) ? saved.filter((name) => typeof name === "string") : [];
  } catch {
    return [];
  }
}

const state = {
  runs: new Map(), // id → run summary, in table order
  selected: new Set(),
  limit: PAGE_SIZE,
  total: 0,
  reloadTimer: null,
  loading: null,
  extra: savedColumns(), // chosen config keys and metric keys, in order
  sort: null, // "val/loss" or "-val/loss"
  known: null, // every name a filter can use (GET /api/runs/columns), once loaded
};

const tbody = document.querySelector("#runs-table tbody");
const statusFilter = document.getElementById("status-filter");
const nameFilter = document.getElementById("name-filter");
const compareButton = document.getElementById("compare-button");
const moreButton = document.getElementById("more-button");
const errorBox = document.getElementById("runs-error");
const queryBox = document.getElementById("runs-query");
const groupBy = document.getElementById("group-by");
const headRow = document.querySelector("#runs-table thead tr");

const isMetric = (name) => name.includes("/");

function filters() {
  return queryBox.value.split(/;|\band\b/).map((part) => part.trim()).filter(Boolean);
}

async function load() {
  const controller = new AbortController();
  state.loading?.abort();
  state.loading = controller;
  try {
    const params = new URLSearchParams();
    const add = (name, value) => value && params.append(name, value);
    add("status", statusFilter.value);
    add("q", nameFilter.value.trim());
    add("limit", String(state.limit));
    add("sort", state.sort);
    add("metrics", state.extra.filter(isMetric).join(","));
    for (const condition of filters()) params.append("filter", condition);
    const answer = await api(`/runs?${params}`, { signal: controller.signal });
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

function renderHead() {
  const header = (label, sortName, numeric) => {
    const th = el("th", { scope: "col", className: `${numeric ? "num" : ""} ${sortName ? "sortable" : ""}`,
      title: sortName ? `Sort by ${sortName}` : undefined }, label);
    if (sortName) {
      if (state.sort === sortName) th.setAttribute("aria-sort", "ascending");
      if (state.sort === `-${sortName}`) th.setAttribute("aria-sort", "descending");
      th.addEventListener("click", () => {
        state.sort = state.sort === sortName ? `-${sortName}` : state.sort === `-${sortName}` ? null : sortName;
        load();
      });
    }
    return th;
  };
  headRow.replaceChildren(
    el("th", { scope: "col" }, el("span", { className: "visually-hidden" }, "Select for comparison")),
    header("Name", "name", false),
    header("Status", "status", false),
    ...BASE_COLUMNS.map(([, label, sortName, numeric]) => header(label, sortName, numeric)),
    ...state.extra.map((name) => header(name, name, true)),
    header("Notes", "notes", false),
  );
}

/** Rows, or rows under a heading per tag / preset (a run with two tags shows twice). */
function groupedRows() {
  const runs = [...state.runs.values()];
  if (!groupBy.value) return runs.map(row);
  const groups = new Map();
  for (const run of runs) {
    const names = groupBy.value === "tag" ? (run.tags?.length ? run.tags : ["(no tag)"]) : [run.preset ?? "(no preset)"];
    for (const name of names) {
      if (!groups.has(name)) groups.set(name, []);
      groups.get(name).push(run);
    }
  }
  const span = 3 + BASE_COLUMNS.length + state.extra.length + 1;
  const order = ([a], [b]) => a.startsWith("(no ") - b.startsWith("(no ") || a.localeCompare(b);
  return [...groups].sort(order).flatMap(([name, members]) => [
    el("tr", { className: "group-row", dataset: { group: name } },
      el("td", { colSpan: span }, `${groupBy.value} ${name} · ${members.length} run(s)`)),
    ...members.map(row),
  ]);
}

function render() {
  renderHead();
  tbody.replaceChildren(...groupedRows());
  const empty = document.getElementById("runs-empty");
  empty.hidden = state.runs.size > 0;
  if (!empty.hidden) empty.textContent = emptyMessage();
  if (!empty.hidden && filters().length && !state.known) knownNames().then(render, () => {});
  moreButton.hidden = state.total <= state.runs.size;
  moreButton.textContent = `Show more (${state.total - state.runs.size} older)`;
  updateCompareButton();
}

/** Why the table is empty: no runs at all, or none that pass the filters (naming any
 *  filter key that no run has, which is most often a typo). */
function emptyMessage() {
  const conditions = filters();
  if (!conditions.length && !statusFilter.value && !nameFilter.value.trim()) {
    return "No runs here yet. Launch one above, or log from your own script (see the README).";
  }
  const unknown = state.known ? conditions
    .map((condition) => condition.split(/\s*(?:>=|<=|!=|==|=|>|<|~)/)[0].trim())
    .filter((name) => name && !state.known.has(name)) : [];
  return "No runs match these filters." + (unknown.length
    ? ` No run has ${unknown.map((name) => `“${name}”`).join(", ")}: see Columns… for the names there are.` : "");
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
      run.source === "external" ? el("span", { className: "preset" }, "external") : null,
      el("button", { type: "button", className: "small link-button", title: "Rename",
        "aria-label": `Rename ${run.name}`, onclick: () => rename(run) }, "✎")),
    el("td", { className: "status-cell" }, statusBadge(run.status),
      run.queue_position ? el("span", { className: "muted" }, ` #${run.queue_position} in queue`) : null),
    el("td", { className: "num progress-cell" }),
    el("td", { className: "num train-loss" }),
    el("td", { className: "num val-loss" }),
    el("td", { className: "num tokens" }),
    el("td", { className: "findings-cell" }, findingBadges(run.findings)),
    el("td", { className: "tags-cell" }, (run.tags ?? []).map((tag) => el("span", { className: "tag" }, tag)),
      el("button", { type: "button", className: "small link-button", "aria-label": `Edit tags of ${run.name}`,
        onclick: () => editTags(run) }, "+")),
    el("td", { className: "started" }, formatTime(run.started_at)),
    el("td", { className: "num duration" }, formatDuration(runDuration(run))),
    ...state.extra.map((name) => el("td", { className: "num extra", dataset: { column: name } }, columnValue(run, name))),
    el("td", { className: "notes-cell", title: run.notes || "" }, run.notes || ""));
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

function columnValue(run, name) {
  if (isMetric(name)) return formatNumber(run.latest?.[name]?.value);
  let value = run.config ?? {};
  for (const part of name.split(".")) value = value?.[part];
  if (value === undefined || value === null) return "—";
  return typeof value === "number" ? formatNumber(value) : String(value);
}

async function patch(run, body) {
  try {
    await api(`/runs/${run.id}`, { method: "PATCH", body });
    await load();
  } catch (error) {
    errorBox.textContent = `Could not save: ${error.message}`;
    errorBox.hidden = false;
  }
}

function rename(run) {
  const name = window.prompt(`New name for run #${run.id}`, run.name);
  if (name && name.trim() && name !== run.name) patch(run, { name: name.trim() });
}

function editTags(run) {
  const text = window.prompt(`Tags of ${run.name} (comma-separated)`, (run.tags ?? []).join(", "));
  if (text === null) return;
  patch(run, { tags: text.split(",").map((tag) => tag.trim()).filter(Boolean) });
}

// -- columns ---------------------------------------------------------------------------

let columnsLoading = null;

/** The names filters can use, loaded once: for the filter box's suggestions and to name
 *  a filter key no run has. */
function knownNames() {
  columnsLoading ??= loadColumns().catch((error) => { columnsLoading = null; throw error; });
  return columnsLoading;
}

async function loadColumns() {
  const columns = await api("/runs/columns");
  const names = [...columns.config, ...columns.metrics];
  state.known = new Set([...columns.fields, ...names]);
  document.getElementById("runs-query-names").replaceChildren(
    ...[...columns.fields, ...names].map((name) => el("option", { value: name })));
  const option = (name) => el("label", {}, el("input", { type: "checkbox", value: name, checked: state.extra.includes(name),
    onchange: (event) => {
      state.extra = event.target.checked ? [...state.extra, name] : state.extra.filter((other) => other !== name);
      localStorage.setItem(COLUMNS_KEY, JSON.stringify(state.extra));
      load();
    } }), ` ${name}`);
  document.getElementById("column-options").replaceChildren(
    el("strong", {}, "Config"), ...columns.config.map(option),
    el("strong", {}, "Latest metric"), ...columns.metrics
      .filter((name) => !/^(act|grad|param|update)\//.test(name) && !SHOWN_METRICS.has(name)).map(option),
    el("details", {}, el("summary", {}, "Per-layer metrics"),
      ...columns.metrics.filter((name) => /^(act|grad|param|update)\//.test(name)).map(option)));
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
let queryTimer = null;
queryBox.addEventListener("focus", () => knownNames().catch(() => {}), { once: true });
queryBox.addEventListener("input", () => {
  clearTimeout(queryTimer);
  queryTimer = setTimeout(load, 350);
});
groupBy.addEventListener("change", render);
document.getElementById("column-picker").addEventListener("toggle", (event) => {
  if (event.target.open) loadColumns().catch((error) => { errorBox.textContent = error.message; errorBox.hidden = false; });
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
  updated: scheduleReload,
  finding: scheduleReload,
  deleted: (event) => {
    state.selected.delete(event.run_id);
    scheduleReload();
  },
  reload: scheduleReload,
}).start();

setInterval(tickDurations, 1000);
renderHead();
load();

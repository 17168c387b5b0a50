// chart-base.js — what every chart shares: its toolbar, the x axis (step, tokens seen,
// wall time), fetching exactly the visible range at about one point per pixel, re-fetching
// on zoom and pan, appending live points, and the finding markers.
//
// The server does the downsampling (extreme-preserving, so no spike is ever dropped);
// the browser only asks for the window on screen, sized to the plot's width. A chart
// therefore never holds many more points than it draws: live points are appended
// until a series holds LIVE_BUDGET times what a fetch returns, then the window is
// fetched again, downsampled.

import { api, apiUrl, isAbort } from "./api.js";
import { loadPlotly } from "./plotly.js";
import { el, formatCount, plotText } from "./format.js";
import { MARK_LEGEND, findingMarks } from "./marks.js";
import { X_MODES, runOrigin } from "./series.js";
import { XAxis } from "./x-axis.js";

// M4 keeps 4 points per bucket; 2 points per pixel is a bucket every 2 pixels, which
// draws the same picture as the full series while keeping every minimum and maximum.
const POINTS_PER_PIXEL = 2;
const LIVE_BUDGET = 2;
const FETCH_MARGIN = 0.05; // fetch a little beyond the visible range so a small pan shows data at once
const ZOOM_DEBOUNCE_MS = 120;

// One redraw queue for every chart of the page. Redraws are spread over frames, about a
// frame's budget each, and taken in page order, not arrival order: a redraw costs tens
// of milliseconds (Plotly redraws the whole plot), and on a busy CPU a hundred, so a
// queue in arrival order put the loss chart of step N+1 behind every other chart of
// step N — seconds behind under load. Now the first chart on the page goes first at
// every frame. The other charts redraw at most every SECONDARY_INTERVAL_MS (or five
// times their last redraw's cost, when slower): they gather their points meanwhile and
// draw them in one go, and the page keeps most of the main thread free.
const flushQueue = new Set();
let flushFrame = null;
let flushTimer = null;
let chartCount = 0;
const FRAME_BUDGET_MS = 12;
const SECONDARY_INTERVAL_MS = 1000;
const COST_FACTOR = 5;

function queueFlush(chart) {
  flushQueue.add(chart);
  if (dueAt(chart) <= performance.now() || !flushTimer) flushFrame ??= requestAnimationFrame(runFlushes);
}

/** When a chart may redraw next: the page's first chart at once, the others paced. */
function dueAt(chart) {
  if (chart.order === 0) return 0;
  return (chart.lastFlushAt ?? -Infinity) + Math.max(SECONDARY_INTERVAL_MS, COST_FACTOR * (chart.lastFlushCost ?? 0));
}

function runFlushes() {
  flushFrame = null;
  clearTimeout(flushTimer);
  flushTimer = null;
  const started = performance.now();
  const ready = [...flushQueue].filter((chart) => dueAt(chart) <= started).sort((a, b) => a.order - b.order);
  for (const chart of ready) {
    flushQueue.delete(chart);
    const before = performance.now();
    chart.flushNow();
    chart.lastFlushAt = performance.now();
    chart.lastFlushCost = chart.lastFlushAt - before;
    if (chart.lastFlushAt - started > FRAME_BUDGET_MS) break;
  }
  if (!flushQueue.size) return;
  const next = Math.min(...[...flushQueue].map(dueAt));
  const wait = next - performance.now();
  if (wait <= 0) flushFrame = requestAnimationFrame(runFlushes);
  else flushTimer = setTimeout(() => { flushTimer = null; flushFrame ??= requestAnimationFrame(runFlushes); }, wait);
}

export const PLOTLY_CONFIG = {
  responsive: true,
  displaylogo: false,
  modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"],
};

export class ChartBase {
  /**
   * @param {HTMLElement} host where the chart's section is appended
   * @param {object} options
   *   id, title, runs (Map run id → run; mutated in place by the page as runs change),
   *   match(keys, run) → series specs [{key, label?, kind?, yaxis?, …}] for one run's keys,
   *   xMode, onZoom(chart, xRange) when the user zooms (for linked charts)
   */
  constructor(host, options) {
    this.options = options;
    this.id = options.id;
    this.order = chartCount++; // page order: the redraw queue's priority
    this.lastFlushAt = null;
    this.lastFlushCost = 0;
    this.runs = options.runs;
    this.axis = new XAxis(options.runs, options.xMode ?? "step");
    this.xRange = null; // the user's zoom, in x units; null: everything, following live points
    this.specs = [];
    this.data = new Map(); // spec id → SeriesData
    this.findings = [];
    this.selectedFinding = null;
    this.pending = []; // live batches that arrived while a fetch was in flight
    this.extensions = new Map(); // spec id → index of its first point not yet drawn
    this.fetchController = null;
    this.fetchTimer = null;
    this.fetchCount = 0;
    this.fetchedPoints = 0;
    this.visible = false;
    this.plotted = false;
    this.applying = 0; // layout changes of our own in flight: their events are not the user's
    this.buildDom(host);
  }

  // -- DOM -------------------------------------------------------------------------------

  buildDom(host) {
    const titleId = `chart-${this.id}-title`;
    this.plot = el("div", { className: "plot" });
    this.note = el("p", { className: "chart-note", "aria-live": "polite" });
    this.xSelect = el("select", { "aria-label": `${this.options.title}: x axis`,
      onchange: () => this.setXMode(this.xSelect.value) },
      Object.entries(X_MODES).map(([value, label]) => el("option", { value }, label)));
    this.xSelect.value = this.xMode;
    this.csv = el("span", { className: "csv" });
    this.element = el("section", {
      className: `chart ${this.options.wide ? "chart-wide" : ""}`,
      id: `chart-${this.id}`,
      hidden: true,
      "aria-labelledby": titleId,
    },
    el("header", { className: "chart-head" },
      el("h3", { id: titleId }, this.options.title),
      el("div", { className: "chart-tools", role: "group", "aria-label": `${this.options.title} options` },
        this.extraTools(),
        el("label", {}, "x ", this.xSelect),
        this.csv)),
    this.plot,
    this.legend = el("p", { className: "marks-legend", hidden: true },
      MARK_LEGEND.map(([severity, color]) => el("span", {}, el("b", { style: `color:${color}` }, "▲"), ` ${severity} `)),
      "finding (select one in the panel to shade its steps)"),
    this.note);
    if (this.options.help) this.element.querySelector("h3").title = this.options.help;
    host.append(this.element);
    // Off-screen charts keep their live points but redraw only when scrolled into view:
    // every redraw costs main-thread time that the charts on screen need.
    this.onScreen = true;
    if ("IntersectionObserver" in window) {
      new IntersectionObserver((entries) => {
        this.onScreen = entries.at(-1).isIntersecting;
        if (this.onScreen) this.requestFlush();
      }, { rootMargin: "200px" }).observe(this.element);
    }
  }

  /** Subclasses add their own controls (log y, smoothing, …). */
  extraTools() {
    return [];
  }

  updateCsvLinks() {
    const byRun = this.keysByRun();
    const links = [...byRun].map(([runId, keys]) => el("a", {
      className: "button small",
      href: apiUrl(`/runs/${runId}/metrics.csv`, { keys: keys.join(",") }),
      download: `run-${runId}-${this.id}.csv`,
      title: "Every point at full resolution",
    }, byRun.size > 1 ? `CSV ${this.runs.get(runId)?.name ?? runId}` : "CSV"));
    if (links.length > 1) {
      this.csv.replaceChildren(el("details", { className: "csv-menu" },
        el("summary", { className: "button small" }, "CSV"), el("div", {}, links)));
    } else this.csv.replaceChildren(...links);
  }

  // -- series ------------------------------------------------------------------------

  /** Recompute the series from the runs' keys; true when they changed. */
  updateKeys(keysByRun) {
    const specs = [];
    for (const [runId, keys] of keysByRun) {
      const run = this.runs.get(runId);
      for (const spec of this.options.match(keys, run)) {
        specs.push({ kind: "line", yaxis: "y", ...spec, label: plotText(spec.label ?? spec.key), runId,
          id: `${runId}|${spec.key}` });
      }
    }
    const before = this.specs.map((spec) => spec.id).join(",");
    this.specs = specs;
    const changed = before !== specs.map((spec) => spec.id).join(",");
    if (changed) this.updateCsvLinks();
    this.setVisible(specs.some((spec) => spec.kind === "line" || spec.kind === "cell"));
    return changed;
  }

  keysByRun() {
    const byRun = new Map();
    for (const spec of this.specs) {
      if (!byRun.has(spec.runId)) byRun.set(spec.runId, []);
      byRun.get(spec.runId).push(spec.key);
    }
    return byRun;
  }

  setVisible(visible) {
    this.element.hidden = !visible;
    if (visible && !this.visible) this.scheduleFetch(0);
    this.visible = visible;
  }

  // -- x axis --------------------------------------------------------------------------

  get xMode() {
    return this.axis.mode;
  }

  run(runId) {
    return this.axis.run(runId);
  }

  xOf(runId, step, time) {
    return this.axis.of(runId, step, time);
  }

  /** Any series of a run that holds data (for time lookups). */
  heldData(runId) {
    for (const spec of this.specs) {
      const data = this.data.get(spec.id);
      if (spec.runId === runId && data?.length) return data;
    }
    return undefined;
  }

  chooseTimeUnit() {
    this.axis.fitTimeUnit(this.specs.map((spec) => ({ runId: spec.runId, data: this.data.get(spec.id) })));
  }

  stepOfX(runId, x) {
    return this.axis.stepAt(runId, x, this.heldData(runId));
  }

  /** The step window to fetch for a run: the visible range and a margin, or everything. */
  stepWindow(runId) {
    if (!this.xRange) return {};
    let start = this.stepOfX(runId, this.xRange[0]);
    let end = this.stepOfX(runId, this.xRange[1]);
    if (start !== undefined && end !== undefined) {
      const margin = (end - start) * FETCH_MARGIN;
      start -= margin;
      end += margin;
    }
    return {
      start: start === undefined ? undefined : Math.max(0, Math.floor(start)),
      end: end === undefined ? undefined : Math.max(0, Math.ceil(end)),
    };
  }

  inWindow(window, step) {
    return (window.start === undefined || step >= window.start)
      && (window.end === undefined || step <= window.end);
  }

  setXMode(mode) {
    if (mode === "tokens" && !this.axis.tokensAvailable()) {
      this.xSelect.value = this.xMode;
      this.showNote("Tokens seen needs tokens per step, which this run does not report.");
      return;
    }
    this.axis.mode = mode;
    this.xSelect.value = mode;
    // A zoomed chart holds only its window: show the whole run again, fetched afresh.
    if (this.xRange) {
      this.xRange = null;
      this.scheduleFetch(0);
    } else this.render();
  }

  // -- fetching ------------------------------------------------------------------------

  plotWidth() {
    const width = this.plot.clientWidth || this.element.clientWidth || 600;
    return Math.max(100, width - 80);
  }

  maxPoints() {
    const points = Math.round(this.plotWidth() * POINTS_PER_PIXEL);
    return Math.min(20000, Math.max(64, points));
  }

  budget() {
    return LIVE_BUDGET * this.maxPoints() + 64;
  }

  scheduleFetch(delay = 0) {
    if (!this.visible && !this.specs.length) return;
    clearTimeout(this.fetchTimer);
    this.fetchTimer = setTimeout(() => this.fetch(), delay);
  }

  async fetch() {
    clearTimeout(this.fetchTimer);
    if (!this.specs.length) return;
    this.fetchController?.abort();
    const controller = new AbortController();
    this.fetchController = controller;
    this.extensions.clear(); // a fresh render draws everything
    this.plot.dataset.state = "loading";
    if (!this.plotted) this.showNote("Loading…");
    const maxPoints = this.maxPoints();
    try {
      const answers = await Promise.all([...this.keysByRun()].map(async ([runId, keys]) => {
        const window = this.stepWindow(runId);
        const widen = window.start !== undefined && window.end !== undefined ? 1 + 2 * FETCH_MARGIN : 1;
        const body = await api(`/runs/${runId}/metrics`, {
          params: { keys: keys.join(","), start: window.start, end: window.end,
            max_points: Math.max(8, Math.round(maxPoints * widen)) },
          signal: controller.signal,
        });
        return [runId, body.series];
      }));
      if (controller !== this.fetchController) return;
      this.acceptFetched(new Map(answers));
      this.fetchCount += 1;
      this.plot.dataset.fetches = String(this.fetchCount);
      this.plot.dataset.maxPoints = String(maxPoints);
      // Live points that arrive while drawing wait in `pending` until the new traces exist.
      await this.render();
      if (controller !== this.fetchController) return; // a newer fetch has taken over
      this.fetchController = null;
      const pending = this.pending;
      this.pending = [];
      for (const [runId, keys] of pending) this.onPoints(runId, keys);
      this.plot.dataset.state = "ready";
    } catch (error) {
      if (isAbort(error) || controller !== this.fetchController) return;
      this.fetchController = null;
      this.plot.dataset.state = "error";
      this.showNote(`Could not load: ${error.message}`, true);
    }
  }

  /** Store freshly fetched series (subclasses decode them). */
  acceptFetched(/* seriesByRun */) {
    throw new Error("acceptFetched is abstract");
  }

  showNote(text, isError = false) {
    this.note.textContent = text;
    this.note.classList.toggle("error", isError);
  }

  describeData() {
    let held = 0;
    let total = 0;
    let downsampled = false;
    for (const spec of this.specs) {
      const data = this.data.get(spec.id);
      if (!data || spec.kind !== "line" && spec.kind !== "cell") continue;
      held += data.length;
      total += data.total;
      downsampled ||= data.downsampled;
    }
    this.fetchedPoints = held;
    if (!held) return "No data yet.";
    const where = this.xRange ? " in view" : "";
    return downsampled
      ? `${formatCount(held)} of ${formatCount(total)} points${where} (extremes kept at every zoom)`
      : `${formatCount(held)} points${where} at full resolution`;
  }

  // -- live ----------------------------------------------------------------------------

  /** A live batch of points for one run: {key: {first, last, steps?, values?, times?}}. */
  onPoints(runId, keys) {
    const mine = this.specs.filter((spec) => spec.runId === runId && keys[spec.key]);
    if (!mine.length || !this.visible) return;
    if (this.fetchController || !this.plotted) {
      this.pending.push([runId, keys]);
      if (!this.fetchController && !this.plotted) this.scheduleFetch(0);
      return;
    }
    const window = this.stepWindow(runId);
    let refetch = false;
    for (const spec of mine) {
      const entry = keys[spec.key];
      if (!entry.steps) {
        // A large batch travels as a step range only: fetch it if it is in view.
        if (this.inWindow(window, entry.first) || this.inWindow(window, entry.last)) refetch = true;
        continue;
      }
      refetch = this.appendLive(spec, entry, window) || refetch;
    }
    if (refetch) this.scheduleFetch(20);
    else this.requestFlush();
  }

  /** Append one key's live points; returns true when a re-fetch is needed instead. */
  appendLive(/* spec, entry, window */) {
    throw new Error("appendLive is abstract");
  }

  /** Draw the appended points soon: one redraw however many events arrived meanwhile. */
  requestFlush() {
    if ((!this.extensions.size && !this.decorationsStale) || !this.onScreen) return;
    queueFlush(this);
  }

  flushNow() {
    if (this.fetchController) return; // its render draws the points and the marks
    if (this.decorationsStale && this.plotted) {
      this.decorationsStale = false;
      this.redecorate();
    }
    if (!this.extensions.size) return;
    this.flush();
    this.extensions.clear();
    this.showNote(this.describeData());
  }

  // -- zoom ------------------------------------------------------------------------------

  attachPlotEvents() {
    this.plot.on("plotly_relayout", (event) => {
      if (this.applying) return;
      let lo = event["xaxis.range[0]"];
      let hi = event["xaxis.range[1]"];
      if (Array.isArray(event["xaxis.range"])) [lo, hi] = event["xaxis.range"];
      if (lo !== undefined && hi !== undefined) {
        this.xRange = [Number(lo), Number(hi)];
        this.scheduleFetch(ZOOM_DEBOUNCE_MS);
        this.options.onZoom?.(this, this.xRange);
      } else if (event["xaxis.autorange"]) {
        this.xRange = null;
        this.scheduleFetch(ZOOM_DEBOUNCE_MS);
        this.options.onZoom?.(this, null);
      }
    });
  }

  /** Show an x range (or everything, for null) and fetch it at full resolution. */
  setXRange(xRange) {
    this.xRange = xRange ? [...xRange] : null;
    if (this.plotted) {
      const update = xRange
        ? { "xaxis.range": [...xRange], "xaxis.autorange": false }
        : { "xaxis.autorange": true };
      this.ownLayout(() => window.Plotly.relayout(this.plot, update));
    }
    this.scheduleFetch(0);
  }

  /** Zoom to a run's step range, e.g. a finding's first..last step, with some context. */
  zoomToSteps(runId, first, last) {
    const pad = Math.max(5, Math.round((last - first) * 0.5));
    const lo = Math.max(0, first - pad);
    const hi = last + pad;
    const xs = [lo, hi].map((step) => this.xOf(runId, step, this.timeNear(runId, step)));
    this.setXRange(xs);
  }

  timeNear(runId, step) {
    return this.heldData(runId)?.timeAt(step) ?? runOrigin(this.run(runId));
  }

  // -- decorations -----------------------------------------------------------------------

  setFindings(findings) {
    this.findings = findings;
    // A firing episode is updated on every step it lasts; only a change in what is drawn
    // is worth a relayout, and relayout is the costly part of a live page: a dozen charts
    // relayouting together held the main thread for most of a second under load, and the
    // loss chart's next point waited behind them. A marker sits at the first step, so a
    // later last step redraws only the selected finding's band. The relayout goes
    // through the page's redraw queue: the first chart at once, the others paced and
    // spread over frames like their points.
    const signature = this.findings
      .map((f) => `${f.id}:${f.first_step}:${f.id === this.selectedFinding ? f.last_step : ""}:${f.severity}:${f.state}`)
      .join("|");
    if (signature === this.findingsSignature) return;
    this.findingsSignature = signature;
    if (!this.plotted) return; // the first render draws them
    this.decorationsStale = true;
    if (this.onScreen) queueFlush(this);
  }

  /** Shade one finding's steps (null: none); every finding keeps its axis marker. */
  setSelectedFinding(id) {
    if (id === this.selectedFinding) return;
    this.selectedFinding = id;
    if (this.plotted) this.redecorate();
  }

  /** Findings as markers on the x axis, the selected one as a band over its steps. */
  findingShapes() {
    const mine = this.findings.filter((finding) => this.specs.some((spec) => spec.runId === finding.run_id));
    this.legend.hidden = !mine.some((finding) => finding.first_step !== null && finding.first_step !== undefined);
    return findingMarks(mine, (runId, step) => this.xOf(runId, step, this.timeNear(runId, step)), this.selectedFinding);
  }

  redecorate() {
    this.decorationsStale = false;
    const { shapes, annotations } = this.decorations();
    this.ownLayout(() => window.Plotly.relayout(this.plot, { shapes, annotations }));
  }

  /** Run a Plotly call whose relayout events must not be taken for the user's zoom. */
  ownLayout(call) {
    this.applying += 1;
    return Promise.resolve().then(call).finally(() => { this.applying -= 1; });
  }

  decorations() {
    return this.findingShapes();
  }

  baseLayout() {
    this.decorationsStale = false; // this layout holds the latest marks
    const { shapes, annotations } = this.decorations();
    const xaxis = { title: { text: this.axis.title() }, zeroline: false, automargin: true };
    if (this.xRange) Object.assign(xaxis, { range: [...this.xRange], autorange: false });
    else xaxis.autorange = true;
    return {
      margin: { l: 60, r: 20, t: 24, b: 40 },
      height: this.options.height ?? 260,
      xaxis,
      shapes,
      annotations,
      showlegend: true,
      legend: { orientation: "h", x: 0, y: 1.0, yanchor: "bottom", font: { size: 11 } },
      font: { family: "system-ui, sans-serif", size: 12 },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "#fff",
    };
  }

  /** Plotly.react, then the bookkeeping every render needs. */
  draw(traces, layout) {
    return loadPlotly().then((Plotly) => this.ownLayout(
      () => Plotly.react(this.plot, traces, layout, PLOTLY_CONFIG),
    )).then(() => {
      if (!this.plotted) {
        this.plotted = true;
        this.attachPlotEvents();
      }
      this.plot.dataset.renders = String(Number(this.plot.dataset.renders ?? 0) + 1);
      this.showNote(this.describeData());
      if (this.fetchedPoints && !this.firstDataDrawn) {
        // Read by the browser tests and the benchmark: time to first data on screen.
        this.firstDataDrawn = true;
        performance.mark(`trainlens:first-data:${this.id}`);
      }
    }).catch((error) => {
      this.showNote(`Could not draw: ${error.message}`, true);
    });
  }
}

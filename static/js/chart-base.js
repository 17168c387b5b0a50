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
import { el, formatCount } from "./format.js";
import { X_MODES, runOrigin, timeUnitFor } from "./series.js";


// M4 keeps 4 points per bucket; 2 points per pixel is a bucket every 2 pixels, which
// draws the same picture as the full series while keeping every minimum and maximum.
const POINTS_PER_PIXEL = 2;
const LIVE_BUDGET = 2;
const FETCH_MARGIN = 0.05; // fetch a little beyond the visible range so a small pan shows data at once
const ZOOM_DEBOUNCE_MS = 120;

export const SEVERITY_COLORS = { critical: "#c62828", warning: "#e08a00", info: "#2f6fd6" };
export const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

/** A shaded band over x0..x1 (full height), drawn below the data so it never covers a
 *  spike; a single step becomes a line, since a zero-width band would not show at all. */
export function band(name, x0, x1, color, opacity) {
  if (x1 === x0) {
    return { type: "line", name, xref: "x", yref: "paper", x0, x1, y0: 0, y1: 1,
      line: { color, width: 3 }, opacity: Math.min(1, opacity * 3), layer: "below" };
  }
  return { type: "rect", name, xref: "x", yref: "paper", x0, x1, y0: 0, y1: 1,
    fillcolor: color, opacity, line: { color, width: 1 }, layer: "below" };
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
    this.runs = options.runs;
    this.xMode = options.xMode ?? "step";
    this.xRange = null; // the user's zoom, in x units; null: everything, following live points
    this.specs = [];
    this.data = new Map(); // spec id → SeriesData
    this.findings = [];
    this.pending = []; // live batches that arrived while a fetch was in flight
    this.extensions = new Map(); // spec id → index of its first point not yet drawn
    this.fetchController = null;
    this.fetchTimer = null;
    this.flushRequested = false;
    this.fetchCount = 0;
    this.fetchedPoints = 0;
    this.timeUnit = timeUnitFor(0);
    this.visible = false;
    this.plotted = false;
    this.applyingLayout = false;
    this.buildDom(host);
  }

  // -- DOM -------------------------------------------------------------------------------

  buildDom(host) {
    const titleId = `chart-${this.id}-title`;
    this.plot = el("div", { className: "plot" });
    this.note = el("p", { className: "chart-note", "aria-live": "polite" });
    this.xSelect = el("select", { onchange: () => this.setXMode(this.xSelect.value) },
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
      href: apiUrl(`/runs/${runId}/metrics.csv`, { keys: keys.join(",") }, { withToken: true }),
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
        specs.push({ kind: "line", yaxis: "y", ...spec, runId, id: `${runId}|${spec.key}` });
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

  run(runId) {
    return this.runs.get(runId) ?? {};
  }

  tokensAvailable() {
    return [...this.runs.values()].every((run) => run.tokens_per_step);
  }

  xOf(runId, step, time) {
    if (this.xMode === "tokens") return step * (this.run(runId).tokens_per_step || 1);
    if (this.xMode === "time") return (time - runOrigin(this.run(runId))) / this.timeUnit.seconds;
    return step;
  }

  xTitle() {
    if (this.xMode === "time") return `wall time (${this.timeUnit.label} since start)`;
    return X_MODES[this.xMode];
  }

  /** Pick the wall-time unit from the data held, so the axis reads in s, min or h. */
  chooseTimeUnit() {
    let span = 0;
    for (const spec of this.specs) {
      const data = this.data.get(spec.id);
      if (data?.length) span = Math.max(span, data.times[data.length - 1] - runOrigin(this.run(spec.runId)));
    }
    this.timeUnit = timeUnitFor(span);
  }

  /** A run's steps at an x position (inverse of xOf); undefined past the data held. */
  stepOfX(runId, x) {
    if (this.xMode === "tokens") return x / (this.run(runId).tokens_per_step || 1);
    if (this.xMode === "time") {
      const time = x * this.timeUnit.seconds + runOrigin(this.run(runId));
      for (const spec of this.specs) {
        const data = this.data.get(spec.id);
        if (spec.runId === runId && data?.length) return data.stepAtTime(time);
      }
      return undefined;
    }
    return x;
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
    if (mode === "tokens" && !this.tokensAvailable()) {
      this.xSelect.value = this.xMode;
      this.showNote("Tokens seen needs tokens per step, which this run does not report.");
      return;
    }
    this.xMode = mode;
    this.xSelect.value = mode;
    this.xRange = null;
    this.render();
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
    const range = this.xRange ? "in view" : "";
    return downsampled
      ? `${formatCount(held)} of ${formatCount(total)} points ${range} (extremes kept at every zoom)`
      : `${formatCount(held)} points ${range} at full resolution`;
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

  requestFlush() {
    if (this.flushRequested || !this.extensions.size || !this.onScreen) return;
    this.flushRequested = true;
    // One redraw per frame however many events arrived; a hidden tab draws on return.
    requestAnimationFrame(() => {
      this.flushRequested = false;
      if (this.fetchController || !this.extensions.size) return;
      this.flush();
      this.extensions.clear();
      this.showNote(this.describeData());
    });
  }

  // -- zoom ------------------------------------------------------------------------------

  attachPlotEvents() {
    this.plot.on("plotly_relayout", (event) => {
      if (this.applyingLayout) return;
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
      this.applyingLayout = true;
      const update = xRange
        ? { "xaxis.range": [...xRange], "xaxis.autorange": false }
        : { "xaxis.autorange": true };
      window.Plotly.relayout(this.plot, update).finally(() => { this.applyingLayout = false; });
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
    for (const spec of this.specs) {
      const data = this.data.get(spec.id);
      if (spec.runId === runId && data?.length) {
        const time = data.timeAt(step);
        if (time !== undefined) return time;
      }
    }
    return runOrigin(this.run(runId));
  }

  // -- decorations -----------------------------------------------------------------------

  setFindings(findings) {
    this.findings = findings;
    if (this.plotted) this.redecorate();
  }

  /** Findings as shaded bands over their steps, coloured by severity. */
  findingShapes() {
    const shapes = [];
    const annotations = [];
    for (const finding of this.findings) {
      if (finding.first_step === null || finding.first_step === undefined) continue;
      if (!this.runs.has(finding.run_id) || !this.specs.some((s) => s.runId === finding.run_id)) continue;
      const last = finding.last_step ?? finding.first_step;
      const x0 = this.xOf(finding.run_id, finding.first_step, this.timeNear(finding.run_id, finding.first_step));
      const x1 = this.xOf(finding.run_id, last, this.timeNear(finding.run_id, last));
      const color = SEVERITY_COLORS[finding.severity] ?? SEVERITY_COLORS.info;
      shapes.push(band(`finding-${finding.id}`, x0, x1, color, 0.14));
      annotations.push({
        name: `finding-${finding.id}`, x: x0, xref: "x", y: 1, yref: "paper", yanchor: "bottom",
        text: "▼", showarrow: false, font: { color, size: 11 },
        hovertext: `${finding.severity}: ${finding.title} (steps ${finding.first_step}–${last})`,
      });
    }
    return { shapes, annotations };
  }

  redecorate() {
    const { shapes, annotations } = this.decorations();
    this.applyingLayout = true;
    window.Plotly.relayout(this.plot, { shapes, annotations }).finally(() => { this.applyingLayout = false; });
  }

  decorations() {
    return this.findingShapes();
  }

  baseLayout() {
    const { shapes, annotations } = this.decorations();
    const xaxis = { title: { text: this.xTitle() }, zeroline: false, automargin: true };
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
    return loadPlotly().then((Plotly) => {
      this.applyingLayout = true;
      return Plotly.react(this.plot, traces, layout, PLOTLY_CONFIG);
    }).then(() => {
      this.applyingLayout = false;
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
      this.applyingLayout = false;
      this.showNote(`Could not draw: ${error.message}`, true);
    });
  }
}

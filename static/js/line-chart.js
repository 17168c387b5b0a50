// line-chart.js — a line chart of one or more series (one run's keys, or one key across
// runs on the compare page), with log y, bias-corrected EMA smoothing that keeps the raw
// line faint behind it, reference lines (ln(vocab), clip threshold, 1e-3 guide), marked
// steps (clipped gradients), event lines (resumes) and non-finite stretches.
//
// Series kinds: "line" (drawn), "flags" (0/1 series drawn as markers on another line),
// "events" (0/1 series drawn as vertical lines).

import { ChartBase } from "./chart-base.js";
import { PALETTE, band } from "./marks.js";
import { decodeValue, el } from "./format.js";
import {
  SeriesData, breakAtGaps, ema, finiteOrNull, flatRange, nonFiniteStretches, stoppedSeconds, timeGapIndices,
} from "./series.js";

const NONFINITE_COLOR = "#b71c1c";

export class LineChart extends ChartBase {
  extraTools() {
    this.logY = this.options.logY ?? false;
    this.smoothing = this.options.smoothing ?? 0;
    this.traceIndex = new Map();
    this.emaState = new Map();
    this.logBox = el("input", { type: "checkbox", checked: this.logY,
      onchange: () => this.setLogY(this.logBox.checked) });
    this.smoothRange = el("input", { type: "range", min: 0, max: 0.99, step: 0.01,
      value: this.smoothing, "aria-label": `${this.options.title} smoothing`,
      oninput: () => this.setSmoothing(Number(this.smoothRange.value)) });
    this.smoothOut = el("output", {}, this.smoothing.toFixed(2));
    return [
      el("label", { title: "Logarithmic y axis" }, this.logBox, " log y"),
      el("label", { title: "Exponential moving average (bias-corrected); the raw line stays behind it" },
        "EMA ", this.smoothRange, this.smoothOut),
    ];
  }

  setLogY(logY) {
    this.logY = logY;
    this.logBox.checked = logY;
    if (this.plotted) this.render();
  }

  setSmoothing(weight) {
    this.smoothing = weight;
    this.smoothOut.textContent = weight.toFixed(2);
    if (this.smoothTimer) return;
    // Dragging the slider fires many events; redraw at most once per frame.
    this.smoothTimer = requestAnimationFrame(() => {
      this.smoothTimer = null;
      if (this.plotted) this.render();
    });
  }

  acceptFetched(seriesByRun) {
    for (const spec of this.specs) {
      this.data.set(spec.id, SeriesData.fromApi(seriesByRun.get(spec.runId)?.[spec.key]));
    }
  }

  specById(id) {
    return this.specs.find((spec) => spec.id === id);
  }

  xs(spec, data, start = 0) {
    const out = new Array(data.length - start);
    for (let i = start; i < data.length; i++) out[i - start] = this.xOf(spec.runId, data.steps[i], data.times[i]);
    return out;
  }

  /** Marked steps of a flags series, placed on the line they annotate. */
  flagPoints(spec, data, start = 0) {
    const target = this.data.get(`${spec.runId}|${spec.on}`);
    const fallback = spec.fallbackY?.(this.run(spec.runId));
    const x = [];
    const y = [];
    for (let i = start; i < data.length; i++) {
      if (!(data.values[i] >= 0.5)) continue;
      const onLine = target?.valueAt(data.steps[i]);
      const value = Number.isFinite(onLine) ? onLine : fallback;
      if (value === undefined || value === null) continue;
      x.push(this.xOf(spec.runId, data.steps[i], data.times[i]));
      y.push(value);
    }
    return { x, y };
  }

  render() {
    if (!this.visible) return Promise.resolve();
    if (this.xMode === "time") this.chooseTimeUnit();
    const traces = [];
    this.traceIndex.clear();
    this.emaState.clear();
    let colorIndex = 0;
    for (const spec of this.specs) {
      const data = this.data.get(spec.id) ?? new SeriesData();
      if (spec.kind === "line") {
        const color = spec.color ?? PALETTE[colorIndex++ % PALETTE.length];
        spec.drawnColor = color;
        const smoothed = ema(data.values, this.smoothing);
        this.emaState.set(spec.id, smoothed.state);
        // On a wall-time axis a stop shows as a gap, not a line across it.
        const gaps = this.xMode === "time" ? timeGapIndices(data.times) : [];
        const [x, rawY, emaY] = breakAtGaps(gaps, this.xs(spec, data), finiteOrNull(data.values), smoothed.values);
        const sparse = spec.markers || data.length < 40;
        const smoothing = this.smoothing > 0;
        this.traceIndex.set(spec.id, { raw: traces.length, ema: traces.length + 1 });
        traces.push({
          type: "scatter", mode: sparse ? "lines+markers" : "lines", name: spec.label ?? spec.key,
          x, y: rawY, yaxis: spec.yaxis, legendgroup: spec.id,
          line: { color, width: smoothing ? 1 : 1.6, dash: spec.dash }, marker: { size: 4, color },
          opacity: smoothing ? 0.28 : 1, connectgaps: false,
          meta: { key: spec.key, runId: spec.runId, role: "raw" },
          hovertemplate: "%{y:.5g}",
        });
        traces.push({
          type: "scatter", mode: "lines", name: `${spec.label ?? spec.key} (EMA)`, x, y: emaY,
          yaxis: spec.yaxis, legendgroup: spec.id, showlegend: false, visible: smoothing,
          line: { color, width: 2, dash: spec.dash }, hoverinfo: smoothing ? undefined : "skip",
          meta: { key: spec.key, runId: spec.runId, role: "ema" },
          hovertemplate: "%{y:.5g} (EMA)",
        });
      } else if (spec.kind === "flags") {
        const { x, y } = this.flagPoints(spec, data);
        this.traceIndex.set(spec.id, { markers: traces.length });
        traces.push({
          type: "scatter", mode: "markers", name: spec.label, x, y, yaxis: spec.yaxis ?? "y",
          marker: { symbol: spec.symbol ?? "x-thin-open", size: 7, color: spec.color ?? NONFINITE_COLOR,
            line: { width: 1.5, color: spec.color ?? NONFINITE_COLOR } },
          meta: { key: spec.key, runId: spec.runId, role: "flags" },
          hovertemplate: `${spec.label}<extra></extra>`,
        });
      }
    }
    const layout = this.baseLayout();
    const yType = this.logY ? "log" : "linear";
    layout.hovermode = "x unified";
    layout.yaxis = { title: { text: this.options.yTitle ?? "" }, type: yType, automargin: true,
      exponentformat: "e", zeroline: false, tickformat: this.options.yFormat, ...this.yRange("y") };
    if (this.specs.some((spec) => spec.yaxis === "y2")) {
      // tickmode "auto": plotly.js 4 syncs an overlaying axis's ticks to the left axis's
      // grid by default, which labels memory 0.0878, 0.1297, … instead of round numbers.
      layout.yaxis2 = { title: { text: this.options.y2Title ?? "" }, type: yType, overlaying: "y",
        side: "right", automargin: true, showgrid: false, zeroline: false, tickmode: "auto",
        ...this.yRange("y2") };
    }
    this.pinnedRanges = { y: layout.yaxis.range ?? null, y2: layout.yaxis2?.range ?? null };
    return this.draw(traces, layout);
  }

  /** A flat series is drawn in a fixed range around its value (yRange). Live points that
   *  leave that value hand the axis back to Plotly's autorange, or they would be drawn
   *  off the chart (a warmup's rising LR above a range pinned around its first step).
   *  A range the user has zoomed to since is theirs: it is left alone. */
  releaseFlatRanges() {
    const update = {};
    for (const [axis, pinned] of Object.entries(this.pinnedRanges ?? {})) {
      if (!pinned) continue;
      const name = axis === "y" ? "yaxis" : "yaxis2";
      const shown = this.plot.layout?.[name]?.range;
      const range = this.yRange(axis).range ?? null;
      if (range && range[0] === pinned[0] && range[1] === pinned[1]) continue;
      this.pinnedRanges[axis] = range;
      if (!shown || shown[0] !== pinned[0] || shown[1] !== pinned[1]) continue;
      if (range) update[`${name}.range`] = range;
      else update[`${name}.autorange`] = true;
    }
    if (Object.keys(update).length) this.ownLayout(() => window.Plotly.relayout(this.plot, update));
  }

  /** Axis settings from the data: a range around a constant series, and on a log axis
   *  one labelled tick per decade (Plotly's default labels 2 and 5 between decades too,
   *  which reads as "2, 1, 5, 2, 0.1"). */
  yRange(axis) {
    const values = [];
    for (const spec of this.specs) {
      if (spec.kind !== "line" || (spec.yaxis ?? "y") !== axis) continue;
      const data = this.data.get(spec.id);
      if (data) for (const value of data.values) values.push(value);
    }
    const settings = {};
    const range = flatRange(values, this.logY);
    if (range) Object.assign(settings, { range, autorange: false });
    if (this.logY) {
      const positive = values.filter((value) => Number.isFinite(value) && value > 0);
      const decades = positive.length ? Math.log10(Math.max(...positive) / Math.min(...positive)) : 0;
      // Within one decade Plotly's own ticks are plain numbers; give them two digits.
      Object.assign(settings, decades >= 1 ? { dtick: 1, exponentformat: "power" } : { tickformat: ".2~e" });
    }
    return settings;
  }

  /** Seconds a run spent stopped, read from the gaps in its first line's wall times. */
  stoppedSeconds(runId) {
    const spec = this.specs.find((candidate) => candidate.runId === runId && candidate.kind === "line");
    const data = spec && this.data.get(spec.id);
    return data ? stoppedSeconds(data.times) : 0;
  }

  appendLive(spec, entry, window) {
    const data = this.data.get(spec.id);
    if (!data) return true;
    let { steps, values, times } = entry;
    values = values.map(decodeValue);
    if (this.xRange) {
      const keep = steps.map((step) => this.inWindow(window, step));
      steps = steps.filter((_, i) => keep[i]);
      values = values.filter((_, i) => keep[i]);
      times = times.filter((_, i) => keep[i]);
    }
    const before = data.length;
    const { added, rewritten } = data.append(steps, values, times);
    if (rewritten) return true;
    if (added) {
      if (!this.extensions.has(spec.id)) this.extensions.set(spec.id, before);
      const fresh = data.values.slice(before);
      if (spec.kind === "events" || fresh.some((value) => !Number.isFinite(value))) this.redecorateOnFlush = true;
    }
    return data.length > this.budget();
  }

  flush() {
    const x = [];
    const y = [];
    const indices = [];
    for (const [id, start] of this.extensions) {
      const spec = this.specById(id);
      const slot = this.traceIndex.get(id);
      const data = this.data.get(id);
      if (!spec || !slot || !data) continue;
      if (spec.kind === "line") {
        const xs = this.xs(spec, data, start);
        const values = data.values.slice(start);
        const smoothed = ema(values, this.smoothing, this.emaState.get(id));
        this.emaState.set(id, smoothed.state);
        indices.push(slot.raw, slot.ema);
        x.push(xs, xs);
        y.push(finiteOrNull(values), smoothed.values);
      } else if (spec.kind === "flags") {
        const points = this.flagPoints(spec, data, start);
        if (!points.x.length) continue;
        indices.push(slot.markers);
        x.push(points.x);
        y.push(points.y);
      }
    }
    // Plotly.extendTraces appends to the existing traces instead of rebuilding them.
    if (indices.length) {
      window.Plotly.extendTraces(this.plot, { x, y }, indices);
      this.releaseFlatRanges();
    }
    if (this.redecorateOnFlush) {
      this.redecorateOnFlush = false;
      this.redecorate();
    }
  }

  decorations() {
    const { shapes, annotations } = this.findingShapes();
    for (const guide of this.options.guides?.(this) ?? []) {
      if (guide.y === undefined || guide.y === null || !Number.isFinite(guide.y)) continue;
      const yref = guide.yaxis ?? "y";
      shapes.push({
        type: "line", name: guide.name, xref: "paper", x0: 0, x1: 1, yref, y0: guide.y, y1: guide.y,
        line: { color: guide.color ?? "#555", width: 1.2, dash: "dash" }, layer: "above",
      });
      annotations.push({
        name: guide.name, xref: "paper", x: 1, xanchor: "right", yref,
        y: this.logY ? Math.log10(guide.y) : guide.y, yanchor: "bottom",
        text: guide.label, showarrow: false, font: { size: 10, color: guide.color ?? "#555" },
      });
    }
    // Every layer of a per-layer chart turns NaN at the same step: one band and one label
    // for them all, not five stacked labels in a red smear.
    const stretches = new Map();
    for (const spec of this.specs) {
      const data = this.data.get(spec.id);
      if (!data?.length) continue;
      if (spec.kind === "line") {
        for (const stretch of nonFiniteStretches(data)) {
          const x0 = this.xOf(spec.runId, stretch.first, data.timeAt(stretch.first));
          const x1 = this.xOf(spec.runId, stretch.last, data.timeAt(stretch.last));
          const where = `${x0}|${x1}|${stretch.kind}`;
          if (!stretches.has(where)) stretches.set(where, { id: `${spec.id}-${stretch.first}`, x0, x1, kind: stretch.kind, labels: [] });
          stretches.get(where).labels.push(spec.label ?? spec.key);
        }
      } else if (spec.kind === "events") {
        for (let i = 0; i < data.length; i++) {
          if (!(data.values[i] >= 0.5)) continue;
          const x = this.xOf(spec.runId, data.steps[i], data.times[i]);
          shapes.push({ type: "line", name: `event-${spec.key}-${data.steps[i]}`, xref: "x", yref: "paper",
            x0: x, x1: x, y0: 0, y1: 1, line: { color: "#444", width: 1, dash: "dot" } });
          annotations.push({ x, xref: "x", y: 0, yref: "paper", yanchor: "bottom", xanchor: "left",
            text: spec.label, showarrow: false, font: { size: 10, color: "#444" } });
        }
      }
    }
    for (const { id, x0, x1, kind, labels } of stretches.values()) {
      shapes.push(band(`nonfinite-${id}`, x0, x1, NONFINITE_COLOR, 0.18));
      annotations.push({
        x: x0, xref: "x", y: 0.96, yref: "paper", xanchor: "left", showarrow: false,
        text: `${labels.length > 2 ? `${labels.length} series` : labels.join(", ")}: ${kind}`,
        hovertext: labels.length > 2 ? labels.join(", ") : undefined,
        font: { size: 10, color: NONFINITE_COLOR },
      });
    }
    return { shapes, annotations };
  }
}

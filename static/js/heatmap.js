// heatmap.js — activation statistics as a layer × step heatmap (one row per layer).
//
// When every layer's series holds the same steps at full resolution, each column is one
// logged step and live steps are appended as new columns (Plotly.extendTraces on a
// transposed z). When the server has downsampled (a long run), the layers' kept steps
// differ, so the columns become step buckets showing each bucket's largest value: a
// bucket with one saturated step still lights up.

import { ChartBase } from "./chart-base.js";
import { decodeValue, el } from "./format.js";
import { SeriesData } from "./series.js";

const PIXELS_PER_BUCKET = 3;

export class HeatmapChart extends ChartBase {
  extraTools() {
    this.logColor = this.options.logColor ?? false;
    this.logBox = el("input", { type: "checkbox", checked: this.logColor,
      onchange: () => { this.logColor = this.logBox.checked; if (this.plotted) this.render(); } });
    return [el("label", { title: "Colour by log10 of the value" }, this.logBox, " log colour")];
  }

  acceptFetched(seriesByRun) {
    for (const spec of this.specs) {
      this.data.set(spec.id, SeriesData.fromApi(seriesByRun.get(spec.runId)?.[spec.key]));
    }
  }

  rows() {
    return this.specs.map((spec) => ({ spec, data: this.data.get(spec.id) ?? new SeriesData() }));
  }

  /** True when all layers hold exactly the same steps, none downsampled. */
  aligned(rows) {
    const first = rows[0]?.data;
    if (!first) return false;
    return rows.every(({ data }) => !data.downsampled && data.length === first.length
      && data.steps.every((step, i) => step === first.steps[i]));
  }

  cellValue(value) {
    if (!Number.isFinite(value)) return null;
    if (!this.logColor) return value;
    return value > 0 ? Math.log10(value) : null;
  }

  exactColumns(rows, start = 0) {
    const first = rows[0].data;
    const runId = rows[0].spec.runId;
    const x = [];
    const z = [];
    for (let j = start; j < first.length; j++) {
      x.push(this.xOf(runId, first.steps[j], first.times[j]));
      z.push(rows.map(({ data }) => this.cellValue(data.values[j])));
    }
    return { x, z };
  }

  bucketColumns(rows) {
    const runId = rows[0].spec.runId;
    let lo = Infinity;
    let hi = -Infinity;
    for (const { data } of rows) {
      if (!data.length) continue;
      lo = Math.min(lo, data.steps[0]);
      hi = Math.max(hi, data.lastStep);
    }
    if (!Number.isFinite(lo)) return { x: [], z: [] };
    const buckets = Math.max(1, Math.min(Math.floor(this.plotWidth() / PIXELS_PER_BUCKET), hi - lo + 1));
    const width = (hi - lo + 1) / buckets;
    const z = Array.from({ length: buckets }, () => new Array(rows.length).fill(null));
    rows.forEach(({ data }, r) => {
      for (let i = 0; i < data.length; i++) {
        const value = this.cellValue(data.values[i]);
        if (value === null) continue;
        const b = Math.min(buckets - 1, Math.floor((data.steps[i] - lo) / width));
        if (z[b][r] === null || value > z[b][r]) z[b][r] = value;
      }
    });
    const x = z.map((_, b) => {
      const step = Math.round(lo + (b + 0.5) * width);
      return this.xOf(runId, step, this.timeNear(runId, step));
    });
    return { x, z };
  }

  render() {
    if (!this.visible) return Promise.resolve();
    if (this.xMode === "time") this.chooseTimeUnit();
    const rows = this.rows();
    this.exact = this.aligned(rows);
    const { x, z } = rows.length
      ? this.exact ? this.exactColumns(rows) : this.bucketColumns(rows)
      : { x: [], z: [] };
    const trace = {
      type: "heatmap", x, y: rows.map(({ spec }) => spec.label ?? spec.key), z, transpose: true,
      // A fraction's colours span its domain, 0 to 1, whatever the data holds.
      colorscale: this.options.colorscale ?? "Viridis", reversescale: this.options.reversescale ?? false,
      zmin: this.logColor ? undefined : this.options.zmin, zmax: this.logColor ? undefined : this.options.zmax,
      colorbar: { title: { text: this.logColor ? "log10" : "", side: "right" }, thickness: 12 },
      hovertemplate: `%{y}<br>${this.exact ? "step" : "bucket max near"} %{x}<br>%{z:.4g}<extra></extra>`,
      meta: { keys: rows.map(({ spec }) => spec.key), exact: this.exact },
    };
    const layout = this.baseLayout();
    this.singleColumn = x.length === 1;
    if (this.singleColumn) {
      // One step: a narrow column labelled with its step, not a cell stretched over
      // −0.5…0.5 of the axis.
      Object.assign(layout.xaxis, { range: [x[0] - 10, x[0] + 10], autorange: false, tickvals: [x[0]] });
      trace.xgap = 0;
      trace.x = [x[0]];
    }
    layout.showlegend = false;
    layout.height = this.options.height ?? Math.max(180, 60 + rows.length * 22);
    layout.yaxis = { type: "category", autorange: "reversed", automargin: true };
    return this.draw([trace], layout);
  }

  appendLive(spec, entry, window) {
    const data = this.data.get(spec.id);
    if (!data) return true;
    const keep = entry.steps.map((step) => !this.xRange || this.inWindow(window, step));
    const before = data.length;
    const { rewritten } = data.append(
      entry.steps.filter((_, i) => keep[i]),
      entry.values.filter((_, i) => keep[i]).map(decodeValue),
      entry.times.filter((_, i) => keep[i]),
    );
    if (rewritten) return true;
    if (data.length > before && !this.extensions.has(spec.id)) this.extensions.set(spec.id, before);
    return data.length > this.budget();
  }

  flush() {
    const rows = this.rows();
    const starts = [...this.extensions.values()];
    const start = Math.min(...starts);
    // One column was drawn in an axis pinned around its step: columns appended to it
    // would fall outside, so the second step rebuilds the grid with a free axis.
    if (this.exact && !this.singleColumn && starts.every((s) => s === start) && this.aligned(rows)) {
      const { x, z } = this.exactColumns(rows, start);
      if (x.length) window.Plotly.extendTraces(this.plot, { x: [x], z: [z] }, [0]);
    } else {
      this.render(); // layers out of step, or bucketed: rebuild the (small) grid
    }
  }
}

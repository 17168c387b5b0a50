// lr-finder.js — the run page's panel for an LR range test (the `lr_finder` preset):
// loss against learning rate on a log x axis, the suggested LR the trainer reported
// (`lr_finder/suggested_lr`), and a button that launches a training run with it.
//
// The trainer does the arithmetic (trainer/lr_finder.py); this module only plots it.

import { api } from "./api.js";
import { decodeValue, el, formatNumber } from "./format.js";
import { loadPlotly } from "./plotly.js";

const KEYS = ["train/lr", "train/loss", "lr_finder/smoothed_loss", "lr_finder/suggested_lr"];
// What a training run keeps from the sweep: the model, data and optimiser settings.
// Schedule and bookkeeping fall back to the TrainConfig defaults on the server.
const KEPT = ["n_layer", "n_head", "n_embd", "block_size", "dropout", "bias", "batch_size",
  "grad_accum_steps", "weight_decay", "beta1", "beta2", "grad_clip", "precision", "compile",
  "grad_checkpointing", "seed", "device", "nproc", "dataset", "tokenizer", "vocab_size", "val_fraction"];
const REFRESH_MS = 1000;

export class LrFinderPanel {
  constructor(before, run) {
    this.run = run;
    this.plot = el("div", { className: "plot", id: "lr-finder-plot", style: "height: 320px" });
    this.summary = el("p", { id: "lr-finder-summary", "aria-live": "polite" }, "Sweeping the learning rate…");
    this.button = el("button", { type: "button", id: "lr-finder-launch", className: "primary", hidden: true,
      onclick: () => this.launch() }, "Launch with this LR");
    this.section = el("section", { id: "lr-finder", className: "panel", "aria-labelledby": "lr-finder-title" },
      el("h2", { id: "lr-finder-title" }, "LR range test: loss against learning rate"),
      this.plot, el("div", { className: "form-buttons" }, this.summary, this.button));
    before.before(this.section);
    this.suggested = null;
    this.timer = null;
  }

  /** Throttled: the stream calls this on every batch of points. */
  refreshSoon() {
    this.timer ??= setTimeout(() => {
      this.timer = null;
      this.refresh();
    }, REFRESH_MS);
  }

  async refresh() {
    const data = await api(`/runs/${this.run.id}/metrics`, { params: { keys: KEYS.join(","), max_points: 5000 } });
    const series = (key) => data.series?.[key] ?? { steps: [], values: [] };
    const lrByStep = new Map(series("train/lr").steps.map((step, i) => [step, decodeValue(series("train/lr").values[i])]));
    const against = (key) => {
      const { steps, values } = series(key);
      const x = [];
      const y = [];
      steps.forEach((step, i) => {
        if (lrByStep.has(step)) { x.push(lrByStep.get(step)); y.push(decodeValue(values[i])); }
      });
      return { x, y };
    };
    const suggestions = series("lr_finder/suggested_lr").values;
    this.suggested = suggestions.length ? decodeValue(suggestions[suggestions.length - 1]) : null;
    const Plotly = await loadPlotly();
    const traces = [
      { ...against("train/loss"), name: "loss", mode: "lines", line: { color: "#c7c7c7", width: 1 } },
      { ...against("lr_finder/smoothed_loss"), name: "smoothed loss", mode: "lines", line: { color: "#1f77b4" } },
    ];
    const shapes = this.suggested === null ? [] : [{ type: "line", xref: "x", yref: "paper", x0: this.suggested,
      x1: this.suggested, y0: 0, y1: 1, line: { color: "#2ca02c", dash: "dash" } }];
    Plotly.react(this.plot, traces, {
      margin: { l: 50, r: 10, t: 10, b: 40 }, shapes,
      xaxis: { type: "log", title: { text: "learning rate" } }, yaxis: { title: { text: "loss" } },
    }, { displaylogo: false, responsive: true });
    if (this.suggested !== null) {
      this.summary.textContent = `Suggested learning rate: ${formatNumber(this.suggested, 3)} (a tenth of the LR at the smoothed loss's minimum).`;
      this.button.hidden = false;
    }
  }

  async launch() {
    const config = Object.fromEntries(KEPT.filter((key) => key in this.run.config).map((key) => [key, this.run.config[key]]));
    const lr = Number(this.suggested.toPrecision(3));
    Object.assign(config, { lr, min_lr: lr / 10 });
    this.button.disabled = true;
    try {
      const created = await api("/runs", { method: "POST", body: { name: `${this.run.name} lr ${lr}`, config } });
      location.assign(`/run.html?id=${created.id}`);
    } catch (error) {
      this.summary.textContent = `Could not launch: ${error.message}`;
      this.button.disabled = false;
    }
  }
}

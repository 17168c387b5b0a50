// run-charts.js — which charts the run page draws and which metric keys feed each one.
// A chart's `match(keys, run)` picks its series from the run's keys, so a run that logs
// fewer keys (an external script) gets fewer charts, and per-layer charts grow with the
// model. Keys no chart claims get a chart of their own under "Other metrics".

import { decodeValue } from "./format.js";

const has = (keys, key) => keys.has(key);

/** Layers in model order: embeddings, blocks h0..hN by number, then the final norm. */
export function layerOrder(name) {
  const block = /^h(\d+)/.exec(name);
  if (block) return 10 + Number(block[1]);
  return { wte: 0, wpe: 1, ln_f: 1e6 }[name] ?? 1e6 + 1;
}

function perLayer(keys, pattern, extra = {}) {
  const found = [];
  for (const key of keys) {
    const match = pattern.exec(key);
    if (match) found.push({ key, label: match[1], ...extra });
  }
  return found.sort((a, b) => layerOrder(a.label) - layerOrder(b.label) || a.label.localeCompare(b.label));
}

function onlyRun(chart) {
  return chart.runs.values().next().value ?? {};
}

/** The vocabulary size: an external run's config, else what the trainer logged. */
export function vocabSize(run) {
  const fromConfig = Number(run.config?.vocab_size);
  if (fromConfig > 0) return fromConfig;
  const logged = decodeValue(run.latest?.["data/vocab_size"]?.value);
  return logged > 0 ? logged : null;
}

export function clipThreshold(run) {
  const clip = Number(run.config?.grad_clip);
  return clip > 0 ? clip : null;
}

export const RUN_CHARTS = [
  {
    id: "loss", title: "Loss", yTitle: "loss",
    help: "Train loss every step, validation loss at each evaluation; the dashed line is ln(vocab), the loss of a uniform guess.",
    match: (keys) => [
      has(keys, "train/loss") && { key: "train/loss", label: "train", color: "#1f77b4" },
      has(keys, "val/loss") && { key: "val/loss", label: "val", color: "#ff7f0e", markers: true },
      has(keys, "train/loss_eval") && { key: "train/loss_eval", label: "train (eval mode)", color: "#2ca02c",
        dash: "dot", markers: true },
      has(keys, "train/skipped") && { key: "train/skipped", kind: "flags", on: "train/loss",
        label: "skipped update", color: "#b71c1c" },
      has(keys, "train/resumed") && { key: "train/resumed", kind: "events", label: "resumed" },
    ].filter(Boolean),
    guides: (chart) => {
      const vocab = vocabSize(onlyRun(chart));
      return vocab ? [{ name: "ln-vocab", y: Math.log(vocab), label: `ln(vocab) = ${Math.log(vocab).toFixed(2)}` }] : [];
    },
  },
  {
    id: "grad-norm", title: "Gradient norm (before clipping)", yTitle: "‖g‖",
    help: "The global gradient L2 norm before clipping; the dashed line is the clip threshold and × marks clipped steps.",
    match: (keys) => [
      has(keys, "train/grad_norm") && { key: "train/grad_norm", label: "pre-clip grad norm", color: "#9467bd" },
      has(keys, "train/grad_clipped") && { key: "train/grad_clipped", kind: "flags", on: "train/grad_norm",
        label: "clipped", color: "#c62828", fallbackY: clipThreshold },
    ].filter(Boolean),
    guides: (chart) => {
      const clip = clipThreshold(onlyRun(chart));
      return clip ? [{ name: "clip-threshold", y: clip, label: `clip threshold = ${clip}`, color: "#c62828" }] : [];
    },
  },
  {
    id: "lr", title: "Learning rate", yTitle: "lr",
    match: (keys) => [
      has(keys, "train/lr") && { key: "train/lr", label: "lr", color: "#2ca02c" },
      ...perLayer(keys, /^train\/lr\/(group\d+)$/),
    ].filter(Boolean),
  },
  // Two charts, not one with two y axes: each line readable on its own scale.
  {
    id: "throughput", title: "Throughput", yTitle: "tokens/s", yFormat: "~s",
    match: (keys) => [
      has(keys, "perf/tokens_per_sec") && { key: "perf/tokens_per_sec", label: "tokens/s", color: "#17becf" },
    ].filter(Boolean),
  },
  {
    id: "mfu", title: "MFU (estimate)", yTitle: "MFU", yFormat: ".1%",
    help: "Model FLOPs utilisation against the device's nominal peak; on a CPU the peak is a rough guess.",
    match: (keys) => [
      has(keys, "perf/mfu") && { key: "perf/mfu", label: "MFU (estimate)", color: "#8c564b" },
    ].filter(Boolean),
  },
  {
    id: "update-ratio", title: "Update-to-data ratio per layer", yTitle: "‖ΔW‖ / ‖W‖", logY: true,
    help: "How far each step moves each layer's weights, relative to their size; around 1e-3 is the usual healthy range.",
    match: (keys) => perLayer(keys, /^update\/(.+)\/ratio$/),
    guides: () => [{ name: "ratio-guide", y: 1e-3, label: "1e-3", color: "#444" }],
  },
  {
    id: "act-std", title: "Activation std (MLP pre-activation), layer × step", kind: "heatmap", wide: true,
    match: (keys) => perLayer(keys, /^act\/(h\d+)\.mlp\/std$/, { kind: "cell" }),
  },
  {
    id: "act-saturated", title: "Fraction saturated (MLP), layer × step", kind: "heatmap", wide: true,
    // Plotly's YlOrRd and Blues run dark-to-light; reversed, 0 is pale and 1 intense.
    colorscale: "YlOrRd", reversescale: true, zmin: 0, zmax: 1,
    match: (keys) => perLayer(keys, /^act\/(h\d+)\.mlp\/frac_saturated$/, { kind: "cell" }),
  },
  {
    id: "act-dead", title: "Fraction dead (MLP), layer × step", kind: "heatmap", wide: true,
    colorscale: "Blues", reversescale: true, zmin: 0, zmax: 1,
    match: (keys) => perLayer(keys, /^act\/(h\d+)\.mlp\/frac_dead$/, { kind: "cell" }),
  },
  {
    id: "grad-layers", title: "Gradient norm per layer", yTitle: "‖g‖", logY: true,
    match: (keys) => perLayer(keys, /^grad\/(.+)\/norm$/),
  },
  {
    id: "param-layers", title: "Parameter norm per layer", yTitle: "‖W‖",
    match: (keys) => perLayer(keys, /^param\/(.+)\/norm$/),
  },
  {
    id: "step-time", title: "Step time and memory", yTitle: "ms", y2Title: "GB",
    match: (keys) => [
      has(keys, "perf/step_ms") && { key: "perf/step_ms", label: "step ms", color: "#7f7f7f" },
      has(keys, "sys/mem_gb") && { key: "sys/mem_gb", label: "memory GB", color: "#bcbd22", yaxis: "y2" },
      // The launch form's estimate, logged by our trainer: measured against predicted.
      has(keys, "sys/mem_estimate_gb") && { key: "sys/mem_estimate_gb", label: "memory estimate GB",
        color: "#bcbd22", dash: "dot", yaxis: "y2" },
    ].filter(Boolean),
  },
];

// perf/peak_estimated is a marker, not a series: it says the MFU chart's peak was probed
// on a CPU (the MFU rule reads it), and charted alone it is a flat line at 1.
const CLAIMED_PATTERNS = [/^act\//, /^update\//, /^grad\//, /^param\//, /^data\//, /^train\/lr\/group\d+$/,
  /^perf\/peak_estimated$/];

/** Keys no standard chart draws (besides constants such as data/vocab_size). */
export function otherKeys(keys) {
  const claimed = new Set();
  for (const chart of RUN_CHARTS) for (const spec of chart.match(keys, {})) claimed.add(spec.key);
  return [...keys].filter((key) => !claimed.has(key) && !CLAIMED_PATTERNS.some((p) => p.test(key))).sort();
}

/** How the run page names a key's chart and series: "Loss · val", "Update-to-data ratio
 *  per layer · h0". The compare page titles its charts with it, so both pages read alike;
 *  the chart's own settings (log y, number format) come along. */
export function metricChart(key) {
  const keys = new Set([key]);
  for (const chart of RUN_CHARTS) {
    const spec = chart.match(keys, {}).find((candidate) => candidate.key === key);
    if (!spec || spec.kind === "flags" || spec.kind === "events") continue;
    const single = chart.kind !== "heatmap" && !/per layer/.test(chart.title) && chart.match(keys, {}).length === 1
      && !["loss"].includes(chart.id);
    return {
      title: single ? chart.title : `${chart.title.replace(/, layer × step$/, "")} · ${spec.label}`,
      yTitle: chart.yTitle ?? "", logY: chart.logY ?? false, yFormat: chart.yFormat,
    };
  }
  return { title: key, yTitle: "", logY: false };
}

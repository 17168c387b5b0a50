// series.js — a metric series as the browser holds it, and the per-point arithmetic
// of plotting it: decoding non-finite values, bias-corrected EMA, and the x axis
// (step, tokens seen, wall time). Plotting only: diagnostics are the server's job.

import { decodeValue } from "./format.js";

/** One series (one key of one run) over the window a chart has fetched. */
export class SeriesData {
  constructor(steps = [], values = [], times = [], downsampled = false, total = steps.length) {
    this.steps = steps;
    this.values = values; // numbers, NaN and ±Infinity included
    this.times = times;
    this.downsampled = downsampled;
    this.total = total; // points in the fetched range on the server
  }

  static fromApi(series) {
    if (!series) return new SeriesData();
    return new SeriesData(
      series.steps,
      series.values.map(decodeValue),
      series.times,
      series.downsampled,
      series.total_points,
    );
  }

  get length() {
    return this.steps.length;
  }

  get lastStep() {
    return this.steps.length ? this.steps[this.steps.length - 1] : -Infinity;
  }

  /** Index of the first step >= step. */
  lowerBound(step) {
    let lo = 0;
    let hi = this.steps.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.steps[mid] < step) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  valueAt(step) {
    const index = this.lowerBound(step);
    return this.steps[index] === step ? this.values[index] : undefined;
  }

  /** The wall time at (or just after) a step, for drawing step ranges on a time axis. */
  timeAt(step) {
    if (!this.steps.length) return undefined;
    const index = Math.min(this.lowerBound(step), this.steps.length - 1);
    return this.times[index];
  }

  /** The step at a wall time: the inverse of timeAt, for zooming on a time axis. */
  stepAtTime(time) {
    let lo = 0;
    let hi = this.times.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.times[mid] < time) lo = mid + 1;
      else hi = mid;
    }
    if (lo >= this.steps.length) return undefined;
    return this.steps[lo];
  }

  /**
   * Append live points (already decoded). Points at or before the last held step are
   * either repeats of what a fetch already returned (ignored) or rewrites of history
   * (a resumed run): those are reported so the caller can re-fetch.
   * @returns {{added: number, rewritten: boolean}}
   */
  append(steps, values, times) {
    let added = 0;
    let rewritten = false;
    for (let i = 0; i < steps.length; i++) {
      const step = steps[i];
      if (step > this.lastStep) {
        this.steps.push(step);
        this.values.push(values[i]);
        this.times.push(times[i]);
        this.total += 1;
        added += 1;
      } else if (!sameValue(this.valueAt(step), values[i])) {
        // Not held, or held with another value: the server's history changed under us.
        // (A step missing from a downsampled window is not a rewrite.)
        if (!this.downsampled || this.valueAt(step) !== undefined) rewritten = true;
      }
    }
    return { added, rewritten };
  }
}

function sameValue(a, b) {
  return a === b || (Number.isNaN(a) && Number.isNaN(b));
}

/**
 * Exponential moving average with bias correction (as TensorBoard and Adam do): early
 * points are not dragged towards zero. Non-finite points leave a gap and do not touch
 * the average. `state` carries the running average between calls, so live points
 * continue the curve without recomputing it.
 */
export function ema(values, weight, state = { last: 0, count: 0 }) {
  const out = new Array(values.length);
  let { last, count } = state;
  for (let i = 0; i < values.length; i++) {
    const value = values[i];
    if (!Number.isFinite(value)) {
      out[i] = null;
      continue;
    }
    last = last * weight + (1 - weight) * value;
    count += 1;
    out[i] = last / (1 - weight ** count);
  }
  return { values: out, state: { last, count } };
}

/** Plotly draws a gap for null; NaN and infinities are shown by markers elsewhere. */
export function finiteOrNull(values) {
  return values.map((value) => (Number.isFinite(value) ? value : null));
}

/** Stretches of consecutive non-finite points: [{first, last, kind}] in steps. */
export function nonFiniteStretches(data) {
  const stretches = [];
  let current = null;
  for (let i = 0; i < data.steps.length; i++) {
    const value = data.values[i];
    if (Number.isFinite(value)) {
      current = null;
      continue;
    }
    const kind = Number.isNaN(value) ? "NaN" : value > 0 ? "+Inf" : "−Inf";
    if (current && current.kind === kind) current.last = data.steps[i];
    else {
      current = { first: data.steps[i], last: data.steps[i], kind };
      stretches.push(current);
    }
  }
  return stretches;
}

export const X_MODES = {
  step: "step",
  tokens: "tokens seen",
  time: "wall time",
};

/** Seconds per unit for the wall-time axis, picked from how long the data spans. */
export function timeUnitFor(spanSeconds) {
  if (spanSeconds < 180) return { seconds: 1, label: "s" };
  if (spanSeconds < 3 * 3600) return { seconds: 60, label: "min" };
  if (spanSeconds < 3 * 86400) return { seconds: 3600, label: "h" };
  return { seconds: 86400, label: "days" };
}

/** When a run's wall-time axis starts: its first start, else its creation. */
export function runOrigin(run) {
  return run.started_at ?? run.created_at ?? 0;
}

// A pause between two logged steps longer than this many typical step intervals (and
// than a minute) is time the run spent stopped, not training.
const GAP_FACTOR = 20;
const GAP_MIN_SECONDS = 60;

/** Indices i where times[i] - times[i-1] is a stop, not a slow step. */
export function timeGapIndices(times) {
  if (times.length < 3) return [];
  const deltas = [];
  for (let i = 1; i < times.length; i++) deltas.push(times[i] - times[i - 1]);
  const sorted = [...deltas].sort((a, b) => a - b);
  const threshold = Math.max(GAP_MIN_SECONDS, GAP_FACTOR * sorted[sorted.length >> 1]);
  const gaps = [];
  for (let i = 1; i < times.length; i++) if (times[i] - times[i - 1] > threshold) gaps.push(i);
  return gaps;
}

/** Seconds spent stopped: the sum of the gaps. */
export function stoppedSeconds(times) {
  return timeGapIndices(times).reduce((sum, i) => sum + times[i] - times[i - 1], 0);
}

/** Insert a null point into each gap (x at its middle), so a line breaks there instead
 *  of drawing a straight segment across the stopped time. */
export function breakAtGaps(gaps, x, ...ys) {
  if (!gaps.length) return [x, ...ys];
  const outX = [];
  const outYs = ys.map(() => []);
  let next = 0;
  for (let i = 0; i < x.length; i++) {
    if (gaps[next] === i) {
      outX.push((x[i - 1] + x[i]) / 2);
      outYs.forEach((out) => out.push(null));
      next += 1;
    }
    outX.push(x[i]);
    outYs.forEach((out, k) => out.push(ys[k][i]));
  }
  return [outX, ...outYs];
}

/** A y range for a series that hardly varies: centred on its value instead of Plotly's
 *  −0.5…1.5 around a constant. Null when the data has a real spread. */
export function flatRange(values, log = false) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const value of values) {
    if (!Number.isFinite(value) || (log && value <= 0)) continue;
    if (value < lo) lo = value;
    if (value > hi) hi = value;
  }
  if (!Number.isFinite(lo)) return null;
  const scale = Math.max(Math.abs(lo), Math.abs(hi));
  if (hi - lo > 1e-6 * scale && hi > lo) return null;
  if (log) return [Math.log10(lo) - 0.5, Math.log10(hi) + 0.5];
  const pad = scale > 0 ? scale * 0.1 : 1;
  return [lo - pad, hi + pad];
}

// x-axis.js — where a point goes on a chart's x axis: by step, by tokens seen
// (step × the run's tokens per step) or by wall time since the run started, and back
// from an x position to a step (to know which steps a zoom shows).

import { X_MODES, runOrigin, timeUnitFor } from "./series.js";

export class XAxis {
  /** @param {Map<number, object>} runs the chart's runs (tokens_per_step, started_at) */
  constructor(runs, mode = "step") {
    this.runs = runs;
    this.mode = mode;
    this.unit = timeUnitFor(0); // for wall time: seconds, minutes, hours or days
  }

  run(runId) {
    return this.runs.get(runId) ?? {};
  }

  tokensAvailable() {
    return [...this.runs.values()].every((run) => run.tokens_per_step);
  }

  of(runId, step, time) {
    if (this.mode === "tokens") return step * (this.run(runId).tokens_per_step || 1);
    if (this.mode === "time") return (time - runOrigin(this.run(runId))) / this.unit.seconds;
    return step;
  }

  title() {
    if (this.mode === "time") return `wall time (${this.unit.label} since start)`;
    return X_MODES[this.mode];
  }

  /** Pick the wall-time unit from how long the data runs, so the axis reads naturally. */
  fitTimeUnit(series) {
    let span = 0;
    for (const { runId, data } of series) {
      if (data?.length) span = Math.max(span, data.times[data.length - 1] - runOrigin(this.run(runId)));
    }
    this.unit = timeUnitFor(span);
  }

  /** The step at an x position (inverse of `of`); on a time axis it is looked up in
   *  `data`, one of the run's series, and is undefined past its end. */
  stepAt(runId, x, data) {
    if (this.mode === "tokens") return x / (this.run(runId).tokens_per_step || 1);
    if (this.mode === "time") {
      return data?.length ? data.stepAtTime(x * this.unit.seconds + runOrigin(this.run(runId))) : undefined;
    }
    return x;
  }
}

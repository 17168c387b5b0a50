// marks.js — the colours and the shapes drawn over charts: finding bands with their ▼
// markers, and the band/line primitive that non-finite stretches use too. Shapes go
// below the data, so a marker never covers the spike it points at.

import { plotText } from "./format.js";

export const SEVERITY_COLORS = { critical: "#c62828", warning: "#e08a00", info: "#2f6fd6" };
export const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

/** A shaded band over x0..x1 (full height); a single step becomes a line, since a
 *  zero-width band would not show at all. */
export function band(name, x0, x1, color, opacity) {
  if (x1 === x0) {
    return { type: "line", name, xref: "x", yref: "paper", x0, x1, y0: 0, y1: 1,
      line: { color, width: 3 }, opacity: Math.min(1, opacity * 3), layer: "below" };
  }
  return { type: "rect", name, xref: "x", yref: "paper", x0, x1, y0: 0, y1: 1,
    fillcolor: color, opacity, line: { color, width: 1 }, layer: "below" };
}

/**
 * Findings as small ▲ markers on the x axis at their first step, coloured by severity and
 * named on hover; only the selected finding (`selectedId`) also shades its steps, so a
 * long-firing finding never tints the whole plot. `xOf(runId, step)` places a step.
 */
export function findingMarks(findings, xOf, selectedId = null) {
  const shapes = [];
  const annotations = [];
  for (const finding of findings) {
    if (finding.first_step === null || finding.first_step === undefined) continue;
    const last = finding.last_step ?? finding.first_step;
    const x0 = xOf(finding.run_id, finding.first_step);
    const color = SEVERITY_COLORS[finding.severity] ?? SEVERITY_COLORS.info;
    if (finding.id === selectedId) shapes.push(band(`finding-${finding.id}`, x0, xOf(finding.run_id, last), color, 0.14));
    annotations.push({
      name: `finding-${finding.id}`, x: x0, xref: "x", y: 0, yref: "paper", yanchor: "bottom",
      text: "▲", showarrow: false, font: { color, size: 10 },
      // A firing finding's last step moves with every step; the marker does not redraw
      // for it, so its hover text names only what stays true.
      hovertext: `${finding.severity}: ${plotText(finding.title)} (${finding.state === "firing"
        ? `firing since step ${finding.first_step}` : `steps ${finding.first_step}–${last}`})`,
    });
  }
  return { shapes, annotations };
}

/** What the markers mean, for the legend under a chart. */
export const MARK_LEGEND = Object.entries(SEVERITY_COLORS);

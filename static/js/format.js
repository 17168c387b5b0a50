// format.js — how numbers, times and statuses read on screen, shared by every page so a
// loss looks the same in the table, the header and a tooltip.

/** Decode a value as the API sends it: numbers, or "NaN" / "Infinity" / "-Infinity". */
export function decodeValue(value) {
  if (typeof value === "number") return value;
  if (value === "NaN") return NaN;
  if (value === "Infinity") return Infinity;
  if (value === "-Infinity") return -Infinity;
  return Number(value);
}

export function formatNumber(value, digits = 4) {
  if (value === null || value === undefined || value === "") return "—";
  const number = decodeValue(value);
  if (Number.isNaN(number)) return "NaN";
  if (!Number.isFinite(number)) return number > 0 ? "+Inf" : "−Inf";
  if (number === 0) return "0";
  const magnitude = Math.abs(number);
  if (magnitude >= 1e6 || magnitude < 1e-3) return number.toExponential(2);
  if (Number.isInteger(number)) return number.toLocaleString("en-US");
  return Number(number.toPrecision(digits)).toLocaleString("en-US", { maximumFractionDigits: 6 });
}

export function formatCount(value) {
  if (value === null || value === undefined) return "—";
  return Math.round(value).toLocaleString("en-US");
}

/** Compact rate: 12.3k, 4.5M. */
export function formatRate(value) {
  if (value === null || value === undefined) return "—";
  const number = decodeValue(value);
  if (!Number.isFinite(number)) return formatNumber(number);
  const units = [[1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [size, suffix] of units) {
    if (Math.abs(number) >= size) return `${(number / size).toFixed(1)}${suffix}`;
  }
  return number.toFixed(0);
}

export function formatPercent(value) {
  if (value === null || value === undefined) return "—";
  const number = decodeValue(value);
  return Number.isFinite(number) ? `${(number * 100).toFixed(1)}%` : formatNumber(number);
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const total = Math.max(0, Math.round(seconds));
  const days = Math.floor(total / 86400);
  const hours = Math.floor((total % 86400) / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = total % 60;
  if (days) return `${days}d ${hours}h`;
  if (hours) return `${hours}h ${String(minutes).padStart(2, "0")}m`;
  if (minutes) return `${minutes}m ${String(secs).padStart(2, "0")}s`;
  return `${secs}s`;
}

/** A run's duration: to its end, or to now while it is active. */
export function runDuration(run, now = Date.now() / 1000) {
  if (!run.started_at) return null;
  return (run.finished_at ?? now) - run.started_at;
}

export function formatTime(epochSeconds) {
  if (!epochSeconds) return "—";
  const date = new Date(epochSeconds * 1000);
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : date.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

export const STATUSES = ["queued", "running", "stopping", "stopped", "completed", "failed", "interrupted", "crashed"];
export const ACTIVE_STATUSES = new Set(["queued", "running", "stopping"]);
export const RESUMABLE_STATUSES = new Set(["stopped", "interrupted", "failed"]);

/** A status badge: the text is the status itself, so colour is never the only cue. */
export function statusBadge(status) {
  const badge = document.createElement("span");
  badge.className = `status status-${status}`;
  badge.textContent = status;
  return badge;
}

export const SEVERITIES = ["critical", "warning", "info"];

/** Create an element: el("td", {className: "num"}, "text", child). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name in node) node[name] = value;
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Text for Plotly: it renders a subset of HTML in names and labels, so run names and
 *  metric keys (which users choose) are escaped before they reach it. */
export function plotText(text) {
  return String(text ?? "").replace(/[&<>]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;" })[c]);
}

// run-panels.js — the run page's panels around the charts: what a queued or starting
// run is doing, a failed run's error (the line that matters first, the traceback
// folded), the diagnosis card, the output log tailing live, the checkpoints, and the
// whole configuration (fault settings included).

import { api, apiUrl } from "./api.js";
import { el, formatCount, formatNumber, formatTime } from "./format.js";

const LOG_POLL_MS = 1000;
const LOG_KEEP_CHARS = 200_000;

/** "Queued: 2nd in line …" / "Starting: building the model": never a blank page. */
export function phaseBanner(run) {
  if (run.status === "queued" && run.source === "launched") {
    const place = run.queue_position === 1 ? "next in line"
      : run.queue_position ? `${run.queue_position - 1} run(s) ahead in the queue` : "in the queue";
    return el("p", { id: "run-phase", className: "phase-banner", role: "status" },
      el("strong", {}, "Queued: "), `${place}; ${run.phase ?? "waiting for a worker"}.`);
  }
  if (run.status === "running" && (run.last_step === null || run.last_step === undefined)) {
    return el("p", { id: "run-phase", className: "phase-banner", role: "status" },
      el("strong", {}, "Starting: "), run.phase ?? "the worker is launching the trainer",
      " — charts appear with the first step.");
  }
  return null;
}

/** The error line first, the full text folded under it. */
export function errorBlock(run) {
  if (!run.error) return null;
  const line = run.error_line ?? run.error.split("\n").at(-1);
  const rest = run.error.trim() !== line.trim();
  return el("div", { id: "run-error", className: "run-error-box", role: "alert" },
    el("p", { className: "error-line" }, el("strong", {}, `${run.status === "failed" ? "Failed" : "Ended"}: `), line),
    run.resume_blocked ? el("p", { id: "resume-blocked", className: "muted" }, `Resume is off: ${run.resume_blocked}.`) : null,
    rest ? el("details", {}, el("summary", {}, "Full error output"), el("pre", { className: "run-error" }, run.error)) : null);
}

/** Every config field as a name/value list, nested settings (faults.*) flattened; fault
 *  settings that are set come first, marked, so a failure preset shows its cause. */
export function configTable(config, defaults = null) {
  const rows = [];
  const walk = (object, prefix) => {
    for (const [key, value] of Object.entries(object ?? {})) {
      if (value && typeof value === "object" && !Array.isArray(value)) walk(value, `${prefix}${key}.`);
      else rows.push([`${prefix}${key}`, value]);
    }
  };
  walk(config, "");
  // A fault is set when it differs from its default (output_init_scale's is 1); until
  // the defaults have loaded, nothing is marked rather than something wrongly.
  const isFault = ([name, value]) => name.startsWith("faults.") && defaults !== null
    && name in defaults && JSON.stringify(value) !== JSON.stringify(defaults[name]);
  const ordered = [...rows.filter(isFault), ...rows.filter((row) => !isFault(row))];
  return el("dl", { className: "config-summary config-all", "aria-label": "Configuration" },
    ordered.map((row) => el("div", { className: isFault(row) ? "fault" : "", dataset: { key: row[0] } },
      el("dt", {}, row[0]), el("dd", {}, row[1] === null ? "—" : typeof row[1] === "object" ? JSON.stringify(row[1]) : String(row[1])))));
}

/** The diagnosis card (GET /api/runs/{id}/diagnosis): root cause first, its numbers, the
 *  fix and a link that zooms every chart to the evidence; symptoms fold under it. */
export class DiagnosisCard {
  constructor(host, { onZoom, isActive }) {
    this.host = host;
    this.onZoom = onZoom;
    this.isActive = isActive;
  }

  async load(runId) {
    this.render(await api(`/runs/${runId}/diagnosis`));
  }

  render(diagnosis) {
    this.host.hidden = false;
    if (!diagnosis || diagnosis.state === "no_data") {
      // "Yet" only while more can come: a run that ended without a step is not pending.
      this.host.replaceChildren(el("p", { className: "muted diagnosis-line" }, this.isActive()
        ? "Diagnosis: no data yet." : "Diagnosis: none, since the run logged no metrics."));
      return;
    }
    // Healthy with info-level notes still shows them; only an empty list is one line.
    if (!diagnosis.diagnoses?.length) {
      this.host.replaceChildren(el("p", { className: "diagnosis-line healthy" }, "No findings: nothing looks wrong with this run so far."));
      return;
    }
    const [root, ...others] = diagnosis.diagnoses;
    this.host.replaceChildren(this.card(root, root.severity !== "info"), ...others.map((item) => this.card(item, false)));
  }

  card(item, root) {
    const steps = item.first_step === null || item.first_step === undefined ? null
      : item.last_step !== null && item.last_step !== item.first_step
        ? `steps ${formatCount(item.first_step)}–${formatCount(item.last_step)}` : `step ${formatCount(item.first_step)}`;
    const zoom = steps ? el("a", { href: "#charts", className: "zoom-evidence",
      onclick: (event) => { event.preventDefault(); this.onZoom(item); } }, `Show the evidence (${steps})`) : null;
    const symptoms = item.symptoms?.length ? el("details", { className: "symptoms" },
      el("summary", {}, `${item.symptoms.length} symptom(s)`),
      el("ul", {}, item.symptoms.map((symptom) => el("li", { dataset: { code: symptom.code } }, symptom.title,
        // Per-layer titles already name their layers ("... (2 layers: h0.mlp, h1.mlp)").
        symptom.layers?.length && !symptom.layers.every((layer) => symptom.title.includes(layer))
          ? el("span", { className: "muted" }, ` (${symptom.layers.join(", ")})`) : null)))) : null;
    return el("article", { className: `diagnosis sev-border-${item.severity} ${root ? "root" : ""}`,
      dataset: { cause: item.cause } },
    el("div", { className: "finding-head" }, el("span", { className: `sev sev-${item.severity}` }, item.severity),
      el("strong", {}, root ? `Root cause: ${item.title}` : item.title)),
    el("p", {}, item.summary),
    item.fix ? el("p", { className: "fix" }, el("strong", {}, "Fix: "), item.fix) : null,
    zoom, symptoms);
  }
}

/** output.log, tailed while the run is active (GET /api/runs/{id}/log?offset=). */
export class LogViewer {
  constructor(host, runId, isActive) {
    this.runId = runId;
    this.isActive = isActive;
    this.offset = null;
    this.pre = el("pre", { className: "log-view", tabindex: "0", "aria-label": "Output log" });
    this.note = el("span", { className: "muted" });
    this.details = el("details", { id: "log-panel" },
      el("summary", {}, "Output log ", this.note), this.pre);
    this.details.addEventListener("toggle", () => this.details.open && this.poll());
    host.append(this.details);
  }

  async poll() {
    clearTimeout(this.timer);
    if (!this.details.open) return;
    try {
      const chunk = await api(`/runs/${this.runId}/log`, { params: { offset: this.offset ?? undefined } });
      if (!chunk.exists) this.note.textContent = "(no output yet)";
      else {
        const atBottom = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 8;
        if (this.offset === null || chunk.offset !== this.offset) this.pre.textContent = chunk.text;
        else if (chunk.text) this.pre.textContent = (this.pre.textContent + chunk.text).slice(-LOG_KEEP_CHARS);
        this.offset = chunk.next_offset;
        this.note.textContent = `(${formatCount(chunk.size)} bytes${this.isActive() ? ", following" : ""})`;
        if (atBottom) this.pre.scrollTop = this.pre.scrollHeight;
      }
    } catch (error) {
      this.note.textContent = `(could not read: ${error.message})`;
    }
    if (this.isActive()) this.timer = setTimeout(() => this.poll(), LOG_POLL_MS);
  }
}

function formatBytes(bytes) {
  const units = [[1e9, "GB"], [1e6, "MB"], [1e3, "kB"]];
  for (const [size, unit] of units) if (bytes >= size) return `${(bytes / size).toFixed(1)} ${unit}`;
  return `${bytes} B`;
}

/** Checkpoints with step, size and val loss, each downloadable. */
export async function loadCheckpoints(host, runId) {
  const list = await api(`/runs/${runId}/checkpoints`);
  const rows = list.map((checkpoint) => el("tr", { dataset: { name: checkpoint.name } },
    el("td", { title: `saved ${formatTime(checkpoint.modified_at)}` }, checkpoint.name),
    el("td", { className: "num" }, formatCount(checkpoint.step)),
    el("td", { className: "num" }, formatNumber(checkpoint.val_loss)),
    el("td", { className: "num" }, formatBytes(checkpoint.size_bytes)),
    el("td", {}, el("a", { className: "button small", href: apiUrl(checkpoint.url.replace(/^\/api/, "")),
      download: `run-${runId}-${checkpoint.name}` }, "Download"))));
  host.replaceChildren(rows.length
    ? el("table", { className: "runs checkpoints" },
      el("thead", {}, el("tr", {}, ["File", "Step", "Val loss", "Size", ""].map((name) => el("th", {}, name)))),
      el("tbody", {}, rows))
    : el("p", { className: "muted" }, "No checkpoints yet."));
}

// findings.js — the findings panel of a run: what the rule engine found, most severe
// first, each with its steps, explanation and fix. Clicking a finding's title zooms
// every chart to its steps. The browser only shows findings; the server computes them.

import { api } from "./api.js";
import { el } from "./format.js";

const SEVERITY_ORDER = { critical: 0, warning: 1, info: 2 };
const STATE_ORDER = { firing: 0, pending: 1, acknowledged: 2, resolved: 3 };

export class FindingsPanel {
  constructor(list, { onSelect, onChange }) {
    this.list = list;
    this.onSelect = onSelect;
    this.onChange = onChange;
    this.findings = new Map();
  }

  setAll(findings) {
    this.findings = new Map(findings.map((finding) => [finding.id, finding]));
    this.render();
  }

  /** A finding event from the stream: the same shape as the REST answer. Events come in
   * bursts (one per episode a batch touched): render once per frame. */
  upsert(finding) {
    this.findings.set(finding.id, finding);
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      this.render();
    });
  }

  all() {
    return [...this.findings.values()];
  }

  sorted() {
    return this.all().sort((a, b) =>
      (STATE_ORDER[a.state] ?? 9) - (STATE_ORDER[b.state] ?? 9)
      || (SEVERITY_ORDER[a.severity] ?? 9) - (SEVERITY_ORDER[b.severity] ?? 9)
      || (a.first_step ?? 0) - (b.first_step ?? 0));
  }

  render() {
    const items = this.sorted().map((finding) => this.item(finding));
    this.list.replaceChildren(...(items.length ? items
      : [el("li", { className: "muted", id: "no-findings" }, "No findings.")]));
    this.onChange?.(this.all());
  }

  item(finding) {
    const last = finding.last_step ?? finding.first_step;
    const steps = finding.first_step === null || finding.first_step === undefined ? "" :
      last === finding.first_step ? `step ${finding.first_step}` : `steps ${finding.first_step}–${last}`;
    const zoom = el("button", {
      type: "button", className: "finding-zoom",
      title: `${finding.title}: zoom every chart to these steps`,
      disabled: finding.first_step === null || finding.first_step === undefined,
      onclick: () => this.onSelect(finding),
    }, finding.title);
    // With the explanation, not on the one-line head: it is what one does after reading
    // why, and the head keeps its width for the finding's title.
    const acknowledge = finding.state === "firing"
      ? el("button", {
        type: "button", className: "small acknowledge",
        title: "Keep it listed, stop flagging it as firing",
        onclick: () => this.acknowledge(finding),
      }, "✓ Acknowledge")
      : null;
    const evidence = finding.evidence && Object.keys(finding.evidence).length
      ? el("details", {}, el("summary", {}, "Evidence"), el("pre", {}, JSON.stringify(finding.evidence, null, 2)))
      : null;
    // One line until expanded: the explanation and fix live under the summary.
    return el("li", {
      className: `finding sev-border-${finding.severity} state-${finding.state}`,
      dataset: { findingId: finding.id, code: finding.code, severity: finding.severity },
    },
    el("details", { className: "finding-more" },
      el("summary", { className: "finding-head", title: "Why, and what to do" },
        // The left border's colour says the severity (as the charts' ▲ markers do); a badge
        // would take the width the title needs ("Satur…"). Screen readers still hear it.
        el("span", { className: "visually-hidden" }, `${finding.severity}: `),
        zoom,
        el("span", { className: "meta" }, [steps, finding.state === "firing" ? null : finding.state].filter(Boolean).join(" · "))),
      el("div", { className: "meta" }, finding.code),
      finding.explanation ? el("p", { className: "explanation" }, finding.explanation) : null,
      finding.fix ? el("p", { className: "fix" }, el("strong", {}, "Fix: "), finding.fix) : null,
      evidence,
      acknowledge));
  }

  async acknowledge(finding) {
    try {
      this.upsert(await api(`/findings/${finding.id}/ack`, { method: "POST" }));
    } catch (error) {
      this.list.prepend(el("li", { className: "error-box", role: "alert" }, `Could not acknowledge: ${error.message}`));
    }
  }
}

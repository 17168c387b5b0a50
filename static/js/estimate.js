// estimate.js — the launch form's live memory budget (POST /api/estimate).
//
// Every change to the form asks the server again (debounced): the arithmetic lives in
// one place, trainer/memory.py, and the browser only shows it. Stale answers are
// dropped, so a slow reply never overwrites a newer one.

import { ApiError, api } from "./api.js";
import { el } from "./format.js";

const DEBOUNCE_MS = 250;
const SHOWN_TERMS = ["weights", "gradients", "optimizer", "activations"];

export function formatBytes(bytes) {
  if (bytes >= 1e9) return `${(bytes / 1e9).toPrecision(3)} GB`;
  if (bytes >= 1e6) return `${(bytes / 1e6).toPrecision(3)} MB`;
  return `${(bytes / 1e3).toPrecision(3)} kB`;
}

/** Adds the estimate line to a LaunchForm (launch.js) and keeps it current. */
export function attachEstimate(launcher) {
  const box = el("div", { id: "launch-estimate", className: "estimate muted", role: "status",
    "aria-live": "polite" }, "Memory estimate: …");
  launcher.form.querySelector(".form-buttons")?.before(box);
  let timer = null;
  let latest = 0;
  const refresh = async () => {
    const ticket = ++latest;
    const { config, problems } = launcher.overrides();
    if (problems.length) return;
    const body = { config };
    if (launcher.presetSelect.value) body.preset = launcher.presetSelect.value;
    try {
      const estimate = await api("/estimate", { method: "POST", body });
      if (ticket === latest) show(box, estimate);
    } catch (error) {
      if (ticket !== latest) return;
      box.className = "estimate muted";
      box.textContent = error instanceof ApiError && error.status === 422
        ? "Memory estimate: fix the highlighted settings first."
        : `Memory estimate unavailable: ${error.message}`;
    }
  };
  const schedule = () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, DEBOUNCE_MS);
  };
  launcher.form.addEventListener("input", schedule);
  launcher.form.addEventListener("change", schedule);
  refresh();
  return { refresh };
}

function show(box, estimate) {
  const terms = SHOWN_TERMS.map((name) => `${name} ${formatBytes(estimate.terms[name])}`).join(", ");
  const params = `${(estimate.terms.parameters / 1e6).toPrecision(3)}M parameters`;
  const verdict = estimate.fits
    ? `fits ${estimate.device}`
    : `does not fit ${estimate.device}: the largest term is ${estimate.largest_term}; try ${estimate.advice}`;
  box.className = estimate.fits ? "estimate muted" : "estimate error-box";
  box.replaceChildren(
    el("strong", {}, `Memory estimate: ${formatBytes(estimate.total_bytes)}`),
    ` per process (${params}; ${terms}) — ${verdict}.`);
  box.dataset.totalBytes = String(estimate.total_bytes);
  box.dataset.fits = String(estimate.fits);
}

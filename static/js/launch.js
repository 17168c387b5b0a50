// launch.js — the launch form, built from the TrainConfig JSON schema (GET
// /api/config-schema) so a new config field appears here without touching the UI.
//
// A preset fills the fields with its config; only the fields that differ from the
// preset (or from the defaults) are sent as overrides. The server validates; each of
// its 422 errors ({field: "config.lr", msg}) is shown beside its input.

import { ApiError, api } from "./api.js";
import { resolveProperty, schemaDefaults } from "./config-schema.js";
import { attachEstimate } from "./estimate.js";
import { el } from "./format.js";

// Field groups, in the order a person tunes them. Fields not listed here still appear,
// under "Other", so the form never hides a field the schema has.
const GROUPS = [
  ["Model", ["n_layer", "n_head", "n_embd", "block_size", "dropout", "bias"]],
  ["Optimisation", ["batch_size", "grad_accum_steps", "max_steps", "lr", "min_lr", "warmup_steps",
    "schedule", "weight_decay", "beta1", "beta2", "grad_clip"]],
  ["Evaluation and logging", ["eval_interval", "eval_batches", "checkpoint_interval",
    "instrument_interval", "sample_interval"]],
  ["Data", ["dataset", "tokenizer", "vocab_size", "val_fraction"]],
  ["Runtime", ["precision", "compile", "grad_checkpointing", "seed", "device", "nproc"]],
];
// Nested objects are shown folded: they are for deliberate experiments.
const FOLDED_TITLES = {
  actions: "Automatic actions",
  faults: "Deliberate faults (for demonstrating failures)",
  rules: "Rule thresholds (JSON, per rule code)",
};
const FOLDED = new Set(Object.keys(FOLDED_TITLES));

export async function setupLaunchForm(form, { onLaunched }) {
  let schema;
  let presets;
  let datasets = [];
  try {
    [schema, presets] = await Promise.all([api("/config-schema"), api("/presets")]);
    datasets = await api("/datasets").catch(() => []);
  } catch (error) {
    form.replaceChildren(el("p", { className: "error-box", role: "alert" },
      `Could not load the launch form: ${error.message}`));
    return;
  }
  const launcher = new LaunchForm(form, schema, presets, datasets, onLaunched);
  launcher.build();
  return launcher;
}

class LaunchForm {
  constructor(form, schema, presets, datasets, onLaunched) {
    this.form = form;
    this.schema = schema;
    this.presets = new Map(presets.map((preset) => [preset.name, preset]));
    this.datasets = Array.isArray(datasets) ? datasets : datasets?.datasets ?? [];
    this.onLaunched = onLaunched;
    this.fields = new Map(); // dotted path → {input, kind, error, wrapper}
  }

  // -- schema --------------------------------------------------------------------------

  resolve(property) {
    return resolveProperty(this.schema, property);
  }

  defaults() {
    return schemaDefaults(this.schema);
  }

  // -- building ------------------------------------------------------------------------

  build() {
    const nameInput = el("input", { id: "launch-name", name: "name", type: "text", maxLength: 200,
      placeholder: "defaults to the preset's name", autocomplete: "off" });
    this.presetSelect = el("select", { id: "launch-preset", name: "preset",
      onchange: () => this.applyPreset() },
    el("option", { value: "" }, "none (TrainConfig defaults)"),
    [...this.presets.values()].map((preset) => el("option", { value: preset.name }, preset.title)));
    this.presetText = el("p", { className: "preset-description muted", id: "launch-preset-description",
      "aria-live": "polite" });
    this.formError = el("div", { className: "error-box", role: "alert", hidden: true });
    this.fields.set("name", this.fieldRecord(nameInput, "string"));
    this.fields.set("preset", this.fieldRecord(this.presetSelect, "string"));

    const properties = this.schema.properties ?? {};
    const placed = new Set();
    const groups = GROUPS.map(([title, names]) => {
      const present = names.filter((name) => name in properties);
      present.forEach((name) => placed.add(name));
      return this.fieldset(title, present.map((name) => this.field(name, properties[name])));
    });
    const others = Object.keys(properties).filter((name) => !placed.has(name) && !FOLDED.has(name));
    if (others.length) groups.push(this.fieldset("Other", others.map((name) => this.field(name, properties[name]))));
    const folded = [...FOLDED].filter((name) => name in properties).map((name) => {
      const property = this.resolve(properties[name]);
      const title = FOLDED_TITLES[name];
      const body = property.type === "object" && property.properties
        ? this.fieldset(property.description ?? title,
          Object.entries(property.properties).map(([sub, raw]) => this.field(`${name}.${sub}`, raw)))
        : this.fieldset(title, [this.field(name, properties[name])]);
      return el("details", { className: "folded" }, el("summary", {}, `${title} (${name})`), body);
    });

    this.submitButton = el("button", { type: "submit", className: "primary" }, "Launch");
    this.status = el("span", { className: "muted", "aria-live": "polite" });
    this.form.replaceChildren(
      el("div", { className: "top-fields" },
        this.wrap("name", "Name", nameInput),
        this.wrap("preset", "Preset", this.presetSelect)),
      this.presetText,
      this.formError,
      ...groups,
      ...folded,
      el("div", { className: "form-buttons" }, this.submitButton, this.status));
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    if (this.presets.has("healthy")) this.presetSelect.value = "healthy";
    this.applyPreset();
    this.estimate = attachEstimate(this); // the live memory budget (estimate.js)
  }

  fieldset(legend, children) {
    return el("fieldset", {}, el("legend", {}, legend), children);
  }

  /** One input for one schema property, chosen by its type. */
  field(path, raw) {
    const property = this.resolve(raw);
    const id = `cfg-${path.replace(/[^a-z0-9_]+/gi, "-")}`;
    const label = path.split(".").pop();
    const common = { id, name: path };
    let input;
    let kind = property.type;
    if (property.enum) {
      kind = "enum";
      input = el("select", common, property.enum.map((value) => el("option", { value }, String(value))));
    } else if (property.type === "boolean") {
      input = el("input", { ...common, type: "checkbox" });
    } else if (property.type === "integer" || property.type === "number") {
      input = el("input", { ...common, type: "number", inputMode: property.type === "integer" ? "numeric" : "decimal",
        step: property.type === "integer" ? "1" : "any" });
      const min = property.minimum ?? property.exclusiveMinimum;
      const max = property.maximum ?? property.exclusiveMaximum;
      if (min !== undefined) input.min = String(min);
      if (max !== undefined) input.max = String(max);
    } else if (property.type === "object") {
      kind = "json";
      input = el("textarea", { ...common, rows: 3, spellcheck: false, placeholder: "{}" });
    } else {
      kind = "string";
      input = el("input", { ...common, type: "text", autocomplete: "off" });
    }
    if (property.nullable) input.dataset.nullable = "true";
    const record = this.fieldRecord(input, kind);
    this.fields.set(path, record);
    const hint = [property.description, property.nullable ? "empty: none" : null].filter(Boolean).join(" · ");
    const wrapper = this.wrap(path, label, input, hint, kind === "boolean");
    if (path === "dataset") {
      // Suggest the uploaded corpora; any name is accepted and checked by the server.
      const names = [...new Set(["stdlib", ...this.datasets.map((dataset) => dataset.name)])];
      const list = el("datalist", { id: `${id}-options` }, names.map((name) => el("option", { value: name })));
      input.setAttribute("list", list.id);
      wrapper.append(list, this.uploadBox(input, list));
    }
    return wrapper;
  }

  /** Upload a text corpus from here (POST /api/datasets); the server checks its name,
   *  size and encoding and its answer shows beside the box. */
  uploadBox(datasetInput, list) {
    const file = el("input", { type: "file", id: "dataset-file", accept: ".txt,text/plain", "aria-label": "Corpus file" });
    const status = el("p", { className: "muted", id: "dataset-upload-status", role: "status" });
    const upload = async () => {
      const chosen = file.files?.[0];
      if (!chosen) return;
      const name = chosen.name.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[^A-Za-z0-9]+/, "") || "corpus";
      status.classList.remove("field-error");
      status.textContent = `Uploading ${chosen.name} (${(chosen.size / 1e6).toFixed(2)} MB)…`;
      try {
        const dataset = await api("/datasets", { method: "POST", body: { name, text: await chosen.text() } });
        list.append(el("option", { value: dataset.name }));
        datasetInput.value = dataset.name;
        status.textContent = `Uploaded “${dataset.name}”: ${dataset.n_chars.toLocaleString("en-US")} characters, ${dataset.n_symbols} symbols.`;
      } catch (error) {
        status.classList.add("field-error");
        status.textContent = `Upload refused: ${error.message}`;
      }
      file.value = ""; // choosing the same file again is a new upload
    };
    file.addEventListener("change", upload);
    return el("div", { className: "dataset-upload" }, el("label", { htmlFor: file.id }, "or upload a .txt corpus "), file, status);
  }

  fieldRecord(input, kind) {
    return { input, kind, error: null, wrapper: null };
  }

  wrap(path, labelText, input, hint = "", isCheckbox = false) {
    const record = this.fields.get(path);
    const error = el("p", { className: "field-error", id: `${input.id}-error`, hidden: true });
    input.setAttribute("aria-describedby", error.id);
    const label = el("label", { htmlFor: input.id, title: hint || undefined }, labelText);
    const wrapper = el("div", { className: `field ${isCheckbox ? "checkbox" : ""}`, dataset: { field: path } },
      isCheckbox ? [input, label] : [label, input], error);
    record.error = error;
    record.wrapper = wrapper;
    return wrapper;
  }

  // -- values --------------------------------------------------------------------------

  baseValues() {
    const preset = this.presets.get(this.presetSelect.value);
    const values = this.defaults();
    if (preset) Object.assign(values, flatten(preset.config, "", {}, this.fields));
    return values;
  }

  applyPreset() {
    const preset = this.presets.get(this.presetSelect.value);
    this.presetText.textContent = preset
      ? `${preset.description}${preset.expected_findings.length
        ? ` Expected findings: ${preset.expected_findings.join(", ")}.` : ""}`
      : "Every field at its TrainConfig default.";
    const values = this.baseValues();
    for (const [path, record] of this.fields) {
      if (path === "name" || path === "preset") continue;
      this.setValue(record, values[path]);
    }
    this.clearErrors();
  }

  setValue({ input, kind }, value) {
    if (kind === "boolean") input.checked = Boolean(value);
    else if (kind === "json") input.value = value && Object.keys(value).length ? JSON.stringify(value) : "";
    else input.value = value === null || value === undefined ? "" : String(value);
  }

  /** The field's value as the API wants it; throws a message for malformed JSON. */
  readValue({ input, kind }) {
    if (kind === "boolean") return input.checked;
    const text = input.value.trim();
    if (kind === "json") return text ? JSON.parse(text) : input.dataset.nullable ? null : {};
    if (text === "") return input.dataset.nullable ? null : undefined;
    if (kind === "integer" || kind === "number") {
      const number = Number(text);
      return Number.isNaN(number) ? text : number; // let the server say what is wrong
    }
    return text;
  }

  /** Overrides: the fields that differ from the preset's (or default) config. */
  overrides() {
    const base = this.baseValues();
    const config = {};
    const problems = [];
    for (const [path, record] of this.fields) {
      if (path === "name" || path === "preset") continue;
      let value;
      try {
        value = this.readValue(record);
      } catch {
        problems.push({ field: `config.${path}`, msg: "must be a JSON object" });
        continue;
      }
      if (value === undefined || JSON.stringify(value) === JSON.stringify(base[path])) continue;
      setPath(config, path, value);
    }
    return { config, problems };
  }

  // -- submit ----------------------------------------------------------------------------

  async submit() {
    this.clearErrors();
    const { config, problems } = this.overrides();
    if (problems.length) {
      this.showErrors(problems);
      return;
    }
    const body = { config };
    const name = this.fields.get("name").input.value.trim();
    if (name) body.name = name;
    if (this.presetSelect.value) body.preset = this.presetSelect.value;
    this.submitButton.disabled = true;
    this.status.textContent = "Launching…";
    try {
      const run = await api("/runs", { method: "POST", body });
      this.status.textContent = `Run ${run.id} queued.`;
      this.onLaunched(run);
    } catch (error) {
      this.status.textContent = "";
      if (error instanceof ApiError && error.status === 422) this.showErrors(error.fieldErrors);
      else this.showErrors([{ field: "", msg: error.message }]);
    } finally {
      this.submitButton.disabled = false;
    }
  }

  clearErrors() {
    this.formError.hidden = true;
    this.formError.replaceChildren();
    for (const record of this.fields.values()) {
      if (!record.error) continue;
      record.error.hidden = true;
      record.error.textContent = "";
      record.input.removeAttribute("aria-invalid");
    }
  }

  /** Each error beside its field; errors about the config as a whole above the fields. */
  showErrors(errors) {
    const general = [];
    let first = null;
    for (const { field, msg } of errors) {
      const path = field.startsWith("config.") ? field.slice("config.".length) : field;
      const record = this.fields.get(path);
      if (!record?.error) {
        general.push(msg);
        continue;
      }
      const text = msg.replace(/^[^:]*: /, ""); // the field is named by where the message sits
      record.error.textContent = record.error.textContent ? `${record.error.textContent}; ${text}` : text;
      record.error.hidden = false;
      record.input.setAttribute("aria-invalid", "true");
      const folded = record.wrapper.closest("details");
      if (folded) folded.open = true;
      first ??= record.input;
    }
    if (general.length) {
      this.formError.replaceChildren(...general.map((message) => el("div", {}, message)));
      this.formError.hidden = false;
    }
    (first ?? this.formError).focus?.();
  }
}


function flatten(object, prefix = "", out = {}, leaves = new Map()) {
  for (const [name, value] of Object.entries(object ?? {})) {
    const path = prefix ? `${prefix}.${name}` : name;
    const leaf = name === "rules" || leaves.has(path); // a JSON field takes the whole object
    if (value && typeof value === "object" && !Array.isArray(value) && !leaf) flatten(value, path, out, leaves);
    else out[path] = value;
  }
  return out;
}

function setPath(target, path, value) {
  const parts = path.split(".");
  let node = target;
  for (const part of parts.slice(0, -1)) node = node[part] ??= {};
  node[parts[parts.length - 1]] = value;
}

// api.js — every request the dashboard makes to the REST API goes through here.
//
// Why one module: the optional bearer token (TRAINLENS_TOKEN) has to be attached to
// every call, a 401 has to lead to one token prompt (not one per chart), and error
// bodies ({"detail": ...}) have to become readable messages in one place.

const TOKEN_KEY = "trainlens.token";

export class ApiError extends Error {
  constructor(status, detail) {
    super(describe(detail, status));
    this.status = status;
    this.detail = detail;
  }

  /** Field errors of a 422 as [{field, msg}], for showing each beside its input. */
  get fieldErrors() {
    if (!Array.isArray(this.detail)) return [];
    return this.detail.map((item) => ({ field: item.field ?? "", msg: item.msg ?? String(item) }));
  }
}

function describe(detail, status) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((item) => item.msg ?? JSON.stringify(item)).join("; ");
  return `HTTP ${status}`;
}

export function getToken() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

/** An API URL with query parameters; `withToken` adds ?token= for what cannot send
 *  headers (EventSource, download links). */
export function apiUrl(path, params = {}, { withToken = false } = {}) {
  const url = new URL(`/api${path}`, location.origin);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const token = getToken();
  if (withToken && token) url.searchParams.set("token", token);
  return url.pathname + url.search;
}

// One prompt at a time: concurrent requests that all get 401 wait on the same answer.
let tokenPrompt = null;

function askForToken(message) {
  if (!tokenPrompt) {
    tokenPrompt = new Promise((resolve) => {
      const dialog = document.getElementById("token-dialog") ?? buildTokenDialog();
      dialog.querySelector(".token-message").textContent = message;
      const input = dialog.querySelector("input");
      input.value = "";
      dialog.addEventListener(
        "close",
        () => {
          tokenPrompt = null;
          resolve(dialog.returnValue === "ok" ? input.value.trim() : "");
        },
        { once: true },
      );
      dialog.showModal();
      input.focus();
    });
  }
  return tokenPrompt;
}

function buildTokenDialog() {
  const dialog = document.createElement("dialog");
  dialog.id = "token-dialog";
  dialog.innerHTML = `
    <form method="dialog">
      <h2>Access token</h2>
      <p class="token-message"></p>
      <label for="token-input">Token (TRAINLENS_TOKEN of the server)</label>
      <input id="token-input" name="token" type="password" autocomplete="current-password" required>
      <div class="dialog-buttons">
        <button value="cancel" formnovalidate>Cancel</button>
        <button value="ok" class="primary">Use token</button>
      </div>
    </form>`;
  document.body.append(dialog);
  return dialog;
}

/** fetch + JSON, with the token, and one retry after the user supplies a token. */
export async function api(path, { method = "GET", params, body, signal } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = { Accept: "application/json" };
    const token = getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(apiUrl(path, params), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
    if (response.status === 401 && attempt < 3) {
      const message = token ? "The stored token was refused." : "This server requires a token.";
      const entered = await askForToken(message);
      if (!entered) throw new ApiError(401, "a token is required");
      setToken(entered);
      continue;
    }
    if (response.status === 204) return null;
    const text = await response.text();
    const data = text ? JSON.parse(text) : null;
    if (!response.ok) throw new ApiError(response.status, data?.detail ?? text);
    return data;
  }
}

/** Whether an error is just a request we cancelled ourselves (a newer zoom, say). */
export function isAbort(error) {
  return error?.name === "AbortError";
}

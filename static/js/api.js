// api.js — every request the dashboard makes to the REST API goes through here.
//
// Why one module: when the server has a token (TRAINLENS_TOKEN), a 401 has to lead to
// one login prompt (not one per chart), and error bodies ({"detail": ...}) have to
// become readable messages in one place.
//
// The token never stays in the page: the login form sends it once to POST /api/session,
// which answers with an HttpOnly, SameSite=Strict session cookie. The browser then
// attaches that cookie to every request itself — fetches, the EventSource stream and
// CSV download links — so no URL carries a secret. State-changing requests always say
// `Content-Type: application/json`: the server requires it of cookie sessions (a form
// on another site cannot send it).

// Older versions kept the token here; it must not linger.
localStorage.removeItem("trainlens.token");

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

/** An API URL with query parameters (for EventSource and download links: the session
 *  cookie authenticates them). */
export function apiUrl(path, params = {}) {
  const url = new URL(`/api${path}`, location.origin);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  return url.pathname + url.search;
}

// One prompt at a time: concurrent requests that all get 401 wait on the same login.
let loginPrompt = null;

/** Show the login form until the server accepts the token (a session cookie is set)
 *  or the user cancels; resolves to whether a session now exists. */
function logIn(message) {
  if (!loginPrompt) {
    loginPrompt = new Promise((resolve) => {
      const dialog = document.getElementById("token-dialog") ?? buildTokenDialog();
      const note = dialog.querySelector(".token-message");
      const form = dialog.querySelector("form");
      const input = dialog.querySelector("input");
      note.textContent = message;
      input.value = "";
      const finish = (ok) => {
        form.removeEventListener("submit", submit);
        dialog.removeEventListener("cancel", cancel);
        dialog.close();
        loginPrompt = null;
        resolve(ok);
      };
      const submit = async (event) => {
        event.preventDefault();
        if (event.submitter?.value === "cancel") return finish(false);
        const response = await fetch("/api/session", {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify({ token: input.value.trim() }),
        });
        if (response.ok) return finish(true);
        note.textContent = response.status === 401 ? "That token was refused." : `Login failed (HTTP ${response.status}).`;
        input.select();
      };
      const cancel = () => finish(false);
      form.addEventListener("submit", submit);
      dialog.addEventListener("cancel", cancel);
      dialog.showModal();
      input.focus();
    });
  }
  return loginPrompt;
}

/** End this browser's session (the cookie is HttpOnly: only the server can clear it). */
export async function logOut() {
  await fetch("/api/session", { method: "DELETE", headers: { "Content-Type": "application/json" } });
}

function buildTokenDialog() {
  const dialog = document.createElement("dialog");
  dialog.id = "token-dialog";
  dialog.innerHTML = `
    <form>
      <h2>Log in</h2>
      <p class="token-message"></p>
      <label for="token-input">Token (TRAINLENS_TOKEN of the server)</label>
      <input id="token-input" name="token" type="password" autocomplete="current-password" required>
      <div class="dialog-buttons">
        <button value="cancel" formnovalidate>Cancel</button>
        <button value="ok" class="primary">Log in</button>
      </div>
    </form>`;
  document.body.append(dialog);
  return dialog;
}

/** fetch + JSON; on 401, the login form, then the request again. */
export async function api(path, { method = "GET", params, body, signal } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = { Accept: "application/json" };
    if (method !== "GET" || body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(apiUrl(path, params), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
    if (response.status === 401 && attempt < 3) {
      const message = attempt ? "The session was refused; log in again." : "This server requires a token.";
      if (!(await logIn(message))) throw new ApiError(401, "a token is required");
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

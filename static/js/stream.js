// stream.js — the page's one Server-Sent Events connection.
//
// The browser's EventSource already reconnects by itself and sends Last-Event-ID, so
// the server replays what was missed (a server restart costs nothing). What it does
// not do is recover once it has given up (readyState CLOSED: a 401, a proxy's 502):
// then this module opens a fresh stream after a back-off and asks the page to reload
// everything, since a fresh EventSource cannot say where it left off.

import { api, apiUrl } from "./api.js";

const EVENT_KINDS = ["hello", "points", "status", "finding", "sample", "reset",
  "created", "progress", "deleted", "updated", "diagnosis"];

export class LiveStream {
  /**
   * @param {string} path e.g. "/runs/3/stream" or "/stream"
   * @param {Object<string, Function>} handlers one per event kind; `reload` is called
   *   when the page must fetch everything again (a `reset`, or a stream that had to be
   *   reopened from scratch).
   */
  constructor(path, handlers) {
    this.path = path;
    this.handlers = handlers;
    this.source = null;
    this.retryDelay = 1000;
    this.retryTimer = null;
    this.opens = 0; // fresh EventSource objects created (not browser reconnects)
    this.lastEventId = null;
    this.state = "connecting";
  }

  start() {
    this.open();
    // Reconnect promptly when the tab wakes up or the network comes back.
    window.addEventListener("online", () => this.reviveIfClosed());
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) this.reviveIfClosed();
    });
    return this;
  }

  open() {
    clearTimeout(this.retryTimer);
    this.opens += 1;
    const isReopen = this.opens > 1;
    const source = new EventSource(apiUrl(this.path)); // the session cookie authenticates it
    this.source = source;
    this.setState("connecting");
    source.addEventListener("open", () => {
      this.retryDelay = 1000;
      this.setState("live");
    });
    source.addEventListener("error", () => {
      if (source !== this.source) return;
      if (source.readyState === EventSource.CLOSED) this.scheduleReopen();
      else this.setState("reconnecting"); // the browser retries by itself
    });
    for (const kind of EVENT_KINDS) {
      source.addEventListener(kind, (event) => {
        this.lastEventId = event.lastEventId || this.lastEventId;
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          return; // a malformed event must not break the page
        }
        if (kind === "hello" && isReopen) this.handlers.reload?.("stream reopened");
        if (kind === "reset") this.handlers.reload?.("server reset");
        this.handlers[kind]?.(data);
      });
    }
  }

  scheduleReopen() {
    this.source?.close();
    this.setState("reconnecting");
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(async () => {
      try {
        // A cheap request first: if the server wants a login this prompts for it,
        // and if the server is still down we simply try again later.
        await api("/runs", { params: { limit: 1 } });
        this.open();
      } catch {
        this.retryDelay = Math.min(this.retryDelay * 2, 15000);
        this.scheduleReopen();
      }
    }, this.retryDelay);
  }

  reviveIfClosed() {
    if (this.source?.readyState === EventSource.CLOSED) {
      this.retryDelay = 250;
      this.scheduleReopen();
    }
  }

  setState(state) {
    this.state = state;
    document.body.dataset.stream = state;
    const indicator = document.getElementById("live-indicator");
    if (indicator) {
      indicator.dataset.state = state;
      indicator.textContent = { live: "live", connecting: "connecting…", reconnecting: "reconnecting…" }[state];
      indicator.title = state === "live" ? "Receiving updates as they are written" : "Waiting for the server";
    }
  }

  close() {
    clearTimeout(this.retryTimer);
    this.source?.close();
  }
}

// Following a task's event log: GET /v1/tasks/{id}/events.
//
// EventSource cannot send an Authorization header, so the stream is read with fetch()
// and parsed here. A dropped stream is resumed with Last-Event-ID (and ?after=). A
// server that answers with the JSON list instead of a stream is polled with ?after=.

import { ApiError, api, authHeaders, check } from "./api.js";

const POLL_MS = 2000;
const IDLE_MS = 60000; // no bytes, not even a keep-alive comment: assume the stream is dead
const MAX_BACKOFF_MS = 5000;

/** Wait before reconnecting: a second for the first few tries (a refused connection
 * is cheap and a restarting server is back soon), then doubling up to 5 s. */
export function retryDelay(failures) {
  return Math.min(1000 * 2 ** Math.max(0, failures - 3), MAX_BACKOFF_MS);
}

/** A server-sent-events parser (the WHATWG event-stream format); push() text as it comes. */
export class SSEParser {
  constructor(onMessage) {
    this.onMessage = onMessage;
    this.buffer = "";
    this.data = [];
    this.type = "";
    this.lastId = "";
    this.retry = null;
  }

  push(chunk) {
    let text = this.buffer + chunk;
    // A lone CR at the end may be the first half of a CRLF: wait for the next chunk.
    const held = text.endsWith("\r") ? "\r" : "";
    if (held) text = text.slice(0, -1);
    const lines = text.split(/\r\n|\r|\n/);
    this.buffer = lines.pop() + held;
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === "") {
      if (this.data.length) {
        this.onMessage({ id: this.lastId, type: this.type || "message", data: this.data.join("\n") });
      }
      this.data = [];
      this.type = "";
      return;
    }
    if (line.startsWith(":")) return; // a comment: the keep-alive ": ping"
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.type = value;
    else if (field === "id" && !value.includes("\0")) this.lastId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
  }
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });

/**
 * Follow a task's events until it is final or stop() is called.
 *
 * handlers.onEvent(event)   every event once, in order (an EventPublic)
 * handlers.onState(state)   "connecting" | "live" | "polling" | "reconnecting" | "ended"
 * handlers.isFinal()        is the task final, as last read?
 * handlers.settled()        a promise: is the task final? (re-reads the task)
 */
export function followEvents(taskId, handlers) {
  const stopper = new AbortController();
  const signal = stopper.signal;
  let lastId = 0;

  const deliver = (event) => {
    if (!event || typeof event.id !== "number" || event.id <= lastId) return;
    lastId = event.id;
    handlers.onEvent(event);
  };

  async function stream() {
    const url = `/v1/tasks/${encodeURIComponent(taskId)}/events?after=${lastId}`;
    const headers = { Accept: "text/event-stream", ...authHeaders() };
    if (lastId) headers["Last-Event-ID"] = String(lastId);
    const attempt = new AbortController();
    const abort = () => attempt.abort();
    signal.addEventListener("abort", abort, { once: true });
    let idle;
    try {
      let response;
      try {
        response = await fetch(url, { headers, signal: attempt.signal, cache: "no-store" });
      } catch (err) {
        if (signal.aborted) throw err;
        throw new ApiError(0, "unreachable", "The server cannot be reached.");
      }
      await check(response);
      if (!(response.headers.get("content-type") || "").startsWith("text/event-stream")) {
        for (const event of await response.json()) deliver(event);
        return "json";
      }
      handlers.onState("live");
      const parser = new SSEParser((message) => {
        try {
          deliver(JSON.parse(message.data));
        } catch {
          // not one of ours; ignore it
        }
      });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const watch = () => {
        clearTimeout(idle);
        idle = setTimeout(abort, IDLE_MS);
      };
      watch();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return "ended";
        watch();
        parser.push(value);
      }
    } finally {
      clearTimeout(idle);
      signal.removeEventListener("abort", abort);
    }
  }

  async function poll() {
    handlers.onState("polling");
    let backoff = POLL_MS;
    while (!signal.aborted) {
      try {
        const page = await api.events(taskId, lastId, { signal });
        page.forEach(deliver);
        backoff = POLL_MS;
        if (page.length >= 1000) continue; // a full page: more are waiting
        if (!page.length && handlers.isFinal()) return;
        handlers.onState("polling");
      } catch (err) {
        if (signal.aborted || (err instanceof ApiError && [401, 403, 404].includes(err.status))) return;
        handlers.onState("reconnecting");
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      }
      await sleep(backoff, signal);
    }
  }

  async function run() {
    handlers.onState("connecting");
    let failures = 0;
    while (!signal.aborted) {
      try {
        const outcome = await stream();
        if (outcome === "json") {
          await poll();
          break;
        }
        // The server ends the stream once the task is final; otherwise it was a drop.
        if (await handlers.settled()) break;
        failures = 0;
      } catch (err) {
        if (signal.aborted || (err instanceof ApiError && [401, 403, 404].includes(err.status))) return;
        failures += 1;
      }
      if (signal.aborted) return;
      handlers.onState("reconnecting");
      await sleep(retryDelay(failures), signal);
    }
    if (!signal.aborted) handlers.onState("ended");
  }

  run();
  return { stop: () => stopper.abort() };
}

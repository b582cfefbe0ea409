// The HTTP API as the dashboard uses it: JSON calls with an optional bearer token, and the
// event stream read with fetch (not EventSource) so that it can carry the same header.

const TOKEN_KEY = "gradual.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  describe() {
    const hint = this.status === 401 || this.status === 403 ? " (check the token)" : "";
    return `${this.code}: ${this.message}${hint}`;
  }
}

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || "",
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

function headers(extra = {}) {
  const value = token.get();
  return value ? { ...extra, Authorization: `Bearer ${value}` } : extra;
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's error page, say
  }
  const code = body?.code ?? `http_${response.status}`;
  const message = body?.message ?? body?.error ?? (response.statusText || "request failed");
  return new ApiError(response.status, code, message);
}

async function call(method, path, body) {
  const init = { method, headers: headers({ Accept: "application/json" }), cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, "unreachable", `cannot reach the service (${error.message})`);
  }
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response.json();
}

const model = (name) => `/v1/models/${encodeURIComponent(name)}`;

export const api = {
  models: () => call("GET", "/v1/models"),
  model: (name) => call("GET", model(name)),
  history: (name, points) => call("GET", `${model(name)}/history?points=${points}`),
  versions: (name) => call("GET", `${model(name)}/versions`),
  candidates: (name) => call("GET", `${model(name)}/candidates`),
  promote: (name, version) => call("POST", `${model(name)}/promote`, { version }),
  rollback: (name, version) => call("POST", `${model(name)}/rollback`, { version }),
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Server-Sent Events over fetch: reconnects after `retry` ms with Last-Event-ID, so no event
// is lost or repeated across reconnections.
export class EventStream {
  constructor(name, { after, onEvent, onState }) {
    this.path = `${model(name)}/events/stream`;
    this.lastId = after;
    this.onEvent = onEvent;
    this.onState = onState;
    this.retry = 2000;
    this.controller = new AbortController();
    this.stopped = false;
  }

  start() {
    this.loop();
    return this;
  }

  stop() {
    this.stopped = true;
    this.controller.abort();
  }

  async loop() {
    while (!this.stopped) {
      try {
        await this.connect();
        if (!this.stopped) this.onState("reconnecting", null);
      } catch (error) {
        if (this.stopped) return;
        if (error instanceof ApiError && error.status === 404) {
          this.onState("closed", error);
          return;
        }
        this.onState("reconnecting", error);
      }
      await sleep(this.retry);
    }
  }

  async connect() {
    this.onState("connecting", null);
    const response = await fetch(this.path, {
      headers: headers({ Accept: "text/event-stream", "Last-Event-ID": String(this.lastId) }),
      cache: "no-store",
      signal: this.controller.signal,
    });
    if (!response.ok) throw await failure(response);
    this.onState("live", null);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replaceAll("\r\n", "\n");
      let end = buffer.indexOf("\n\n");
      while (end >= 0) {
        this.dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        end = buffer.indexOf("\n\n");
      }
    }
  }

  dispatch(block) {
    const fields = { data: [] };
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue; // a comment: the keep-alive
      const colon = line.indexOf(":");
      const key = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (key === "data") fields.data.push(value);
      else fields[key] = value;
    }
    if (fields.retry && /^\d+$/.test(fields.retry)) this.retry = Number(fields.retry);
    if (!fields.data.length) return;
    if (fields.id) this.lastId = Number(fields.id);
    this.onEvent(JSON.parse(fields.data.join("\n")));
  }
}

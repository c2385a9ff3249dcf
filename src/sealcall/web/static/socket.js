// The page socket client (docs/web-protocol.md): connects to ws://HOST/<secret>/ws, says `hello`
// first, sends requests with ids (one reply each), hands events to subscribers, reconnects with
// backoff.

/** An Error from an `error` reply: `code` is the contract's code (bad_request, illegal, ...). */
export class RequestError extends Error {
  constructor(code, message) {
    super(message || code);
    this.name = "RequestError";
    this.code = code;
  }
}

/** The socket's address for a page at `location`: the same path, plus "ws". */
export function socketUrl(loc) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  const path = loc.pathname.endsWith("/") ? loc.pathname : loc.pathname.replace(/[^/]*$/, "");
  return `${scheme}//${loc.host}${path}ws`;
}

/** The delay before reconnect attempt `n` (0-based): 0.5 s doubling to 10 s. */
export function backoff(n) {
  return Math.min(10000, 500 * 2 ** Math.min(n, 5));
}

export class PageSocket {
  /**
   * @param {string} url the socket's address
   * @param {boolean} e2ee the browser has RTCRtpScriptTransform (sent in `hello`)
   * @param {typeof WebSocket} [WS] the WebSocket class (tests pass a fake)
   */
  constructor(url, e2ee, WS = globalThis.WebSocket) {
    this.url = url;
    this.e2ee = e2ee;
    this.WS = WS;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map();
    this.listeners = new Map();
    this.attempt = 0;
    this.closed = false;
    this.ready = false;
    this.queue = [];
  }

  /** Subscribe to events of `type` ("*" for all; "open"/"close" for the socket itself). */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type).delete(fn);
  }

  emit(type, msg) {
    for (const key of [type, "*"]) {
      for (const fn of this.listeners.get(key) ?? []) {
        try {
          fn(msg);
        } catch (err) {
          console.error("sealcall: a listener of", type, "failed:", err?.name ?? err);
        }
      }
    }
  }

  connect() {
    this.closed = false;
    const ws = new this.WS(this.url);
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.sendRaw({ type: "hello", id: this.newId(), e2ee: this.e2ee }, true)
        .then((hello) => {
          this.ready = true;
          for (const msg of this.queue.splice(0)) ws.send(JSON.stringify(msg));
          this.emit("open", hello);
        })
        .catch((err) => console.error("sealcall: hello refused:", err.code ?? err.name));
    };
    ws.onmessage = (ev) => this.receive(ev.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ready = false;
      this.queue.length = 0;
      for (const [, p] of this.pending) p.reject(new RequestError("failed", "socket closed"));
      this.pending.clear();
      this.emit("close", {});
      if (!this.closed) setTimeout(() => this.connect(), backoff(this.attempt++));
    };
  }

  close() {
    this.closed = true;
    this.ws?.close();
  }

  newId() {
    return this.nextId++;
  }

  receive(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      console.warn("sealcall: a socket message was not JSON; dropped");
      return;
    }
    if (!msg || typeof msg.type !== "string") return;
    if ((msg.type === "result" || msg.type === "error") && this.pending.has(msg.id)) {
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (msg.type === "result") p.resolve(msg);
      else p.reject(new RequestError(msg.code, msg.message));
      return;
    }
    this.emit(msg.type, msg);
  }

  sendRaw(msg, now = false) {
    const promise =
      msg.id === undefined
        ? Promise.resolve()
        : new Promise((resolve, reject) => this.pending.set(msg.id, { resolve, reject }));
    if (now || this.ready) this.ws.send(JSON.stringify(msg));
    else this.queue.push(msg);
    return promise;
  }

  /** Send request `type` with `fields`; resolves with the `result` message, rejects with RequestError. */
  request(type, fields = {}) {
    return this.sendRaw({ ...fields, type, id: this.newId() });
  }

  /** Send a message that has no reply (the media results: local_description, ...). */
  send(type, fields) {
    if (this.ready) this.ws.send(JSON.stringify({ ...fields, type }));
  }
}

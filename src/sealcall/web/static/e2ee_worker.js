// The web client's SFrame worker: every encoded audio and video frame of the page's peer
// connections passes through here (RTCRtpScriptTransform), protected on the way out and
// opened on the way in, with the keys the page hands over (docs/web-protocol.md, "The worker
// messages"). The state lives in sframe_context.js; this file binds it to the streams and
// messages.
//
// A frame that cannot be protected or opened is dropped, never passed on in the clear, and
// counted. Keys and frame bytes are never logged; a bad message is counted and ignored.
//
// Created by the page as `new Worker("static/e2ee_worker.js", {type: "module"})`, one per
// page and shared by every transform, so a scope's send counter is one counter.
import { FrameContexts, KINDS, KeyFrameRequests, checkId } from "./sframe_context.js";

/** The worker's state (exported for tests/js/e2ee_worker.test.mjs, which runs it in Node). */
export const contexts = new FrameContexts();
const now = () => performance.now() / 1000;
const SIDES = ["send", "recv"];

function badMessage() {
  contexts.badMessages += 1;
}

/** The key of a message as bytes; the page transfers it, so the buffer is ours to wipe. */
function keyOf(message) {
  const key = message.key;
  if (key instanceof ArrayBuffer || ArrayBuffer.isView(key)) return key;
  throw new TypeError("key must be an ArrayBuffer");
}

function wipe(key) {
  try {
    if (key instanceof ArrayBuffer) new Uint8Array(key).fill(0);
    else new Uint8Array(key.buffer, key.byteOffset, key.byteLength).fill(0);
  } catch {
    // A detached or read-only buffer: nothing of ours is left in it.
  }
}

// ---------------------------------------------------------------------------------------
// Page -> worker.

const OPS = {
  set_send_key(m) {
    const key = keyOf(m);
    const done = contexts.setSendKey(m.scope, m.suite, m.kid, key);
    wipe(key); // setSendKey copied it before returning
    return done;
  },
  add_receive_key(m) {
    const key = keyOf(m);
    const done = contexts.addReceiveKey(m.scope, m.sender, m.suite, m.kid, key, now());
    wipe(key);
    return done;
  },
  allow_plain(m) {
    contexts.allowPlain(m.scope);
  },
  forget(m) {
    contexts.forget(m.scope);
  },
  stats(m) {
    checkId(m.scope, "scope");
    if (typeof m.request !== "number" || !Number.isFinite(m.request)) {
      throw new TypeError("request must be a number");
    }
    self.postMessage({ op: "stats", request: m.request, scope: m.scope, ...contexts.stats(m.scope) });
  },
};

self.onmessage = (event) => {
  try {
    const message = event.data;
    const op = message !== null && typeof message === "object" ? message.op : undefined;
    if (typeof op !== "string" || !Object.hasOwn(OPS, op)) throw new TypeError("unknown op");
    const done = OPS[op](message);
    // Key derivation is asynchronous: a refusal there is counted like any other.
    if (done instanceof Promise) done.catch(badMessage);
  } catch {
    badMessage();
  }
};

// ---------------------------------------------------------------------------------------
// Transforms.

function optionsOf(transformer) {
  const o = transformer.options;
  if (o === null || typeof o !== "object") throw new TypeError("transform options missing");
  checkId(o.scope, "scope");
  if (!SIDES.includes(o.side) || !KINDS.includes(o.kind)) throw new TypeError("side or kind");
  const sender = o.sender === undefined || o.sender === null ? "" : o.sender;
  checkId(sender, "sender", { empty: true });
  return { scope: o.scope, side: o.side, kind: o.kind, sender };
}

function mimeTypeOf(frame) {
  try {
    return frame.getMetadata?.().mimeType;
  } catch {
    return undefined;
  }
}

/** Put `data` (a Uint8Array) into the frame without copying when it fills its own buffer. */
function setData(frame, data) {
  const whole = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength;
  frame.data = whole ? data.buffer : data.slice().buffer;
}

function quietly(promise) {
  // generateKeyFrame/sendKeyFrameRequest reject when there is nothing to ask (no encoder yet,
  // an audio track): that is not an error of the call.
  if (promise && typeof promise.catch === "function") promise.catch(() => {});
}

function sendTransform(transformer, { scope, kind }) {
  let generation = 0;
  return async (frame, controller) => {
    try {
      const out = await contexts.protect(scope, kind, mimeTypeOf(frame), frame.data);
      setData(frame, out);
      controller.enqueue(frame);
    } catch {
      return; // dropped and counted by the context (or not a frame at all)
    }
    // The first frame under a new key: ask the encoder for a key frame, so the far side's
    // picture starts (or recovers) at once instead of at the next periodic key frame.
    const current = contexts.sendGeneration(scope);
    if (kind === "video" && current !== generation) {
      generation = current;
      try {
        quietly(transformer.generateKeyFrame?.());
      } catch {
        // not supported here
      }
    }
  };
}

function recvTransform(transformer, { scope, kind, sender }) {
  const requests = new KeyFrameRequests();
  return async (frame, controller) => {
    let out;
    try {
      out = await contexts.unprotect(scope, sender, kind, mimeTypeOf(frame), frame.data, now());
    } catch {
      // Dropped and counted. Video cannot recover from missing frames without a key frame.
      if (kind === "video" && requests.failed(now())) {
        try {
          quietly(transformer.sendKeyFrameRequest?.());
        } catch {
          // not supported here
        }
        self.postMessage({ op: "key_frame_needed", scope, sender });
      }
      return;
    }
    requests.opened();
    setData(frame, out);
    controller.enqueue(frame);
  };
}

/** Run one RTCRtpScriptTransform: readable -> protect/open -> writable, until it ends. */
function attach(transformer) {
  let options;
  try {
    options = optionsOf(transformer);
  } catch {
    // Without valid options no frame can be handled: none is passed on.
    badMessage();
    return;
  }
  const transform =
    options.side === "send"
      ? sendTransform(transformer, options)
      : recvTransform(transformer, options);
  transformer.readable
    .pipeThrough(new TransformStream({ transform }))
    .pipeTo(transformer.writable)
    .catch(() => {}); // the connection closed
}

self.onrtctransform = (event) => {
  try {
    attach(event.transformer);
  } catch {
    badMessage();
  }
};

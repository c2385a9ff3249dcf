// TEST HELPER, not the real SFrame worker: a pass-through stand-in for static/e2ee_worker.js
// that the stub page server (tests/web_page_stub.py) serves, so the page's transform plumbing can
// be checked without the real worker. It counts the frames each transform sees and reports them
// (and the transforms' options) in its `stats` answers; it encrypts nothing.

const counts = new Map(); // scope -> {sent, received}
const transforms = [];
const keys = [];

function entry(scope) {
  if (!counts.has(scope)) counts.set(scope, { sent: 0, received: 0 });
  return counts.get(scope);
}

onrtctransform = (event) => {
  const { scope, side, kind, sender } = event.transformer.options;
  const record = { scope, side, kind, sender: sender ?? null, frames: 0 };
  transforms.push(record);
  const stream = new TransformStream({
    transform(frame, controller) {
      record.frames += 1;
      entry(scope)[side === "send" ? "sent" : "received"] += 1;
      controller.enqueue(frame);
    },
  });
  event.transformer.readable.pipeThrough(stream).pipeTo(event.transformer.writable);
};

onmessage = (event) => {
  const msg = event.data;
  if (msg.op === "set_send_key" || msg.op === "add_receive_key") {
    keys.push({ op: msg.op, scope: msg.scope, sender: msg.sender ?? null, kid: msg.kid, bytes: msg.key.byteLength });
  } else if (msg.op === "stats") {
    const c = entry(msg.scope);
    postMessage({
      op: "stats",
      request: msg.request,
      scope: msg.scope,
      sent: c.sent,
      encrypted: 0,
      received: c.received,
      decrypted: 0,
      dropped: { no_key: 0, auth: 0, replay: 0, malformed: 0, unencrypted: 0 },
      transforms: transforms.filter((t) => t.scope === msg.scope),
      keys: keys.filter((k) => k.scope === msg.scope),
    });
  }
};

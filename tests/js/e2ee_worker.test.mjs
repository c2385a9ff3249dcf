// The SFrame worker (static/e2ee_worker.js) in Node: its messages and its transforms, with
// fake RTCRtpScriptTransformers built from Node's web streams. Frames that cannot be
// protected or opened never come out; junk messages are counted, never thrown.
// (tests/test_web_worker.py runs the same worker in Chromium over real WebRTC.)
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

if (!globalThis.crypto?.subtle) {
  Object.defineProperty(globalThis, "crypto", { value: (await import("node:crypto")).webcrypto });
}
// The worker's global scope: `self`, and what it posts to the page.
const posted = [];
globalThis.self = globalThis;
globalThis.postMessage = (message) => posted.push(message);
const { contexts } = await import("../../src/sealcall/web/static/e2ee_worker.js");
const { deriveKeys } = await import("../../src/sealcall/web/static/sframe.js");
const { protectFrame } = await import("../../src/sealcall/web/static/frames.js");

const V = JSON.parse(readFileSync(new URL("./data/frame-vectors.json", import.meta.url), "utf8"));
const hex = (s) => Uint8Array.from(Buffer.from(s, "hex"));
const toHex = (b) => Buffer.from(b).toString("hex");
const KEY = Uint8Array.from({ length: 32 }, (_, i) => i);
const VP8 = hex(V.vp8[0].frame);
const OPUS = hex(V.opus[0].frame);

/** Wait until `condition()` holds, giving the worker's promises turns to run. */
async function until(condition, what) {
  for (let i = 0; i < 2000; i++) {
    if (condition()) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.fail(`never happened: ${what}`);
}

const send = (message) => self.onmessage({ data: message });
const keyMessage = (op, scope, extra = {}) => ({
  op,
  scope,
  suite: 4,
  kid: 0,
  key: Uint8Array.from(KEY).buffer,
  ...extra,
});

/** A fake transformer: push frames in, read what the worker let through. */
function transformer(options) {
  let push;
  const out = [];
  const calls = { generateKeyFrame: 0, sendKeyFrameRequest: 0 };
  const t = {
    options,
    readable: new ReadableStream({ start: (c) => void (push = c) }),
    writable: new WritableStream({ write: (frame) => void out.push(frame) }),
    generateKeyFrame: () => {
      calls.generateKeyFrame += 1;
      return Promise.resolve();
    },
    sendKeyFrameRequest: () => {
      calls.sendKeyFrameRequest += 1;
      return Promise.reject(new Error("nothing to ask")); // must not hurt the stream
    },
  };
  self.onrtctransform({ transformer: t });
  const frame = (bytes, mimeType) => ({
    data: Uint8Array.from(bytes).buffer,
    getMetadata: () => (mimeType === undefined ? {} : { mimeType }),
  });
  return { push: (bytes, mime) => push.enqueue(frame(bytes, mime)), out, calls };
}

const handled = (scope, side) => () => {
  const s = contexts.stats(scope);
  const dropped = Object.values(s.dropped).reduce((a, b) => a + b, 0);
  return side === "send" ? s.encrypted + s.plain + dropped : s.decrypted + s.plain + dropped;
};

test("send: no frame leaves before the key; after it, every frame leaves encrypted", async () => {
  const t = transformer({ scope: "s1", side: "send", kind: "video" });
  for (let i = 0; i < 3; i++) t.push(VP8, "video/VP8");
  await until(() => handled("s1", "send")() === 3, "3 frames handled");
  assert.equal(t.out.length, 0);
  assert.equal(contexts.stats("s1").dropped.no_key, 3);
  send(keyMessage("set_send_key", "s1"));
  await contexts.chain;
  t.push(VP8, "video/VP8");
  t.push(VP8);
  await until(() => t.out.length === 2, "2 frames out");
  for (const frame of t.out) assert.notEqual(toHex(new Uint8Array(frame.data)), toHex(VP8));
  // The first frame under the new key asked the encoder for a key frame, once.
  assert.equal(t.calls.generateKeyFrame, 1);
});

test("recv: frames open with the key; wrong ones are dropped and ask for key frames", async () => {
  const keys = await deriveKeys(4, KEY, 0);
  const other = await deriveKeys(4, KEY.map((b) => b ^ 1), 0);
  const t = transformer({ scope: "r1", side: "recv", kind: "video" });
  send(keyMessage("add_receive_key", "r1", { sender: "" }));
  await contexts.chain;
  t.push(await protectFrame("vp8", 4, keys, 0, 0, VP8), "video/VP8");
  await until(() => t.out.length === 1, "one frame opened");
  assert.equal(toHex(new Uint8Array(t.out[0].data)), toHex(VP8));
  // Forged frames: none comes out; repeated failures ask for a key frame, once per second.
  for (let ctr = 1; ctr <= 6; ctr++) t.push(await protectFrame("vp8", 4, other, 0, ctr, VP8));
  await until(() => contexts.stats("r1").dropped.auth === 6, "6 frames refused");
  assert.equal(t.out.length, 1);
  assert.equal(t.calls.sendKeyFrameRequest, 1);
  assert.deepEqual(
    posted.filter((m) => m.op === "key_frame_needed"),
    [{ op: "key_frame_needed", scope: "r1", sender: "" }],
  );
  // The stream survived the rejected request: a good frame still opens.
  t.push(await protectFrame("vp8", 4, keys, 0, 7, VP8), "video/VP8");
  await until(() => t.out.length === 2, "the stream goes on");
});

test("group receivers open only their sender's frames", async () => {
  const keys = await deriveKeys(4, KEY, 0);
  const alice = transformer({ scope: "g1", side: "recv", kind: "audio", sender: "alice" });
  const bob = transformer({ scope: "g1", side: "recv", kind: "audio", sender: "bob" });
  send(keyMessage("add_receive_key", "g1", { sender: "alice" }));
  await contexts.chain;
  const frame = await protectFrame("opus", 4, keys, 0, 0, OPUS);
  alice.push(frame, "audio/opus");
  bob.push(frame, "audio/opus");
  await until(() => handled("g1", "recv")() === 2, "both handled");
  assert.equal(alice.out.length, 1);
  assert.equal(bob.out.length, 0);
  assert.equal(contexts.stats("g1").dropped.no_key, 1);
});

test("allow_plain passes frames through; stats answer with the request number", async () => {
  const t = transformer({ scope: "p1", side: "send", kind: "audio" });
  send({ op: "allow_plain", scope: "p1" });
  t.push(OPUS, "audio/opus");
  await until(() => t.out.length === 1, "passed through");
  assert.equal(toHex(new Uint8Array(t.out[0].data)), toHex(OPUS));
  send({ op: "stats", scope: "p1", request: 42 });
  const reply = posted.find((m) => m.op === "stats" && m.request === 42);
  assert.equal(reply.scope, "p1");
  assert.deepEqual([reply.sent, reply.plain, reply.encrypted], [1, 1, 0]);
  assert.equal(reply.audio.plain, 1);
});

test("the transferred key buffer is wiped once the worker copied it", async () => {
  const message = keyMessage("set_send_key", "w1");
  send(message);
  await contexts.chain;
  assert.ok(new Uint8Array(message.key).every((b) => b === 0));
});

/** A small deterministic generator of junk (xorshift), so a failure can be replayed. */
function junkMaker(seed) {
  let x = seed;
  const rand = (n) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
  const atoms = () => [
    null,
    undefined,
    -1,
    0,
    4,
    2 ** 53,
    NaN,
    "",
    "a",
    "x".repeat(300),
    true,
    [],
    {},
    new ArrayBuffer(0),
    new ArrayBuffer(16),
    new Uint8Array(200),
    Symbol("s"),
    () => 1,
    10n,
    -1n,
  ];
  const ops = ["set_send_key", "add_receive_key", "allow_plain", "forget", "stats", "x", ""];
  const fields = ["op", "scope", "sender", "suite", "kid", "key", "request", "__proto__"];
  return () => {
    if (rand(5) === 0) return atoms()[rand(20)];
    const m = { op: ops[rand(ops.length)] };
    for (let i = rand(6); i > 0; i--) m[fields[rand(fields.length)]] = atoms()[rand(20)];
    return m;
  };
}

test("junk messages and transform options never throw and are counted", async () => {
  const junk = junkMaker(0x5eed);
  const before = contexts.badMessages;
  for (let i = 0; i < 3000; i++) {
    const message = junk();
    assert.doesNotThrow(() => send(message));
  }
  await contexts.chain;
  assert.ok(contexts.badMessages > before + 1000);
  // Bad transform options: counted, and no frame passes.
  const bad = [undefined, null, {}, { scope: "t", side: "both", kind: "video" }];
  for (const options of bad) {
    const t = transformer(options);
    t.push(VP8);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(t.out.length, 0);
  }
  // The worker still works.
  const t = transformer({ scope: "after", side: "send", kind: "audio" });
  send(keyMessage("set_send_key", "after"));
  await contexts.chain;
  t.push(OPUS, "audio/opus");
  await until(() => t.out.length === 1, "a frame after the junk");
});

test("random bytes as received frames never come out", async () => {
  const t = transformer({ scope: "rnd", side: "recv", kind: "video" });
  send(keyMessage("add_receive_key", "rnd", { sender: "" }));
  await contexts.chain;
  let seed = 7;
  const byte = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) & 0xff;
  const frames = 300;
  for (let i = 0; i < frames; i++) {
    const length = byte() % 64;
    t.push(Uint8Array.from({ length }, byte), i % 2 ? "video/VP8" : "video/H264");
  }
  await until(() => handled("rnd", "recv")() === frames, "all random frames handled");
  assert.equal(t.out.length, 0);
  assert.equal(contexts.stats("rnd").decrypted, 0);
});

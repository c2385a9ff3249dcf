// The worker's frame state (static/sframe_context.js) without a browser: counters, replay
// windows, key rotation and grace windows, bounds, drops by reason, and frames from the
// Python side (tests/js/data/frame-vectors.json "context": a call's MediaKeys across a key
// change). Time is injected (`now`, seconds). Run: node --test tests/js/
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

if (!globalThis.crypto?.subtle) {
  Object.defineProperty(globalThis, "crypto", { value: (await import("node:crypto")).webcrypto });
}
const { decodeHeader, deriveKeys } = await import("../../src/sealcall/web/static/sframe.js");
const { protectFrame } = await import("../../src/sealcall/web/static/frames.js");
const {
  FrameContexts,
  FrameDrop,
  KeyFrameRequests,
  ReceiveRing,
  REPLAY_WINDOW,
  ReplayWindow,
  SendContext,
  codecFor,
} = await import("../../src/sealcall/web/static/sframe_context.js");

const V = JSON.parse(readFileSync(new URL("./data/frame-vectors.json", import.meta.url), "utf8"));
const hex = (s) => Uint8Array.from(Buffer.from(s, "hex"));
const toHex = (b) => Buffer.from(b).toString("hex");
const SUITE = 4;
const KEY_A = Uint8Array.from({ length: 32 }, (_, i) => i);
const KEY_B = Uint8Array.from({ length: 32 }, (_, i) => 100 + i);
const OPUS = hex(V.opus[0].frame);
const VP8 = hex(V.vp8[0].frame);
const VP8_MIME = "video/VP8";

/** The SFrame header (kid, ctr) of a protected VP8 key frame or Opus frame. */
function header(codec, data) {
  const prefix = codec === "opus" ? 1 : data[0] & 1 ? 3 : 10;
  const { kid, ctr } = decodeHeader(data.subarray(prefix));
  return `${kid}/${ctr}`;
}

/** A receive ring holding `key` as `kid`, added at time `now`. */
async function ring(key = KEY_A, kid = 0, now = 0, options = {}) {
  const r = new ReceiveRing(options);
  r.install(await deriveKeys(SUITE, key, kid), key, now);
  return r;
}

/** A VP8 key frame protected under `key`/`kid` with counter `ctr`. */
async function sealed(ctr, key = KEY_A, kid = 0, frame = VP8) {
  return protectFrame("vp8", SUITE, await deriveKeys(SUITE, key, kid), kid, ctr, frame);
}

async function dropOf(promise) {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof FrameDrop, `not a FrameDrop: ${error}`);
    return error.reason;
  }
  assert.fail("the frame was not dropped");
}

test("two transforms of one scope never share a counter, across a key change", async () => {
  const ctx = new FrameContexts();
  await ctx.setSendKey("call", SUITE, 0, KEY_A);
  // Audio and video frames protected at the same time, as two RTCRtpSenders do.
  const sends = [];
  for (let i = 0; i < 40; i++) {
    sends.push(ctx.protect("call", "audio", "audio/opus", OPUS).then((d) => header("opus", d)));
    sends.push(ctx.protect("call", "video", VP8_MIME, VP8).then((d) => header("vp8", d)));
  }
  const first = await Promise.all(sends);
  assert.equal(new Set(first).size, 80);
  // A new key under the same KID: the counter goes on, it does not start again at 0.
  await ctx.setSendKey("call", SUITE, 0, KEY_B);
  const next = header("vp8", await ctx.protect("call", "video", VP8_MIME, VP8));
  assert.equal(next, "0/80");
  // And back to the first key: still no (KID, CTR) seen before.
  await ctx.setSendKey("call", SUITE, 0, KEY_A);
  assert.equal(header("opus", await ctx.protect("call", "audio", undefined, OPUS)), "0/81");
  const s = ctx.stats("call");
  assert.equal(s.sent, 82);
  assert.equal(s.encrypted, 82);
  assert.equal(s.audio.encrypted, 41);
  assert.equal(s.video.encrypted, 41);
});

test("scopes have their own send keys and counters", async () => {
  const ctx = new FrameContexts();
  await ctx.setSendKey("one", SUITE, 3, KEY_A);
  await ctx.setSendKey("two", SUITE, 5, KEY_B);
  assert.equal(header("opus", await ctx.protect("one", "audio", undefined, OPUS)), "3/0");
  assert.equal(header("opus", await ctx.protect("two", "audio", undefined, OPUS)), "5/0");
  assert.equal(ctx.stats("one").encrypted, 1);
});

test("before a send key, frames are dropped (no_key), never passed in the clear", async () => {
  const ctx = new FrameContexts();
  assert.equal(await dropOf(ctx.protect("call", "video", VP8_MIME, VP8)), "no_key");
  assert.equal(await dropOf(new SendContext().protect("opus", OPUS)), "no_key");
  const s = ctx.stats("call");
  assert.deepEqual([s.sent, s.encrypted, s.plain, s.dropped.no_key], [1, 0, 0, 1]);
});

test("a frame protected by the context opens with the receive side, once", async () => {
  const ctx = new FrameContexts();
  await ctx.setSendKey("a", SUITE, 0, KEY_A);
  await ctx.addReceiveKey("b", "", SUITE, 0, KEY_A, 0);
  const data = await ctx.protect("a", "video", VP8_MIME, VP8);
  assert.notEqual(toHex(data), toHex(VP8));
  const plain = await ctx.unprotect("b", "", "video", VP8_MIME, data, 0.5);
  assert.equal(toHex(plain), toHex(VP8));
  assert.equal(await dropOf(ctx.unprotect("b", "", "video", VP8_MIME, data, 0.6)), "replay");
  const s = ctx.stats("b");
  assert.deepEqual([s.received, s.decrypted, s.dropped.replay], [2, 1, 1]);
  assert.equal(s.video.decrypted, 1);
  assert.equal(s.audio.received, 0);
});

test("the default replay window keeps late video: 900 counters behind is still new", () => {
  const w = new ReplayWindow();
  w.accept(1000n);
  assert.equal(w.seen(100n), false); // 900 behind: a late video frame, accepted once
  w.accept(100n);
  assert.equal(w.seen(100n), true);
  assert.equal(w.seen(1000n - BigInt(REPLAY_WINDOW)), true); // just outside
});

test("replay window: seen and too-old counters are refused", () => {
  const w = new ReplayWindow(128);
  assert.equal(w.seen(5n), false);
  w.accept(5n);
  assert.equal(w.seen(5n), true);
  w.accept(200n);
  assert.equal(w.seen(5n), true); // 195 behind: outside the window
  assert.equal(w.seen(72n), true); // 128 behind: just outside
  assert.equal(w.seen(73n), false); // 127 behind, never seen
  w.accept(73n);
  assert.equal(w.seen(73n), true);
  w.accept(1n << 40n); // a jump far ahead clears the window
  assert.equal(w.seen((1n << 40n) - 1n), false);
});

test("a forged frame does not move the replay window", async () => {
  const r = await ring();
  const genuineFar = await sealed(1000);
  const forged = Uint8Array.from(genuineFar);
  forged[forged.length - 1] ^= 0x01;
  assert.equal(await dropOf(r.open("vp8", forged, 0)), "auth");
  // Had the forgery moved the window to 1000, counter 5 would now be too old.
  assert.equal((await r.open("vp8", await sealed(5), 0)).ctr, 5n);
  // And 1000 itself was never marked as seen.
  assert.equal((await r.open("vp8", genuineFar, 0)).ctr, 1000n);
  assert.equal(await dropOf(r.open("vp8", await sealed(5), 0)), "replay");
});

test("two copies of one frame opening at the same time: exactly one passes", async () => {
  const r = await ring();
  const data = await sealed(9);
  const results = await Promise.allSettled([r.open("vp8", data, 0), r.open("vp8", data, 0)]);
  assert.deepEqual(results.map((x) => x.status).sort(), ["fulfilled", "rejected"]);
  assert.equal(results.find((x) => x.status === "rejected").reason.reason, "replay");
});

test("a new key under the same KID: the old one opens frames only for the grace window", async () => {
  const r = await ring(KEY_A, 0, 0);
  const old = await sealed(1, KEY_A);
  r.install(await deriveKeys(SUITE, KEY_B, 0), KEY_B, 10);
  assert.equal((await r.open("vp8", await sealed(0, KEY_B), 10.5)).ctr, 0n);
  assert.equal((await r.open("vp8", old, 11.9)).ctr, 1n); // in flight under the old key
  assert.equal(await dropOf(r.open("vp8", await sealed(2, KEY_A), 12)), "auth");
  assert.equal((await r.open("vp8", await sealed(3, KEY_B), 12)).ctr, 3n);
  assert.deepEqual(r.kids(), [0n]);
});

test("a new KID retires the others after the grace window; then they are unknown", async () => {
  const r = await ring(KEY_A, 0, 0);
  r.install(await deriveKeys(SUITE, KEY_B, 1), KEY_B, 20);
  assert.deepEqual(r.kids(), [0n, 1n]);
  assert.equal((await r.open("vp8", await sealed(7, KEY_A, 0), 21.9)).kid, 0n);
  assert.equal((await r.open("vp8", await sealed(8, KEY_B, 1), 21.9)).kid, 1n);
  assert.equal(await dropOf(r.open("vp8", await sealed(9, KEY_A, 0), 22)), "no_key");
  assert.deepEqual(r.kids(), [1n]);
  // The newest key itself never expires.
  assert.equal((await r.open("vp8", await sealed(10, KEY_B, 1), 1000)).kid, 1n);
});

test("an older KID added late opens frames only for the grace window", async () => {
  const r = await ring(KEY_B, 5, 0);
  r.install(await deriveKeys(SUITE, KEY_A, 4), KEY_A, 1);
  assert.equal((await r.open("vp8", await sealed(0, KEY_A, 4), 2.5)).kid, 4n);
  assert.equal(await dropOf(r.open("vp8", await sealed(1, KEY_A, 4), 3)), "no_key");
  assert.equal((await r.open("vp8", await sealed(0, KEY_B, 5), 3)).kid, 5n);
});

test("KIDs are newer mod 256, as group key indices: 0 follows 255", async () => {
  const r = await ring(KEY_A, 255, 0);
  r.install(await deriveKeys(SUITE, KEY_B, 0), KEY_B, 1);
  assert.equal(await dropOf(r.open("vp8", await sealed(0, KEY_A, 255), 3)), "no_key");
  assert.equal((await r.open("vp8", await sealed(0, KEY_B, 0), 3)).kid, 0n);
});

test("the same key again keeps its replay window and its place", async () => {
  const r = await ring(KEY_A, 0, 0);
  const data = await sealed(4);
  await r.open("vp8", data, 0);
  r.install(await deriveKeys(SUITE, KEY_A, 0), KEY_A, 1);
  assert.equal(await dropOf(r.open("vp8", data, 1)), "replay");
});

test("unknown KIDs, unknown senders and empty rings drop as no_key", async () => {
  const ctx = new FrameContexts();
  const data = await sealed(0, KEY_A, 7);
  assert.equal(await dropOf(ctx.unprotect("g", "alice", "video", VP8_MIME, data, 0)), "no_key");
  await ctx.addReceiveKey("g", "alice", SUITE, 6, KEY_A, 0);
  assert.equal(await dropOf(ctx.unprotect("g", "alice", "video", VP8_MIME, data, 0)), "no_key");
  // One sender's keys never open another sender's frames.
  await ctx.addReceiveKey("g", "bob", SUITE, 7, KEY_A, 0);
  assert.equal(await dropOf(ctx.unprotect("g", "alice", "video", VP8_MIME, data, 0)), "no_key");
  assert.equal(toHex(await ctx.unprotect("g", "bob", "video", VP8_MIME, data, 0)), toHex(VP8));
  assert.equal(ctx.stats("g").dropped.no_key, 3);
});

test("a ring holds at most 16 KIDs: the oldest retired ones go first", async () => {
  const r = new ReceiveRing();
  for (let kid = 0; kid < 20; kid++) {
    r.install(await deriveKeys(SUITE, KEY_A, kid), KEY_A, kid * 0.01);
  }
  assert.deepEqual(r.kids().map(Number), [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
  assert.equal((await r.open("vp8", await sealed(0, KEY_A, 19), 0.5)).kid, 19n);
  assert.equal(await dropOf(r.open("vp8", await sealed(0, KEY_A, 3), 0.5)), "no_key");
});

test("senders per scope and scopes per worker are bounded", async () => {
  const ctx = new FrameContexts({ maxSenders: 2, maxScopes: 2 });
  await ctx.addReceiveKey("g", "a", SUITE, 0, KEY_A, 0);
  await ctx.addReceiveKey("g", "b", SUITE, 0, KEY_A, 0);
  await assert.rejects(ctx.addReceiveKey("g", "c", SUITE, 0, KEY_A, 0), RangeError);
  await ctx.addReceiveKey("g", "a", SUITE, 1, KEY_B, 0); // a known sender still takes keys
  await ctx.setSendKey("h", SUITE, 0, KEY_A);
  await assert.rejects(ctx.setSendKey("i", SUITE, 0, KEY_A), RangeError);
  assert.equal(await dropOf(ctx.protect("j", "audio", undefined, OPUS)), "no_key");
  assert.equal(ctx.stats("g").unscoped, 1);
  ctx.forget("h");
  await ctx.setSendKey("i", SUITE, 0, KEY_A); // room again
});

test("bad key material is refused with a specific error and changes nothing", async () => {
  const ctx = new FrameContexts();
  await assert.rejects(ctx.setSendKey("c", 9, 0, KEY_A), /suite/);
  await assert.rejects(ctx.setSendKey("c", SUITE, -1, KEY_A), TypeError);
  await assert.rejects(ctx.setSendKey("c", SUITE, 0.5, KEY_A), TypeError);
  await assert.rejects(ctx.setSendKey("c", SUITE, 0, new Uint8Array(0)), TypeError);
  await assert.rejects(ctx.setSendKey("c", SUITE, 0, "key"), TypeError);
  await assert.rejects(ctx.setSendKey("", SUITE, 0, KEY_A), TypeError);
  await assert.rejects(ctx.setSendKey("x".repeat(256), SUITE, 0, KEY_A), TypeError);
  await assert.rejects(ctx.addReceiveKey("c", 7, SUITE, 0, KEY_A, 0), TypeError);
  await ctx.addReceiveKey("c", "", SUITE, 0, KEY_A, 0);
  await assert.rejects(ctx.addReceiveKey("c", "", 5, 1, new Uint8Array(32), 0), /suite/);
  assert.equal(await dropOf(ctx.protect("c", "audio", undefined, OPUS)), "no_key");
});

test("key changes apply in the order given, whatever their derivation takes", async () => {
  // The first derivation of each key is the slowest: applied as they finish, the older key
  // would end up current.
  let calls = 0;
  const derive = async (...args) => {
    const delay = calls++ % 2 === 0 ? 30 : 0;
    await new Promise((resolve) => setTimeout(resolve, delay));
    return deriveKeys(...args);
  };
  const ctx = new FrameContexts({ derive });
  // Not awaited one by one: the later key must end up current, the earlier one retired.
  const adds = [
    ctx.addReceiveKey("c", "", SUITE, 0, KEY_A, 0),
    ctx.addReceiveKey("c", "", SUITE, 0, KEY_B, 0),
    ctx.setSendKey("c", SUITE, 0, KEY_A),
    ctx.setSendKey("c", SUITE, 0, KEY_B),
  ];
  await Promise.all(adds);
  const out = await ctx.protect("c", "video", VP8_MIME, VP8);
  assert.equal(toHex(await ctx.unprotect("c", "", "video", VP8_MIME, out, 5)), toHex(VP8));
  assert.equal(await dropOf(ctx.unprotect("c", "", "video", VP8_MIME, await sealed(9), 5)), "auth");
});

test("forget drops the keys, including keys still being derived", async () => {
  const ctx = new FrameContexts();
  await ctx.setSendKey("c", SUITE, 0, KEY_A);
  await ctx.addReceiveKey("c", "", SUITE, 0, KEY_A, 0);
  const late = ctx.setSendKey("c", SUITE, 0, KEY_B);
  ctx.forget("c");
  await late;
  assert.equal(await dropOf(ctx.protect("c", "video", VP8_MIME, VP8)), "no_key");
  assert.equal(await dropOf(ctx.unprotect("c", "", "video", VP8_MIME, await sealed(0), 0)), "no_key");
  assert.equal(ctx.stats("c").dropped.no_key, 2); // counters started again
});

test("wrong key: auth; cut or empty frames: malformed; other codecs: unencrypted", async () => {
  const ctx = new FrameContexts();
  await ctx.addReceiveKey("c", "", SUITE, 0, KEY_B, 0);
  const un = (mime, data, kind = "video") => dropOf(ctx.unprotect("c", "", kind, mime, data, 0));
  assert.equal(await un(VP8_MIME, await sealed(0, KEY_A)), "auth");
  assert.equal(await un(VP8_MIME, VP8.subarray(0, 5)), "malformed");
  assert.equal(await un("audio/opus", new Uint8Array(0), "audio"), "malformed");
  assert.equal(await un("video/AV1", VP8), "unencrypted");
  await ctx.setSendKey("c", SUITE, 0, KEY_A);
  assert.equal(await dropOf(ctx.protect("c", "video", "video/VP9", VP8)), "unencrypted");
  assert.equal(await dropOf(ctx.protect("c", "video", VP8_MIME, new Uint8Array(2))), "malformed");
  const s = ctx.stats("c");
  assert.deepEqual(s.dropped, { no_key: 0, auth: 1, replay: 0, malformed: 3, unencrypted: 2 });
  assert.equal(s.decrypted + s.encrypted + s.plain, 0);
});

test("the codec comes from the mime type, else from the kind", () => {
  assert.equal(codecFor("video", "video/H264"), "h264");
  assert.equal(codecFor("video", undefined), "vp8");
  assert.equal(codecFor("audio", ""), "opus");
  assert.throws(() => codecFor("audio", "audio/G722"), FrameDrop);
});

test("allow_plain passes frames through both ways, counted as plain, only when asked", async () => {
  const ctx = new FrameContexts();
  assert.equal(await dropOf(ctx.unprotect("c", "", "audio", "audio/opus", OPUS, 0)), "no_key");
  ctx.allowPlain("c");
  assert.equal(toHex(await ctx.protect("c", "audio", "audio/opus", OPUS)), toHex(OPUS));
  assert.equal(toHex(await ctx.unprotect("c", "", "audio", "audio/opus", OPUS, 0)), toHex(OPUS));
  const s = ctx.stats("c");
  assert.deepEqual([s.plain, s.encrypted, s.decrypted], [2, 0, 0]);
  // Another scope is not affected.
  assert.equal(await dropOf(ctx.protect("d", "audio", undefined, OPUS)), "no_key");
});

test("key frame requests: after repeated failures, at most once per interval", () => {
  const k = new KeyFrameRequests();
  assert.equal(k.failed(0), false); // one failure is not repeated
  assert.equal(k.failed(0.1), true);
  assert.equal(k.failed(0.5), false);
  assert.equal(k.failed(1.09), false);
  assert.equal(k.failed(1.1), true);
  k.opened();
  assert.equal(k.failed(5), false);
  assert.equal(k.failed(5.1), true);
  assert.equal(k.requests, 3);
});

test("frames Python's MediaKeys protected, across its key change, open here once each", async () => {
  const C = V.context;
  assert.ok(C.frames.length >= 4);
  const ctx = new FrameContexts();
  for (const { kid, key } of C.keys) await ctx.addReceiveKey("py", "", V.suite, kid, hex(key), 0);
  for (const f of C.frames) {
    const kind = f.codec === "opus" ? "audio" : "video";
    const plain = await ctx.unprotect("py", "", kind, undefined, hex(f.protected), 1);
    assert.equal(toHex(plain), f.frame, `${f.codec} kid ${f.kid}`);
  }
  for (const f of C.frames) {
    const kind = f.codec === "opus" ? "audio" : "video";
    assert.equal(await dropOf(ctx.unprotect("py", "", kind, undefined, hex(f.protected), 1)), "replay");
  }
  // The context sends the same bytes as Python for the same keys and counters.
  const send = new FrameContexts();
  for (const { kid, key } of C.keys) {
    await send.setSendKey("js", V.suite, kid, hex(key));
    for (const f of C.frames.filter((x) => x.kid === kid)) {
      const kind = f.codec === "opus" ? "audio" : "video";
      assert.equal(toHex(await send.protect("js", kind, undefined, hex(f.frame))), f.protected);
    }
  }
});

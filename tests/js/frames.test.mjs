// The JavaScript codec-aware frame protection against frames the Python side protected
// (tests/js/data/frame-vectors.json, made by tests/js/make_frame_vectors.py from real Opus,
// VP8 and H.264 frames): the same bytes out, Python's frames decrypted, bad frames refused.
// Run: node --test tests/js/
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

if (!globalThis.crypto?.subtle) {
  Object.defineProperty(globalThis, "crypto", { value: (await import("node:crypto")).webcrypto });
}
const { AuthenticationError, SFrameError, UnknownKeyError, deriveKeys } = await import(
  "../../src/sealcall/web/static/sframe.js"
);
const {
  FrameFormatError,
  codecFromMime,
  h264Escape,
  h264HasIdr,
  h264SplitClear,
  h264Unescape,
  protectFrame,
  unprotectFrame,
  vp8IsKeyFrame,
} = await import("../../src/sealcall/web/static/frames.js");

const V = JSON.parse(readFileSync(new URL("./data/frame-vectors.json", import.meta.url), "utf8"));
const hex = (s) => Uint8Array.from(Buffer.from(s, "hex"));
const toHex = (b) => Buffer.from(b).toString("hex");
const KEYS = await deriveKeys(V.suite, hex(V.base_key), V.kid);
const CODECS = ["opus", "vp8", "h264"];

for (const codec of CODECS) {
  test(`${codec}: JS protects real frames to the same bytes as Python`, async () => {
    assert.ok(V[codec].length >= 3);
    for (const v of V[codec]) {
      const out = await protectFrame(codec, V.suite, KEYS, V.kid, v.ctr, hex(v.frame));
      assert.equal(toHex(out), v.protected, `${codec} ctr ${v.ctr}`);
    }
  });

  test(`${codec}: JS decrypts Python's protected frames to the original frame`, async () => {
    for (const v of V[codec]) {
      const got = await unprotectFrame(codec, V.suite, KEYS, hex(v.protected));
      assert.equal(toHex(got.frame), v.frame);
      assert.equal(got.kid, BigInt(V.kid));
      assert.equal(got.ctr, BigInt(v.ctr));
    }
  });

  test(`${codec}: a flipped byte anywhere is an SFrameError, never a frame`, async () => {
    const data = hex(V[codec][0].protected);
    // Every position of a short frame's head and tail, and a stride through the rest.
    const positions = new Set();
    for (let i = 0; i < Math.min(40, data.length); i++) positions.add(i);
    for (let i = Math.max(0, data.length - 20); i < data.length; i++) positions.add(i);
    for (let i = 0; i < data.length; i += 97) positions.add(i);
    for (const i of positions) {
      const bad = Uint8Array.from(data);
      bad[i] ^= 0x01;
      await assert.rejects(
        unprotectFrame(codec, V.suite, KEYS, bad),
        (e) => e instanceof SFrameError,
        `${codec} byte ${i}`,
      );
    }
  });

  test(`${codec}: truncated frames are SFrameErrors`, async () => {
    const data = hex(V[codec][0].protected);
    for (const n of [0, 1, 2, 5, 9, 12, data.length - 17, data.length - 1]) {
      await assert.rejects(
        unprotectFrame(codec, V.suite, KEYS, data.subarray(0, n)),
        (e) => e instanceof SFrameError,
        `${codec} truncated to ${n}`,
      );
    }
  });

  test(`${codec}: a frame protected for one codec does not open as another`, async () => {
    const other = CODECS[(CODECS.indexOf(codec) + 1) % CODECS.length];
    await assert.rejects(
      unprotectFrame(other, V.suite, KEYS, hex(V[codec][1].protected)),
      (e) => e instanceof SFrameError,
    );
  });
}

test("clear prefixes: Opus TOC, VP8 10 bytes on key frames and 3 on delta frames", async () => {
  const opus = V.opus[0];
  assert.equal(opus.protected.slice(0, 2), opus.frame.slice(0, 2));
  assert.notEqual(opus.protected.slice(2, 4), opus.frame.slice(2, 4));
  const key = V.vp8.find((v) => vp8IsKeyFrame(hex(v.frame)));
  const delta = V.vp8.find((v) => !vp8IsKeyFrame(hex(v.frame)));
  assert.ok(key && delta);
  assert.equal(key.protected.slice(0, 20), key.frame.slice(0, 20));
  assert.equal(delta.protected.slice(0, 6), delta.frame.slice(0, 6));
  const sealed = await protectFrame("vp8", V.suite, KEYS, V.kid, 7, hex(key.frame));
  assert.equal(toHex(sealed.subarray(0, 10)), key.frame.slice(0, 20));
  assert.ok(vp8IsKeyFrame(sealed));
  assert.ok(h264HasIdr(hex(V.h264[0].protected)));
  assert.ok(!h264HasIdr(hex(V.h264[1].protected)));
});

test("H.264: the escaped ciphertext holds no start code and ends with the stop byte", () => {
  for (const v of V.h264) {
    const data = hex(v.protected);
    const { length } = h264SplitClear(hex(v.frame));
    assert.equal(toHex(data.subarray(0, length)), v.frame.slice(0, 2 * length));
    for (let i = length; i + 2 < data.length; i++) {
      assert.ok(!(data[i] === 0 && data[i + 1] === 0 && data[i + 2] <= 3), `00 00 0x at ${i}`);
    }
    assert.equal(data[data.length - 1], 0x80);
  }
});

test("H.264 emulation prevention matches Python's escape and round-trips", () => {
  assert.ok(V.h264_escape.length >= 4);
  for (const v of V.h264_escape) {
    assert.equal(toHex(h264Escape(hex(v.data))), v.escaped);
    assert.equal(toHex(h264Unescape(hex(v.escaped))), v.data);
    // Trailing zeros (a depacketizer's start-code bytes) are dropped before the stop byte.
    assert.equal(toHex(h264Unescape(hex(v.escaped + "0000"))), v.data);
  }
  assert.throws(() => h264Unescape(hex("00000300")), FrameFormatError);
  assert.throws(() => h264Unescape(new Uint8Array(0)), FrameFormatError);
});

test("H.264: a depacketizer's 4-byte start codes and trailing zeros still decrypt", async () => {
  // The metadata is the clear part in canonical form, so rewriting its start codes is harmless.
  const v = V.h264[0];
  const data = hex(v.protected);
  const { length } = h264SplitClear(data);
  const clear = [0];
  for (let i = 0; i < length; i++) {
    if (data[i] === 0 && data[i + 1] === 0 && data[i + 2] === 1) clear.push(0);
    clear.push(data[i]);
  }
  assert.ok(clear.length > length + 2, "the clear part has several start codes");
  const rest = data.subarray(length);
  const rewritten = Uint8Array.from([...clear, ...rest, 0, 0]);
  const got = await unprotectFrame("h264", V.suite, KEYS, rewritten);
  assert.equal(toHex(got.frame), toHex(clear) + v.frame.slice(2 * length));
  // The canonical metadata still authenticates the clear part: a changed SPS byte fails.
  rewritten[6] ^= 0x01;
  await assert.rejects(unprotectFrame("h264", V.suite, KEYS, rewritten), AuthenticationError);
});

test("bad input: unknown codec, bad H.264, wrong key", async () => {
  const refused = [
    ["vp9", "00"], // no such codec
    ["opus", ""], // empty
    ["vp8", "00112233"], // a key frame tag but not its 10 bytes
    ["h264", "6742001f"], // no start code
    ["h264", "ff00000165aa"], // bytes before the first start code
    ["h264", "00000100"], // a NAL unit without a header byte
  ];
  for (const [codec, frame] of refused) {
    await assert.rejects(
      protectFrame(codec, V.suite, KEYS, V.kid, 0, hex(frame)),
      FrameFormatError,
      `${codec} ${frame}`,
    );
  }
  const otherKeys = await deriveKeys(V.suite, hex("ff".repeat(16)), V.kid);
  await assert.rejects(
    unprotectFrame("vp8", V.suite, otherKeys, hex(V.vp8[0].protected)),
    AuthenticationError,
  );
  await assert.rejects(
    unprotectFrame("opus", V.suite, () => undefined, hex(V.opus[0].protected)),
    UnknownKeyError,
  );
  assert.equal(codecFromMime("video/VP8"), "vp8");
  assert.equal(codecFromMime("audio/opus"), "opus");
  assert.equal(codecFromMime("video/H264"), "h264");
  assert.throws(() => codecFromMime("video/AV1"), FrameFormatError);
});

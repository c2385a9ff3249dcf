// The JavaScript SFrame against every RFC 9605 test vector (the same file as
// tests/test_rfc9605_vectors.py reads), plus tampering and bad-input cases.
// Run: node --test tests/js/
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

// Node 20 has WebCrypto as globalThis.crypto, like a browser; Node 18 (Debian 12's own) has
// it only as node:crypto's webcrypto, so lend it before the module is loaded.
if (!globalThis.crypto?.subtle) {
  Object.defineProperty(globalThis, "crypto", { value: (await import("node:crypto")).webcrypto });
}
const {
  AuthenticationError,
  HeaderError,
  SFrameError,
  SUITES,
  SuiteError,
  UnknownKeyError,
  aeadDecrypt,
  aeadEncrypt,
  decodeHeader,
  decrypt,
  deriveKeys,
  encodeHeader,
  encrypt,
  importSuiteKey,
  suiteParams,
} = await import("../../src/sealcall/web/static/sframe.js");

// KIDs and CTRs reach 2**64 - 1: quote them before JSON.parse so no digit is lost to a double.
const raw = readFileSync(new URL("../data/rfc9605-test-vectors.json", import.meta.url), "utf8");
const VECTORS = JSON.parse(raw.replace(/"(kid|ctr)":\s*(\d+)/g, '"$1": "$2"'));
const HEADER = VECTORS.header;
const AEAD = VECTORS.aes_ctr_hmac;
const SFRAME = VECTORS.sframe;

const hex = (s) => Uint8Array.from(Buffer.from(s, "hex"));
const toHex = (b) => Buffer.from(b).toString("hex");

test("the vector file holds 289 header, 3 AES-CTR+HMAC and 5 SFrame vectors", () => {
  assert.deepEqual([HEADER.length, AEAD.length, SFRAME.length], [289, 3, 5]);
});

test("suite table: ids 1..5 with the RFC 9605 sizes", () => {
  const sizes = Object.values(SUITES).map((s) => [s.id, s.nk, s.nn, s.nt, s.nh]);
  assert.deepEqual(sizes, [
    [1, 48, 12, 10, 32],
    [2, 48, 12, 8, 32],
    [3, 48, 12, 4, 32],
    [4, 16, 12, 16, 32],
    [5, 32, 12, 16, 64],
  ]);
});

test("every header vector encodes and decodes byte for byte", () => {
  for (const v of HEADER) {
    const kid = BigInt(v.kid);
    const ctr = BigInt(v.ctr);
    const encoded = hex(v.encoded);
    assert.equal(toHex(encodeHeader(kid, ctr)), v.encoded, `encode kid=${kid} ctr=${ctr}`);
    assert.deepEqual(decodeHeader(encoded), { kid, ctr, length: encoded.length });
    // Trailing payload bytes are not part of the header.
    const withPayload = Uint8Array.from([...encoded, 0xff, 0x00]);
    assert.deepEqual(decodeHeader(withPayload), { kid, ctr, length: encoded.length });
  }
});

test("KIDs and counters 0..7 sit in the config byte; 8 and up follow it", () => {
  // The RFC vectors hold only 0, 1 and powers of 256 around the byte limits, not 2..7.
  assert.equal(toHex(encodeHeader(7, 3)), "73");
  assert.equal(toHex(encodeHeader(5n, 6n)), "56");
  assert.equal(toHex(encodeHeader(7, 8)), "7808");
  assert.equal(toHex(encodeHeader(8, 7)), "8708");
  const values = [0n, 1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n, 255n, 256n, 0x10000n, (1n << 64n) - 1n];
  for (const kid of values) {
    for (const ctr of values) {
      const encoded = encodeHeader(kid, ctr);
      assert.deepEqual(decodeHeader(encoded), { kid, ctr, length: encoded.length });
    }
  }
});

test("every AES-CTR+HMAC vector (RFC 9605 section 4.5.1) seals and opens", async () => {
  for (const v of AEAD) {
    const params = suiteParams(v.cipher_suite);
    assert.equal(v.key, v.enc_key + v.auth_key);
    const aead = await importSuiteKey(v.cipher_suite, hex(v.key));
    const [nonce, aad, pt] = [hex(v.nonce), hex(v.aad), hex(v.pt)];
    assert.equal(toHex(await aeadEncrypt(params, aead, nonce, aad, pt)), v.ct, `suite ${v.cipher_suite}`);
    assert.equal(toHex(await aeadDecrypt(params, aead, nonce, aad, hex(v.ct))), v.pt);
  }
});

test("every SFrame vector: key, salt, ciphertext and plaintext for all five suites", async () => {
  assert.deepEqual(SFRAME.map((v) => v.cipher_suite), [1, 2, 3, 4, 5]);
  for (const v of SFRAME) {
    const suite = v.cipher_suite;
    const kid = BigInt(v.kid);
    const ctr = BigInt(v.ctr);
    const keys = await deriveKeys(suite, hex(v.base_key), kid);
    assert.equal(toHex(keys.key), v.sframe_key, `sframe_key suite ${suite}`);
    assert.equal(toHex(keys.salt), v.sframe_salt, `sframe_salt suite ${suite}`);
    const ct = await encrypt(suite, keys, kid, ctr, hex(v.metadata), hex(v.pt));
    assert.equal(toHex(ct), v.ct, `ct suite ${suite}`);
    const opened = await decrypt(suite, keys, hex(v.metadata), hex(v.ct));
    assert.deepEqual(opened, { kid, ctr, plaintext: hex(v.pt) });
    // A receiver holding several KIDs looks the keys up by the frame's KID.
    const byKid = await decrypt(suite, (k) => (k === kid ? keys : undefined), hex(v.metadata), hex(v.ct));
    assert.equal(toHex(byKid.plaintext), v.pt);
  }
});

test("a flipped byte anywhere in header, ciphertext or tag, or in the metadata, fails authentication", async () => {
  for (const v of SFRAME) {
    const keys = await deriveKeys(v.cipher_suite, hex(v.base_key), BigInt(v.kid));
    const frame = hex(v.ct);
    const { length } = decodeHeader(frame);
    // Every byte after the header (ciphertext and tag); header bytes would change the KID and
    // so miss the key, which the next test covers.
    for (let i = length; i < frame.length; i++) {
      const bad = Uint8Array.from(frame);
      bad[i] ^= 0x01;
      await assert.rejects(decrypt(v.cipher_suite, keys, hex(v.metadata), bad), AuthenticationError, `byte ${i}`);
    }
    const metadata = hex(v.metadata);
    metadata[0] ^= 0x80;
    await assert.rejects(decrypt(v.cipher_suite, keys, metadata, frame), AuthenticationError);
    const longer = Uint8Array.from([...hex(v.metadata), 0x78]);
    await assert.rejects(decrypt(v.cipher_suite, keys, longer, frame), AuthenticationError);
    // A frame cut inside its tag is refused, not opened.
    const cut = frame.subarray(0, length + 2);
    await assert.rejects(decrypt(v.cipher_suite, keys, hex(v.metadata), cut), AuthenticationError);
  }
});

test("a changed counter in the header fails authentication; a changed KID has no key", async () => {
  const v = SFRAME[3];
  const keys = await deriveKeys(v.cipher_suite, hex(v.base_key), BigInt(v.kid));
  const frame = hex(v.ct);
  const { length } = decodeHeader(frame);
  const badCtr = Uint8Array.from(frame);
  badCtr[length - 1] ^= 0x01;
  await assert.rejects(decrypt(v.cipher_suite, keys, hex(v.metadata), badCtr), AuthenticationError);
  const badKid = Uint8Array.from(frame);
  badKid[1] ^= 0x01;
  await assert.rejects(decrypt(v.cipher_suite, keys, hex(v.metadata), badKid), UnknownKeyError);
  await assert.rejects(decrypt(v.cipher_suite, () => undefined, hex(v.metadata), frame), UnknownKeyError);
});

test("a truncated or empty header is refused with HeaderError", async () => {
  assert.throws(() => decodeHeader(new Uint8Array(0)), HeaderError);
  for (const v of HEADER) {
    const encoded = hex(v.encoded);
    for (let cut = 0; cut < encoded.length; cut++) {
      assert.throws(() => decodeHeader(encoded.subarray(0, cut)), HeaderError, `${v.encoded} cut to ${cut}`);
    }
  }
  const v = SFRAME[0];
  const keys = await deriveKeys(v.cipher_suite, hex(v.base_key), BigInt(v.kid));
  await assert.rejects(decrypt(v.cipher_suite, keys, hex(v.metadata), hex(v.ct).subarray(0, 2)), HeaderError);
});

test("out-of-range KID and CTR are refused", () => {
  for (const [kid, ctr] of [[-1, 0], [0, -1n], [1n << 64n, 0], [0, 2 ** 60], [0.5, 0], ["1", 0]]) {
    assert.throws(() => encodeHeader(kid, ctr), HeaderError, `kid=${kid} ctr=${ctr}`);
  }
});

test("unknown suites are refused, and keys of one suite never serve another", async () => {
  for (const suite of [0, 6, 0xffff, "4", undefined, "__proto__", "toString"]) {
    assert.throws(() => suiteParams(suite), SuiteError, String(suite));
    await assert.rejects(deriveKeys(suite, new Uint8Array(16), 1), SuiteError);
    await assert.rejects(decrypt(suite, {}, new Uint8Array(0), Uint8Array.of(0x00)), SuiteError);
  }
  const keys = await deriveKeys(4, new Uint8Array(16).fill(7), 1);
  await assert.rejects(encrypt(5, keys, 1, 0, new Uint8Array(0), new Uint8Array(4)), SuiteError);
  await assert.rejects(encrypt(4, keys, 2, 0, new Uint8Array(0), new Uint8Array(4)), SuiteError);
  await assert.rejects(deriveKeys(4, new Uint8Array(0), 1), SuiteError);
  await assert.rejects(importSuiteKey(1, new Uint8Array(16)), SuiteError);
});

test("all errors are SFrameErrors with a clear message", async () => {
  const errors = [];
  for (const run of [
    () => decodeHeader(Uint8Array.of(0x88, 0x01)),
    () => suiteParams(9),
  ]) {
    try {
      run();
    } catch (e) {
      errors.push(e);
    }
  }
  assert.equal(errors.length, 2);
  assert.ok(errors.every((e) => e instanceof SFrameError));
  assert.match(errors[0].message, /truncated SFrame header: needs 3 bytes, frame has 2/);
  assert.equal(errors[0].name, "HeaderError");
  assert.match(errors[1].message, /unknown SFrame cipher suite 9/);
});

test("round trip for every suite with a large KID and counter", async () => {
  const kid = (1n << 64n) - 1n;
  const ctr = 0x0123456789abcdefn;
  for (const suite of [1, 2, 3, 4, 5]) {
    const keys = await deriveKeys(suite, new TextEncoder().encode("base"), kid);
    const pt = new Uint8Array(1500).map((_, i) => i & 0xff);
    const frame = await encrypt(suite, keys, kid, ctr, Uint8Array.of(1, 2, 3), pt);
    assert.equal(frame.length, 17 + pt.length + SUITES[suite].nt);
    const opened = await decrypt(suite, keys, Uint8Array.of(1, 2, 3), frame);
    assert.deepEqual(opened, { kid, ctr, plaintext: pt });
  }
});

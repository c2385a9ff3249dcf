// SFrame (RFC 9605) for the web client: the same wire format, suites and KIDs as
// src/sealcall/sframe/ on the Python side, checked by the same RFC 9605 test vectors.
//
// An ES module with no dependencies and no build step. It uses only WebCrypto
// (`crypto.subtle`: AES-GCM, AES-CTR, HMAC, HKDF), so the same file runs in the page's
// RTCRtpScriptTransform worker and in Node 20 (`node --test tests/js/`).
//
// KIDs and counters go up to 2**64 - 1, past Number's exact range, so they are BigInts
// inside; the functions accept a Number (a safe integer) or a BigInt and return BigInts.

// Undefined outside a secure context (a page served over plain http from a non-local host).
const subtle = globalThis.crypto?.subtle;
const MAX_VALUE = (1n << 64n) - 1n;
const EMPTY = new Uint8Array(0);
const TEXT = new TextEncoder();

// ---------------------------------------------------------------------------------------
// Errors: every failure is an SFrameError, so a caller drops a bad frame with one catch and
// never sees a plaintext for a frame that did not authenticate.

export class SFrameError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}
/** A header is truncated, or a KID/CTR is out of range. */
export class HeaderError extends SFrameError {}
/** An unknown cipher suite id, a key of the wrong shape, or keys made for another suite. */
export class SuiteError extends SFrameError {}
/** A frame names a KID for which no keys were given. */
export class UnknownKeyError extends SFrameError {
  constructor(kid) {
    super(`no key for KID ${kid}`);
    this.kid = kid;
  }
}
/** The tag did not verify: wrong key, wrong metadata, or a tampered frame. */
export class AuthenticationError extends SFrameError {}

// ---------------------------------------------------------------------------------------
// Cipher suites (RFC 9605 section 4.5, IANA "SFrame Cipher Suites"). Sizes in bytes; ke is
// the AES key inside Nk for the AES-CTR + HMAC suites (the rest of Nk is the HMAC key).

const suite = (id, name, hash, nh, nk, nt, ke) =>
  Object.freeze({ id, name, hash, nh, nk, nn: 12, nt, ke });

export const SUITES = Object.freeze({
  1: suite(1, "AES_128_CTR_HMAC_SHA256_80", "SHA-256", 32, 48, 10, 16),
  2: suite(2, "AES_128_CTR_HMAC_SHA256_64", "SHA-256", 32, 48, 8, 16),
  3: suite(3, "AES_128_CTR_HMAC_SHA256_32", "SHA-256", 32, 48, 4, 16),
  4: suite(4, "AES_128_GCM_SHA256_128", "SHA-256", 32, 16, 16, 0),
  5: suite(5, "AES_256_GCM_SHA512_128", "SHA-512", 64, 32, 16, 0),
});

/** The sizes of `suite` (1..5); SuiteError for any other id. */
export function suiteParams(suite) {
  // A Number id only: "4" or an inherited property name is a caller's mistake, not suite 4.
  const known = typeof suite === "number" && Object.hasOwn(SUITES, suite);
  const params = known ? SUITES[suite] : undefined;
  if (params === undefined) throw new SuiteError(`unknown SFrame cipher suite ${String(suite)}`);
  return params;
}

// ---------------------------------------------------------------------------------------
// Byte helpers.

/** `data` as a Uint8Array (no copy); a TypeError names `what` if it is not bytes. */
export function bytes(data, what) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) {
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  throw new TypeError(`${what} must be bytes (Uint8Array, ArrayBuffer or a view)`);
}

/** The byte arrays `parts`, one after the other, in a new Uint8Array. */
export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** `value` (a BigInt < 2**(8*length)) as `length` big-endian bytes. */
function bigEndian(value, length) {
  const out = new Uint8Array(length);
  for (let i = length - 1; i >= 0; i--, value >>= 8n) out[i] = Number(value & 0xffn);
  return out;
}

function toUint64(value, name) {
  if (typeof value === "number" && !Number.isSafeInteger(value)) {
    throw new HeaderError(`${name} must be an integer (a BigInt above 2**53), got ${value}`);
  }
  if (typeof value !== "number" && typeof value !== "bigint") {
    throw new HeaderError(`${name} must be a Number or BigInt, got ${typeof value}`);
  }
  const big = BigInt(value);
  if (big < 0n || big > MAX_VALUE) {
    throw new HeaderError(`${name} must be in 0 .. 2**64-1, got ${big}`);
  }
  return big;
}

// ---------------------------------------------------------------------------------------
// Header (RFC 9605 section 4.3): config byte `X K K K Y C C C`, then the KID and CTR in
// big-endian. With X = 0 the KID (< 8) sits in K; with X = 1, K + 1 KID bytes follow; Y/C
// do the same for the counter.

function field(value) {
  if (value < 8n) return [Number(value), EMPTY];
  let length = 1;
  while (value >> BigInt(8 * length) > 0n) length++;
  return [0x08 | (length - 1), bigEndian(value, length)];
}

/** The header for `kid` and `ctr` (each 0 .. 2**64-1), in minimal form. */
export function encodeHeader(kid, ctr) {
  const [kidNibble, kidBytes] = field(toUint64(kid, "KID"));
  const [ctrNibble, ctrBytes] = field(toUint64(ctr, "CTR"));
  return concat(Uint8Array.of((kidNibble << 4) | ctrNibble), kidBytes, ctrBytes);
}

/**
 * Parse the header at the start of `data`: `{kid, ctr, length}` (BigInt, BigInt, Number).
 * Any length encoding is accepted, as on the Python side: the header is authenticated as
 * AAD, so a non-minimal form cannot forge anything. HeaderError when it is cut short.
 */
export function decodeHeader(data) {
  const buf = bytes(data, "frame");
  if (buf.length === 0) throw new HeaderError("empty frame: no SFrame header");
  const config = buf[0];
  let end = 1;
  const read = (flag, low) => {
    if (!(config & flag)) return BigInt(low);
    const length = low + 1;
    if (end + length > buf.length) {
      const needs = `needs ${end + length} bytes, frame has ${buf.length}`;
      throw new HeaderError(`truncated SFrame header: ${needs}`);
    }
    let value = 0n;
    for (let i = 0; i < length; i++) value = (value << 8n) | BigInt(buf[end + i]);
    end += length;
    return value;
  };
  const kid = read(0x80, (config >> 4) & 0x07);
  const ctr = read(0x08, config & 0x07);
  return { kid, ctr, length: end };
}

// ---------------------------------------------------------------------------------------
// Key schedule (RFC 9605 section 4.4.2). HKDF with an empty salt, as the RFC says; WebCrypto's
// HKDF does Extract and Expand in one call, so each output is one deriveBits.

const KEY_LABEL = TEXT.encode("SFrame 1.0 Secret key ");
const SALT_LABEL = TEXT.encode("SFrame 1.0 Secret salt ");

function requireWebCrypto() {
  if (!subtle) {
    throw new SFrameError("WebCrypto (crypto.subtle) is not available: no frame can be encrypted");
  }
}

async function hkdf(params, ikm, info, length) {
  const key = await subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  const algorithm = { name: "HKDF", hash: params.hash, salt: EMPTY, info };
  const bits = await subtle.deriveBits(algorithm, key, 8 * length);
  return new Uint8Array(bits);
}

/**
 * Derive the keys of `kid` from `baseKey` for `suite`: `{suite, kid, key, salt}` (raw
 * sframe_key and sframe_salt, for vectors) plus the imported WebCrypto keys that encrypt and
 * decrypt use, so a frame costs no key derivation.
 */
export async function deriveKeys(suite, baseKey, kid) {
  requireWebCrypto();
  const params = suiteParams(suite);
  const base = bytes(baseKey, "base key");
  if (base.length === 0) throw new SuiteError("base key must be non-empty bytes");
  const kidBig = toUint64(kid, "KID");
  // The context is KID (8 bytes) || suite id (2 bytes), both big-endian.
  const context = concat(bigEndian(kidBig, 8), bigEndian(BigInt(params.id), 2));
  const key = await hkdf(params, base, concat(KEY_LABEL, context), params.nk);
  const salt = await hkdf(params, base, concat(SALT_LABEL, context), params.nn);
  const aead = await importAead(params, key);
  return Object.freeze({ suite: params.id, kid: kidBig, key, salt, aead });
}

// ---------------------------------------------------------------------------------------
// The AEADs. AES-GCM is WebCrypto's own; the AES-CTR + HMAC suites compose AES-CTR and a
// truncated HMAC exactly as RFC 9605 section 4.5.1 says.

async function importAead(params, key) {
  if (!params.ke) {
    return { gcm: await subtle.importKey("raw", key, "AES-GCM", false, ["encrypt", "decrypt"]) };
  }
  const [encKey, authKey] = [key.subarray(0, params.ke), key.subarray(params.ke)];
  const ctr = await subtle.importKey("raw", encKey, "AES-CTR", false, ["encrypt"]);
  const hmac = { name: "HMAC", hash: params.hash };
  const mac = await subtle.importKey("raw", authKey, hmac, false, ["sign"]);
  return { ctr, mac };
}

async function ctrTag(params, aead, nonce, aad, ct) {
  // The HMAC input: len(AAD) || len(CT) || Nt (8 bytes each) || nonce || AAD || CT.
  const u64 = (n) => bigEndian(BigInt(n), 8);
  const lengths = concat(u64(aad.length), u64(ct.length), u64(params.nt));
  const mac = await subtle.sign("HMAC", aead.mac, concat(lengths, nonce, aad, ct));
  return new Uint8Array(mac, 0, params.nt);
}

async function aesCtr(aead, nonce, data) {
  // The initial counter block is the 12-byte nonce then a 32-bit zero block counter; 32 counter
  // bits cover 64 GiB per frame, far above any media frame.
  const counter = concat(nonce, new Uint8Array(4));
  const algorithm = { name: "AES-CTR", counter, length: 32 };
  return new Uint8Array(await subtle.encrypt(algorithm, aead.ctr, data));
}

const gcm = (nonce, aad) => ({ name: "AES-GCM", iv: nonce, additionalData: aad, tagLength: 128 });

/** AEAD encryption with the suite's algorithm: `ciphertext || tag` (exported for 4.5.1 vectors). */
export async function aeadEncrypt(params, aead, nonce, aad, plaintext) {
  if (aead.gcm) return new Uint8Array(await subtle.encrypt(gcm(nonce, aad), aead.gcm, plaintext));
  const ct = await aesCtr(aead, nonce, plaintext);
  return concat(ct, await ctrTag(params, aead, nonce, aad, ct));
}

/** AEAD decryption: the plaintext, or AuthenticationError; no plaintext before the tag checks. */
export async function aeadDecrypt(params, aead, nonce, aad, body) {
  if (body.length < params.nt) {
    throw new AuthenticationError(`frame shorter than its ${params.nt}-byte tag`);
  }
  if (aead.gcm) {
    try {
      return new Uint8Array(await subtle.decrypt(gcm(nonce, aad), aead.gcm, body));
    } catch {
      throw new AuthenticationError("SFrame authentication tag mismatch");
    }
  }
  const ct = body.subarray(0, body.length - params.nt);
  const tag = body.subarray(body.length - params.nt);
  const expected = await ctrTag(params, aead, nonce, aad, ct);
  // Compare every byte whatever the first difference, so timing tells nothing about the tag.
  let diff = 0;
  for (let i = 0; i < tag.length; i++) diff |= tag[i] ^ expected[i];
  if (diff !== 0) throw new AuthenticationError("SFrame authentication tag mismatch");
  return aesCtr(aead, nonce, ct);
}

/** Import a raw Nk-byte sframe_key as the suite's AEAD (for the section 4.5.1 vectors). */
export async function importSuiteKey(suite, key) {
  requireWebCrypto();
  const params = suiteParams(suite);
  const raw = bytes(key, "key");
  if (raw.length !== params.nk) {
    throw new SuiteError(`suite ${params.name} needs a ${params.nk}-byte key, got ${raw.length}`);
  }
  return importAead(params, raw);
}

// ---------------------------------------------------------------------------------------
// Frames (RFC 9605 sections 4.4.3 - 4.4.5).

function nonceFor(params, salt, ctr) {
  // The nonce is the salt XOR the counter, left-padded to Nn bytes.
  const nonce = Uint8Array.from(salt);
  const ctrBytes = bigEndian(ctr, 8);
  for (let i = 0; i < 8; i++) nonce[params.nn - 8 + i] ^= ctrBytes[i];
  return nonce;
}

function checkKeys(params, keys) {
  if (!keys || !keys.aead || !(keys.salt instanceof Uint8Array)) {
    throw new SuiteError("keys must come from deriveKeys()");
  }
  if (keys.suite !== params.id) {
    throw new SuiteError(`keys were derived for suite ${keys.suite}, not suite ${params.id}`);
  }
}

/**
 * Encrypt one frame: `header || ciphertext || tag`. `metadata` is authenticated (with the
 * header, as AAD) but not sent. `keys` comes from deriveKeys(suite, baseKey, kid).
 */
export async function encrypt(suite, keys, kid, ctr, metadata, plaintext) {
  const params = suiteParams(suite);
  checkKeys(params, keys);
  const kidBig = toUint64(kid, "KID");
  if (kidBig !== keys.kid) {
    throw new SuiteError(`keys were derived for KID ${keys.kid}, not KID ${kidBig}`);
  }
  const ctrBig = toUint64(ctr, "CTR");
  const header = encodeHeader(kidBig, ctrBig);
  const aad = concat(header, bytes(metadata, "metadata"));
  const nonce = nonceFor(params, keys.salt, ctrBig);
  const body = await aeadEncrypt(params, keys.aead, nonce, aad, bytes(plaintext, "plaintext"));
  return concat(header, body);
}

/**
 * Decrypt one frame: `{kid, ctr, plaintext}`. `keys` is the result of deriveKeys for the
 * frame's KID, or a function `kid -> keys | undefined` for a receiver that holds several.
 * Raises HeaderError, UnknownKeyError, SuiteError or AuthenticationError.
 */
export async function decrypt(suite, keys, metadata, frame) {
  const params = suiteParams(suite);
  const data = bytes(frame, "frame");
  const { kid, ctr, length } = decodeHeader(data);
  const found = typeof keys === "function" ? keys(kid) : keys;
  if (found === undefined || found === null || (found.kid !== undefined && found.kid !== kid)) {
    throw new UnknownKeyError(kid);
  }
  checkKeys(params, found);
  const header = data.subarray(0, length);
  const aad = concat(header, bytes(metadata, "metadata"));
  const nonce = nonceFor(params, found.salt, ctr);
  const plaintext = await aeadDecrypt(params, found.aead, nonce, aad, data.subarray(length));
  return { kid, ctr, plaintext };
}

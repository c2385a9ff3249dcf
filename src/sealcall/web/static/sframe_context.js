// The SFrame state of the web client's worker, without I/O: what the Python side keeps in
// sframe/sender.py, receiver.py, replay.py, media/keys.py and e2ee/group_key_ring.py, for
// the frames of RTCRtpScriptTransform (e2ee_worker.js binds it to the streams and messages).
//
// - A scope (a 1:1 call id or a group room id) has one send context: the current key and one
//   counter that never goes back, shared by every transform sending under the scope (several
//   RTCRtpSenders may send under one key: a repeated KID+CTR would reuse a nonce).
// - A scope has one receive ring per sender ("" in a 1:1 call, the pair id in a group): keys
//   by KID, a replay window of 1024 counters per key, a grace window for replaced keys.
// - Every frame that cannot be protected or opened is a FrameDrop with a reason, counted;
//   nothing is ever passed in the clear unless the scope was explicitly allowed plain media.
//
// Time is given in (`now`, seconds), so tests control it. Key bytes are never logged.
import {
  AuthenticationError,
  SuiteError,
  UnknownKeyError,
  bytes,
  deriveKeys,
  suiteParams,
} from "./sframe.js";
import { codecFromMime, protectFrame, unprotectFrame } from "./frames.js";

/** Seconds a replaced or older receive key stays usable (media/keys.py DEFAULT_GRACE_PERIOD). */
export const GRACE_PERIOD = 2.0;
/** How far out of order a frame may arrive, in counters (as SFrameReceiver's default). */
// As sframe/replay.py: one sender's audio and video layers share a counter (about 110 a second
// through an SFU) and a video frame is decrypted only once whole, maybe seconds after its audio;
// 128 counters refused late video frames as replays.
export const REPLAY_WINDOW = 1024;
/** At most this many KIDs in one sender's ring; the oldest retired ones go first. */
export const MAX_KIDS_PER_RING = 16;
/** At most this many senders per scope (a group call's members: group_keys.py). */
export const MAX_SENDERS_PER_SCOPE = 128;
/** At most this many scopes (calls and rooms) at once in one worker. */
export const MAX_SCOPES = 64;
/** Longest scope or sender id, in characters (the page socket's id limit). */
export const MAX_ID_LENGTH = 255;
/** Longest base key, in bytes (the suites use 16 to 64). */
export const MAX_KEY_BYTES = 128;
/** Seconds between two key frame requests of one receiver (media/crypto_taps.py). */
export const KEY_FRAME_REQUEST_INTERVAL = 1.0;
/** Why a frame was dropped; the stats count each. */
export const DROP_REASONS = Object.freeze(["no_key", "auth", "replay", "malformed", "unencrypted"]);
export const KINDS = Object.freeze(["audio", "video"]);

const MAX_CTR = (1n << 64n) - 1n;
// Group KIDs are key indices mod 256 (e2ee/group_keys.py KEY_INDEX_COUNT): a KID is newer if
// it is less than half the cycle ahead, as in group_key_ring.py _is_newer.
const KEY_INDEX_COUNT = 256n;

/**
 * A frame that was not protected or opened: `reason` is one of DROP_REASONS. `no_key`: no key
 * (yet) for it; `auth`: the tag did not verify; `replay`: its counter was seen or is too old;
 * `malformed`: too short or cut for its codec; `unencrypted`: a codec SFrame cannot protect.
 */
export class FrameDrop extends Error {
  constructor(reason, message = reason) {
    super(message);
    this.name = "FrameDrop";
    this.reason = reason;
  }
}

/** The drop reason for an error thrown by frames.js/sframe.js (anything else: malformed). */
export function dropReason(error) {
  if (error instanceof FrameDrop) return error.reason;
  if (error instanceof UnknownKeyError) return "no_key";
  if (error instanceof AuthenticationError) return "auth";
  return "malformed";
}

function asDrop(error) {
  return error instanceof FrameDrop ? error : new FrameDrop(dropReason(error), error?.message);
}

/** The frames.js codec for a frame: from its mime type, else audio = opus, video = vp8. */
export function codecFor(kind, mimeType) {
  if (typeof mimeType === "string" && mimeType !== "") {
    try {
      return codecFromMime(mimeType);
    } catch {
      throw new FrameDrop("unencrypted", `frames of ${mimeType} cannot be end-to-end encrypted`);
    }
  }
  return kind === "audio" ? "opus" : "vp8";
}

function isNewer(kid, than) {
  const ahead = (((kid - than) % KEY_INDEX_COUNT) + KEY_INDEX_COUNT) % KEY_INDEX_COUNT;
  return ahead < KEY_INDEX_COUNT / 2n;
}

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

// ---------------------------------------------------------------------------------------
// Replay window (sframe/replay.py): check a counter, accept it only after its tag verified.

/** Accepts each counter at most once, and none more than `size` below the highest seen. */
export class ReplayWindow {
  constructor(size = REPLAY_WINDOW) {
    if (!Number.isSafeInteger(size) || size < 1) throw new RangeError("window size must be >= 1");
    this.size = BigInt(size);
    this.mask = (1n << this.size) - 1n;
    this.highest = -1n;
    this.bits = 0n; // bit i set: counter (highest - i) was accepted
  }

  /** True if `ctr` (a BigInt) was accepted before or is too old to tell. */
  seen(ctr) {
    const offset = this.highest - ctr;
    return offset >= 0n && (offset >= this.size || ((this.bits >> offset) & 1n) === 1n);
  }

  /** Record `ctr` as received (after seen() said no and the frame authenticated). */
  accept(ctr) {
    const offset = this.highest - ctr;
    if (offset < 0n) {
      // A jump past the window clears it; shifting by the jump could need gigabytes.
      this.bits = -offset >= this.size ? 1n : ((this.bits << -offset) | 1n) & this.mask;
      this.highest = ctr;
    } else {
      this.bits |= 1n << offset;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Sending.

/** The send side of one scope: the current key and a counter that never repeats. */
export class SendContext {
  constructor() {
    this.keys = null; // from deriveKeys: {suite, kid, aead, salt, ...}
    this.nextCtr = 0n;
    this.generation = 0; // +1 per installed key, so a transform can ask for a key frame
  }

  get kid() {
    return this.keys === null ? null : this.keys.kid;
  }

  /** Encrypt from the next frame on with `keys` (from deriveKeys). The counter goes on. */
  install(keys) {
    this.keys = keys;
    this.generation += 1;
  }

  /**
   * The protected frame (`clear prefix || SFrame`), or a FrameDrop. The counter is taken
   * before the first await, so frames protected concurrently never share one; it is never
   * reset, so no (KID, CTR) repeats even when a key or KID comes back.
   */
  async protect(codec, frame) {
    const keys = this.keys;
    if (keys === null) throw new FrameDrop("no_key", "no send key yet");
    const ctr = this.nextCtr;
    if (ctr > MAX_CTR) throw new FrameDrop("no_key", "SFrame counter exhausted");
    this.nextCtr = ctr + 1n;
    try {
      return await protectFrame(codec, keys.suite, keys, keys.kid, ctr, frame);
    } catch (error) {
      throw asDrop(error);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Receiving.

function slot(keys, base) {
  return { keys, base, window: new ReplayWindow(), expiresAt: null, dead: false };
}

/**
 * The keys of one sender, by KID. The newest KID (mod 256, as group key indices) is current;
 * adding it retires every other KID for `grace` seconds. Adding another key under a KID that
 * has one keeps the replaced key for `grace` seconds too (frames in flight still open). An
 * older KID added late is usable for `grace` seconds only. At most `maxKids` KIDs.
 */
export class ReceiveRing {
  constructor({ grace = GRACE_PERIOD, maxKids = MAX_KIDS_PER_RING } = {}) {
    if (!(grace >= 0) || !Number.isSafeInteger(maxKids) || maxKids < 2) {
      throw new RangeError("grace must be >= 0 and maxKids >= 2");
    }
    this.grace = grace;
    this.maxKids = maxKids;
    this.suite = null; // one suite per ring, fixed by its first key
    this.entries = new Map(); // kid (BigInt) -> {current: slot, previous: slot | null}
    this.newest = null;
  }

  /** The KIDs frames may carry now (BigInts, ascending). */
  kids() {
    return [...this.entries.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /** Install `keys` (from deriveKeys of `base`) at time `now`; the same key again is a no-op. */
  install(keys, base, now) {
    if (this.suite !== null && keys.suite !== this.suite) {
      throw new SuiteError(`this sender's keys are for suite ${this.suite}, not ${keys.suite}`);
    }
    this.expire(now);
    this.suite = keys.suite;
    const kid = keys.kid;
    const entry = this.entries.get(kid);
    if (entry !== undefined && sameBytes(entry.current.base, base)) return;
    const fresh = slot(keys, Uint8Array.from(base));
    if (entry === undefined) {
      this.entries.set(kid, { current: fresh, previous: null });
    } else {
      if (entry.previous !== null) entry.previous.dead = true;
      entry.previous = entry.current;
      entry.previous.expiresAt = now + this.grace;
      entry.current = fresh;
    }
    if (this.newest === null || isNewer(kid, this.newest)) {
      this.newest = kid;
      for (const [other, e] of this.entries) {
        if (other !== kid && e.current.expiresAt === null) e.current.expiresAt = now + this.grace;
      }
    } else {
      fresh.expiresAt = now + this.grace; // a late older key: for frames still in flight
    }
    while (this.entries.size > this.maxKids) this.#evictOldest();
  }

  #evictOldest() {
    let oldest = null;
    for (const [kid, e] of this.entries) {
      if (kid === this.newest) continue;
      if (oldest === null || e.current.expiresAt < this.entries.get(oldest).current.expiresAt) {
        oldest = kid;
      }
    }
    this.#remove(oldest);
  }

  #remove(kid) {
    const entry = this.entries.get(kid);
    entry.current.dead = true;
    if (entry.previous !== null) entry.previous.dead = true;
    this.entries.delete(kid);
    if (this.newest === kid) this.newest = null;
  }

  /** Forget every key whose grace window ended at or before `now`. */
  expire(now) {
    for (const [kid, entry] of [...this.entries]) {
      if (entry.current.expiresAt !== null && entry.current.expiresAt <= now) {
        this.#remove(kid);
      } else if (entry.previous !== null && entry.previous.expiresAt <= now) {
        entry.previous.dead = true;
        entry.previous = null;
      }
    }
  }

  /** Forget every key at once. */
  clear() {
    for (const kid of [...this.entries.keys()]) this.#remove(kid);
  }

  /**
   * Open one protected frame of `codec` at time `now`: `{kid, ctr, frame}`, or a FrameDrop.
   * The counter is checked against the key's window and accepted in one step after the tag
   * verified (nothing awaits in between), so a forged frame never moves the window and two
   * copies of one frame opening at the same time cannot both pass.
   */
  async open(codec, data, now) {
    this.expire(now);
    if (this.suite === null) throw new FrameDrop("no_key", "no receive key yet");
    let kidSeen = null;
    let used = null;
    const lookup = (which) => (kid) => {
      kidSeen = kid;
      used = this.entries.get(kid)?.[which] ?? null;
      return used?.keys;
    };
    let opened;
    try {
      opened = await unprotectFrame(codec, this.suite, lookup("current"), data);
    } catch (error) {
      const previous = kidSeen === null ? null : this.entries.get(kidSeen)?.previous;
      if (!(error instanceof AuthenticationError) || !previous) throw asDrop(error);
      try {
        opened = await unprotectFrame(codec, this.suite, lookup("previous"), data);
      } catch (again) {
        throw asDrop(again);
      }
    }
    // The key may have been replaced, expired or forgotten while the frame was decrypting.
    if (used === null || used.dead) throw new FrameDrop("no_key", "the key was forgotten");
    if (used.window.seen(opened.ctr)) throw new FrameDrop("replay", "frame counter seen before");
    used.window.accept(opened.ctr);
    return opened;
  }
}

// ---------------------------------------------------------------------------------------
// Key frame requests (media/crypto_taps.py ReceiverTap): after repeated failures, at most one
// request per interval per receiver, so the picture recovers once the keys are right.

/** When a receiver should ask for a key frame: failed() says yes at most once per interval. */
export class KeyFrameRequests {
  constructor({ interval = KEY_FRAME_REQUEST_INTERVAL, after = 2 } = {}) {
    this.interval = interval;
    this.after = after; // consecutive failures that count as "repeated"
    this.failures = 0;
    this.lastAt = null;
    this.requests = 0;
  }

  /** A frame did not open at `now`: true if a key frame should be requested now. */
  failed(now) {
    this.failures += 1;
    if (this.failures < this.after) return false;
    if (this.lastAt !== null && now - this.lastAt < this.interval) return false;
    this.lastAt = now;
    this.requests += 1;
    return true;
  }

  /** A frame opened: the failures are no longer repeated. */
  opened() {
    this.failures = 0;
  }
}

// ---------------------------------------------------------------------------------------
// Scopes and counters.

function counters() {
  const dropped = Object.fromEntries(DROP_REASONS.map((r) => [r, 0]));
  return { sent: 0, encrypted: 0, received: 0, decrypted: 0, plain: 0, dropped };
}

function addInto(total, part) {
  for (const name of ["sent", "encrypted", "received", "decrypted", "plain"]) {
    total[name] += part[name];
  }
  for (const reason of DROP_REASONS) total.dropped[reason] += part.dropped[reason];
}

class Scope {
  constructor() {
    this.send = new SendContext();
    this.rings = new Map(); // sender id -> ReceiveRing
    this.bySender = new Map(); // sender id (one with a ring) -> {audio, video}: {received, decrypted}
    this.plain = false;
    this.counters = { audio: counters(), video: counters() };
  }
}

/** Validate an id (scope or sender): a string of at most MAX_ID_LENGTH characters. */
export function checkId(value, what, { empty = false } = {}) {
  if (typeof value !== "string" || value.length > MAX_ID_LENGTH || (!empty && value === "")) {
    throw new TypeError(`${what} must be a string of 1..${MAX_ID_LENGTH} characters`);
  }
  return value;
}

function checkKind(kind) {
  if (!KINDS.includes(kind)) throw new TypeError(`kind must be "audio" or "video"`);
  return kind;
}

function checkKey(suite, kid, key) {
  suiteParams(suite); // SuiteError for anything but 1..5
  if (!(typeof kid === "bigint" || Number.isSafeInteger(kid)) || kid < 0 || BigInt(kid) > MAX_CTR) {
    throw new TypeError("kid must be an integer in 0 .. 2**64-1");
  }
  const raw = bytes(key, "key");
  if (raw.length === 0 || raw.length > MAX_KEY_BYTES) {
    throw new TypeError(`key must be 1..${MAX_KEY_BYTES} bytes`);
  }
  return Uint8Array.from(raw); // our own copy: the caller may reuse or wipe its buffer
}

/**
 * Every scope of one worker: keys in (setSendKey, addReceiveKey, allowPlain, forget), frames
 * through (protect, unprotect), counters out (stats). Key changes run one after another in
 * the order they were given, whatever their key derivation takes (`derive`: sframe.js
 * deriveKeys, replaceable in tests).
 */
export class FrameContexts {
  constructor({
    grace = GRACE_PERIOD,
    maxKids = MAX_KIDS_PER_RING,
    maxSenders = MAX_SENDERS_PER_SCOPE,
    maxScopes = MAX_SCOPES,
    derive = deriveKeys,
  } = {}) {
    this.ringOptions = { grace, maxKids };
    this.derive = derive;
    this.maxSenders = maxSenders;
    this.maxScopes = maxScopes;
    this.scopes = new Map();
    this.unscoped = 0; // frames dropped because the scope table was full
    this.badMessages = 0; // set by the worker: messages refused
    this.chain = Promise.resolve();
  }

  /** The scope of a frame; a counted FrameDrop when no room is left for another. */
  #scopeOrDrop(name) {
    const scope = this.#scope(name);
    if (scope === null) {
      this.unscoped += 1;
      throw new FrameDrop("no_key", "no room for another scope");
    }
    return scope;
  }

  #scope(name) {
    let scope = this.scopes.get(name);
    if (scope === undefined) {
      if (this.scopes.size >= this.maxScopes) return null;
      scope = new Scope();
      this.scopes.set(name, scope);
    }
    return scope;
  }

  #serial(operation) {
    const run = this.chain.then(operation);
    this.chain = run.catch(() => {});
    return run;
  }

  /** Send under `scope` with `key` (base key bytes) as `kid`, from the next frame on. */
  setSendKey(scopeName, suite, kid, key) {
    try {
      checkId(scopeName, "scope");
      const base = checkKey(suite, kid, key);
      const scope = this.#scope(scopeName);
      if (scope === null) throw new RangeError(`more than ${this.maxScopes} scopes`);
      // Into this scope object: after a `forget` it is unreachable, so keys still being
      // derived then never reach a later call of the same name.
      return this.#serial(async () => scope.send.install(await this.derive(suite, base, kid)));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Accept frames of `sender` ("" in a 1:1 call) under `kid` with `key`, at time `now`. */
  addReceiveKey(scopeName, sender, suite, kid, key, now) {
    try {
      checkId(scopeName, "scope");
      checkId(sender, "sender", { empty: true });
      const base = checkKey(suite, kid, key);
      const scope = this.#scope(scopeName);
      if (scope === null) throw new RangeError(`more than ${this.maxScopes} scopes`);
      if (!scope.rings.has(sender) && scope.rings.size >= this.maxSenders) {
        throw new RangeError(`more than ${this.maxSenders} senders in one scope`);
      }
      return this.#serial(async () => {
        const keys = await this.derive(suite, base, kid);
        let ring = scope.rings.get(sender);
        if (ring === undefined) {
          if (scope.rings.size >= this.maxSenders) throw new RangeError("too many senders");
          ring = new ReceiveRing(this.ringOptions);
          scope.rings.set(sender, ring);
        }
        ring.install(keys, base, now);
      });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** The user accepted media without frame encryption for `scope`: pass frames through. */
  allowPlain(scopeName) {
    checkId(scopeName, "scope");
    const scope = this.#scope(scopeName);
    if (scope === null) throw new RangeError(`more than ${this.maxScopes} scopes`);
    scope.plain = true;
  }

  /** Drop every key and counter of `scope` (its call ended). */
  forget(scopeName) {
    checkId(scopeName, "scope");
    const scope = this.scopes.get(scopeName);
    if (scope === undefined) return;
    for (const ring of scope.rings.values()) ring.clear();
    scope.send.keys = null;
    this.scopes.delete(scopeName);
  }

  /** The send key generation of `scope` (0: none yet); changes when a new key is installed. */
  sendGeneration(scopeName) {
    return this.scopes.get(scopeName)?.send.generation ?? 0;
  }

  /**
   * Protect one outgoing frame of `kind` ("audio"/"video"; `mimeType` from the frame's
   * metadata, may be absent): the bytes to send, or a counted FrameDrop (never the frame).
   */
  async protect(scopeName, kind, mimeType, frame) {
    checkKind(kind);
    const scope = this.#scopeOrDrop(scopeName);
    const count = scope.counters[kind];
    count.sent += 1;
    try {
      if (scope.plain) {
        count.plain += 1;
        return bytes(frame, "frame");
      }
      const out = await scope.send.protect(codecFor(kind, mimeType), frame);
      count.encrypted += 1;
      return out;
    } catch (error) {
      const drop = asDrop(error);
      count.dropped[drop.reason] += 1;
      throw drop;
    }
  }

  /**
   * Open one received frame of `sender` ("" in a 1:1 call) at time `now`: the plain frame, or
   * a counted FrameDrop (the frame is never passed on).
   */
  async unprotect(scopeName, sender, kind, mimeType, frame, now) {
    checkKind(kind);
    const scope = this.#scopeOrDrop(scopeName);
    const count = scope.counters[kind];
    count.received += 1;
    try {
      if (scope.plain) {
        count.plain += 1;
        return bytes(frame, "frame");
      }
      const codec = codecFor(kind, mimeType);
      const ring = scope.rings.get(sender);
      if (ring === undefined) throw new FrameDrop("no_key", "no key for this sender");
      // Per sender too (a group call's members): bounded, as only senders with a ring count.
      if (!scope.bySender.has(sender)) {
        scope.bySender.set(sender, { audio: { received: 0, decrypted: 0 }, video: { received: 0, decrypted: 0 } });
      }
      const mine = scope.bySender.get(sender)[kind];
      mine.received += 1;
      const opened = await ring.open(codec, frame, now);
      count.decrypted += 1;
      mine.decrypted += 1;
      return opened.frame;
    } catch (error) {
      const drop = asDrop(error);
      count.dropped[drop.reason] += 1;
      throw drop;
    }
  }

  /**
   * The counters of `scope`: totals, then `audio` and `video` apart; `plain` counts frames
   * passed in the clear after allowPlain. A scope never seen has all zeros.
   */
  stats(scopeName) {
    const total = counters();
    const scope = this.scopes.get(scopeName);
    const byKind = {};
    for (const kind of KINDS) {
      const part = scope?.counters[kind] ?? counters();
      byKind[kind] = structuredClone(part);
      addInto(total, part);
    }
    const senders = {};
    for (const [sender, part] of scope?.bySender ?? []) {
      if (scope.rings.has(sender)) senders[sender] = structuredClone(part);
    }
    return {
      ...total,
      ...byKind,
      senders,
      bad_messages: this.badMessages,
      unscoped: this.unscoped,
    };
  }
}

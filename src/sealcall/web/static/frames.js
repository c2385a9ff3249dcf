// Codec-aware frame protection for the web client: byte-compatible with
// src/sealcall/e2ee/codecs.py (and h264.py), on top of sframe.js.
//
// A protected frame is `clear prefix || SFrame ciphertext`; the clear prefix is what a
// packetizer or SFU must still read, and it is authenticated as SFrame metadata:
// - Opus: the TOC byte (1 byte).
// - VP8: the frame tag, plus on key frames the start code and dimensions: 10 bytes on key
//   frames, 3 on delta frames (RFC 6386 section 9.1).
// - H.264 (Annex B): every NAL unit before the first slice and that slice's NAL header. The
//   metadata is the clear part in canonical form (each unit behind a 3-byte start code,
//   trailing zeros dropped); the ciphertext is escaped with emulation prevention and closed
//   with a 0x80 stop byte, so the frame stays a valid byte stream.
import { SFrameError, bytes, concat, decrypt, encrypt } from "./sframe.js";

/** A frame that cannot be protected or unprotected for its codec (too short, no start code). */
export class FrameFormatError extends SFrameError {}

export const CODECS = Object.freeze(["opus", "vp8", "h264"]);

/** Map `audio/opus`, `video/VP8`, `video/H264` (any case) to a codec name. */
export function codecFromMime(mimeType) {
  const name = String(mimeType).split("/").pop().toLowerCase();
  if (!CODECS.includes(name)) throw new FrameFormatError(`no frame protection for ${mimeType}`);
  return name;
}

const OPUS_PREFIX = 1;
const VP8_KEY_FRAME_PREFIX = 10;
const VP8_DELTA_FRAME_PREFIX = 3;

/** True if `frame` (plain or protected) is a VP8 key frame: bit 0 of the tag is clear. */
export function vp8IsKeyFrame(frame) {
  const data = bytes(frame, "frame");
  return data.length > 0 && (data[0] & 0x01) === 0;
}

function vp8PrefixLength(data) {
  if (data.length === 0) throw new FrameFormatError("empty VP8 frame");
  const length = data[0] & 0x01 ? VP8_DELTA_FRAME_PREFIX : VP8_KEY_FRAME_PREFIX;
  if (data.length < length) {
    throw new FrameFormatError(
      `VP8 frame of ${data.length} bytes is shorter than its ${length}-byte header`,
    );
  }
  return length;
}

// ---------------------------------------------------------------------------------------
// H.264 Annex B (the same rules as src/sealcall/e2ee/h264.py).

const VCL_TYPES = new Set([1, 2, 3, 4, 5]);
const STOP_BYTE = 0x80;

function findStartCode(data, from) {
  for (let i = from; i + 2 < data.length; i++) {
    if (data[i + 2] > 1) {
      i += 2; // no start code can end at or before i + 2
    } else if (data[i] === 0 && data[i + 1] === 0 && data[i + 2] === 1) {
      return i;
    }
  }
  return -1;
}

function trimZeros(data, start, end) {
  while (end > start && data[end - 1] === 0) end--;
  return end;
}

/** Start offsets of the NAL units up to and including the first slice, or null if none. */
function firstSlice(data) {
  const starts = [];
  let pos = findStartCode(data, 0);
  while (pos !== -1) {
    const start = pos + 3;
    starts.push(start);
    if (start < data.length && VCL_TYPES.has(data[start] & 0x1f)) return starts;
    pos = findStartCode(data, start);
  }
  return null;
}

/** True if the access unit's first slice is an IDR slice (NAL type 5). */
export function h264HasIdr(frame) {
  const data = bytes(frame, "frame");
  const starts = firstSlice(data);
  return starts !== null && (data[starts[starts.length - 1]] & 0x1f) === 5;
}

/** `{length, metadata}`: the clear prefix's length and its canonical form (see above). */
export function h264SplitClear(frame) {
  const data = bytes(frame, "frame");
  let starts = firstSlice(data);
  if (starts === null) {
    // No slice: the last unit carries the ciphertext (parameter sets alone).
    starts = [];
    for (let pos = findStartCode(data, 0); pos !== -1; pos = findStartCode(data, pos + 3)) {
      starts.push(pos + 3);
    }
    if (starts.length === 0) throw new FrameFormatError("H.264 frame has no Annex B start code");
  }
  for (let i = 0; i < starts[0] - 3; i++) {
    if (data[i] !== 0) {
      throw new FrameFormatError(
        "H.264 frame has bytes other than zeros before its first start code",
      );
    }
  }
  const last = starts[starts.length - 1];
  if (last >= data.length || data[last] === 0) {
    throw new FrameFormatError("H.264 NAL unit without a header byte");
  }
  const startCode = Uint8Array.of(0, 0, 1);
  const parts = [];
  for (let i = 0; i + 1 < starts.length; i++) {
    const end = trimZeros(data, starts[i], starts[i + 1] - 3);
    parts.push(startCode, data.subarray(starts[i], end));
  }
  parts.push(startCode, data.subarray(last, last + 1));
  return { length: last + 1, metadata: concat(...parts) };
}

/** Emulation prevention (a 0x03 after two zeros before a byte <= 3), then the stop byte. */
export function h264Escape(data) {
  const out = [];
  let zeros = 0;
  for (const b of data) {
    if (zeros >= 2 && b <= 3) {
      out.push(3);
      zeros = 0;
    }
    out.push(b);
    zeros = b === 0 ? zeros + 1 : 0;
  }
  out.push(STOP_BYTE);
  return Uint8Array.from(out);
}

/** Undo h264Escape: drop trailing zeros and the stop byte, remove emulation bytes. */
export function h264Unescape(data) {
  const end = trimZeros(data, 0, data.length);
  if (end === 0 || data[end - 1] !== STOP_BYTE) {
    throw new FrameFormatError("H.264 protected payload lacks its stop byte");
  }
  const out = new Uint8Array(end - 1);
  let n = 0;
  let zeros = 0;
  for (let i = 0; i < end - 1; i++) {
    const b = data[i];
    // The same left-to-right, non-overlapping removal of 00 00 03 as the Python side.
    if (b === 3 && zeros >= 2) {
      zeros = 0;
      continue;
    }
    out[n++] = b;
    zeros = b === 0 ? zeros + 1 : 0;
  }
  return out.subarray(0, n);
}

// ---------------------------------------------------------------------------------------
// Frames.

/**
 * Encrypt one encoded frame of `codec` ("opus", "vp8", "h264") with SFrame:
 * `clear prefix || SFrame ciphertext`, the same bytes as Python's protect_frame for the same
 * suite, keys (from deriveKeys), KID and counter.
 */
export async function protectFrame(codec, suite, keys, kid, ctr, frame) {
  const data = bytes(frame, "frame");
  if (codec === "opus" || codec === "vp8") {
    if (codec === "opus" && data.length === 0) throw new FrameFormatError("empty Opus frame");
    const n = codec === "opus" ? OPUS_PREFIX : vp8PrefixLength(data);
    const prefix = data.subarray(0, n);
    return concat(prefix, await encrypt(suite, keys, kid, ctr, prefix, data.subarray(n)));
  }
  if (codec === "h264") {
    const { length, metadata } = h264SplitClear(data);
    const sealed = await encrypt(suite, keys, kid, ctr, metadata, data.subarray(length));
    return concat(data.subarray(0, length), h264Escape(sealed));
  }
  throw new FrameFormatError(`no frame protection for codec ${codec}`);
}

/**
 * Decrypt a frame made by protectFrame (or Python's protect_frame): `{kid, ctr, frame}` with
 * the exact original frame. `keys` is as for sframe.js decrypt (keys or `kid -> keys`).
 * Every failure is an SFrameError (FrameFormatError, HeaderError, UnknownKeyError,
 * AuthenticationError, ...); no plaintext is returned for a frame that did not authenticate.
 * Replay protection is the caller's, as with sframe.js decrypt.
 */
export async function unprotectFrame(codec, suite, keys, protectedFrame) {
  const data = bytes(protectedFrame, "frame");
  if (codec === "opus" || codec === "vp8") {
    if (codec === "opus" && data.length === 0) throw new FrameFormatError("empty Opus frame");
    const n = codec === "opus" ? OPUS_PREFIX : vp8PrefixLength(data);
    const prefix = data.subarray(0, n);
    const { kid, ctr, plaintext } = await decrypt(suite, keys, prefix, data.subarray(n));
    return { kid, ctr, frame: concat(prefix, plaintext) };
  }
  if (codec === "h264") {
    const { length, metadata } = h264SplitClear(data);
    const sealed = h264Unescape(data.subarray(length));
    const { kid, ctr, plaintext } = await decrypt(suite, keys, metadata, sealed);
    return { kid, ctr, frame: concat(data.subarray(0, length), plaintext) };
  }
  throw new FrameFormatError(`no frame protection for codec ${codec}`);
}

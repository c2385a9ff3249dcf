// Pure formatting and arithmetic for the page (no DOM): durations, times, history item text,
// base64 and the stats panel's figures. Node's test runner loads this module as is.

/** "0:07", "3:25", "1:02:03" for a duration in seconds (negative or bad input: "0:00"). */
export function formatDuration(seconds) {
  const total = Number.isFinite(seconds) && seconds > 0 ? Math.floor(seconds) : 0;
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const ss = String(s).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/** The time of day (or date and time if not today) of wall-clock seconds, in UTC-free local form. */
export function formatTime(epochSeconds, now = Date.now() / 1000) {
  if (!Number.isFinite(epochSeconds)) return "";
  const d = new Date(epochSeconds * 1000);
  const hm = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
  const today = new Date(now * 1000);
  if (d.toDateString() === today.toDateString()) return hm;
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")} ${hm}`;
}

const STATE_TEXT = {
  fledgling: "Starting…",
  create_offer: "Starting…",
  invite_sent: "Calling…",
  ringing: "Ringing…",
  create_answer: "Answering…",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…", // the media path is down; the call waits for it until its deadline
};

/** A call's status line: its duration while connected (`connectedSeconds`), else its state. */
export function callStatus(state, connectedSeconds) {
  if (state === "connected" && Number.isFinite(connectedSeconds)) return formatDuration(connectedSeconds);
  return STATE_TEXT[state] ?? state;
}

const OUTCOME_TEXT = {
  answered: "Answered",
  missed: "Missed",
  rejected: "Declined",
  busy: "Busy",
  failed: "Failed",
  cancelled: "Cancelled",
};

/** The short name of a Matrix user id: "@alice:example.org" -> "alice". */
export function shortName(userId) {
  if (typeof userId !== "string" || userId === "") return "";
  const m = /^@([^:]+)(:.*)?$/.exec(userId);
  return m ? m[1] : userId;
}

/**
 * What a history item card shows: {arrow, kind, title, detail, time}. `arrow` is "↗" for an
 * outgoing call and "↙" for an incoming one; `detail` is the outcome, with the duration of an
 * answered call.
 */
export function historyText(item, now) {
  const outgoing = item.direction === "outgoing";
  const kind = item.video ? "Video call" : "Audio call";
  const outcome = OUTCOME_TEXT[item.outcome] ?? String(item.outcome ?? "");
  const detail =
    item.outcome === "answered" ? `${outcome} · ${formatDuration(item.duration)}` : outcome;
  const who = shortName(outgoing ? item.callee : item.caller);
  const title = item.group
    ? `Group ${kind.toLowerCase()}`
    : `${outgoing ? "Outgoing" : "Incoming"} ${kind.toLowerCase()}${who ? ` · ${who}` : ""}`;
  return {
    arrow: outgoing ? "↗" : "↙",
    kind: item.video ? "video" : "audio",
    title,
    detail,
    time: formatTime(item.started_at, now),
  };
}

/** Decode standard or URL-safe base64 (padded or not) to an ArrayBuffer; throws TypeError. */
export function base64ToBuffer(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(text)) {
    throw new TypeError("not base64");
  }
  const std = text.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
  if (std.length % 4 === 1) throw new TypeError("not base64");
  const binary = atob(std + "=".repeat((4 - (std.length % 4)) % 4));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes.buffer;
}

/** Encode bytes (ArrayBuffer or Uint8Array) as standard padded base64. */
export function bufferToBase64(buffer) {
  const bytes = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

/** Bits per second between two byte counters `dt` milliseconds apart (0 if unusable). */
export function bitrate(bytesBefore, bytesNow, dtMs) {
  if (!(dtMs > 0) || !Number.isFinite(bytesBefore) || !Number.isFinite(bytesNow)) return 0;
  const delta = bytesNow - bytesBefore;
  return delta > 0 ? (delta * 8 * 1000) / dtMs : 0;
}

/** "0 kbit/s", "312 kbit/s", "1.4 Mbit/s". */
export function formatBitrate(bps) {
  if (!(bps > 0)) return "0 kbit/s";
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(1)} Mbit/s`;
  return `${Math.round(bps / 1000)} kbit/s`;
}

/** The sum of the worker's `dropped` counters ({no_key, auth, ...}). */
export function droppedTotal(dropped) {
  if (!dropped || typeof dropped !== "object") return 0;
  return Object.values(dropped).reduce((sum, n) => sum + (Number.isFinite(n) ? n : 0), 0);
}

/**
 * The stats panel's figures from two getStats() samples (arrays of plain report objects, the
 * previous one may be null) and the worker's counters: {inbound_bps, outbound_bps, rtt_ms,
 * frames_decoded, packets_lost, decrypted, dropped, encrypted, e2ee}. `e2ee` is true only when
 * the worker has decrypted frames (and so the far side's media reached us encrypted).
 */
export function summarizeStats(prev, now, dtMs, worker) {
  const sumOf = (reports, type, field) =>
    (reports ?? [])
      .filter((r) => r.type === type)
      .reduce((sum, r) => sum + (Number.isFinite(r[field]) ? r[field] : 0), 0);
  let rtt = null;
  const pairs = (now ?? []).filter((r) => r.type === "candidate-pair");
  const selected =
    pairs.find((p) => p.nominated && p.state === "succeeded") ??
    pairs.find((p) => p.state === "succeeded");
  if (selected && Number.isFinite(selected.currentRoundTripTime)) {
    rtt = Math.round(selected.currentRoundTripTime * 1000);
  }
  const decrypted = worker?.decrypted ?? 0;
  return {
    inbound_bps: prev
      ? bitrate(sumOf(prev, "inbound-rtp", "bytesReceived"), sumOf(now, "inbound-rtp", "bytesReceived"), dtMs)
      : 0,
    outbound_bps: prev
      ? bitrate(sumOf(prev, "outbound-rtp", "bytesSent"), sumOf(now, "outbound-rtp", "bytesSent"), dtMs)
      : 0,
    rtt_ms: rtt,
    frames_decoded: sumOf(now, "inbound-rtp", "framesDecoded"),
    packets_lost: sumOf(now, "inbound-rtp", "packetsLost"),
    encrypted: worker?.encrypted ?? 0,
    decrypted,
    dropped: droppedTotal(worker?.dropped),
    e2ee: decrypted > 0,
  };
}

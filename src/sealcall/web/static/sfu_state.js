// The pure parts of the page's SFU link (docs/sfu-protocol.md, docs/web-protocol.md "SFU group
// calls"): the SFU's address, its messages checked, member ids, the track map and which layer
// to ask for. No DOM, no sockets: Node tests it (tests/js/sfu_state.test.mjs).

export const MAX_TRACKS = 512; // forwarded streams on one connection: 2 per member, 256 members
export const MAX_ID = 255;
export const MAX_SDP = 256 * 1024;
export const QUALITIES = ["thumbnail", "full", "none"];
export const THUMBNAIL = { height: 180, maxBitrate: 150_000 }; // docs/sfu-protocol.md, section 4
export const FULL_MAX_BITRATE = 1_500_000;

const isObject = (x) => x !== null && typeof x === "object" && !Array.isArray(x);
const isId = (x) => typeof x === "string" && x.length > 0 && x.length <= MAX_ID;

/**
 * The signaling WebSocket's address of the SFU at `url` (`http://host:port[/path]`): `ws://` for
 * `http:`, `wss://` for `https:`, `/ws` appended. Anything else (another scheme, credentials in
 * the URL, a query or fragment) is refused: null.
 */
export function sfuSocketUrl(url) {
  let u;
  try {
    u = new URL(url);
  } catch {
    return null;
  }
  if (!["http:", "https:"].includes(u.protocol) || u.username || u.password || u.search || u.hash) return null;
  const path = u.pathname.replace(/\/+$/, "");
  return `${u.protocol === "https:" ? "wss:" : "ws:"}//${u.host}${path}/ws`;
}

/**
 * The worker's sender id (`"<user_id> <device_id>"`) of an SFU member id (`user|device`): the
 * user id holds no `|`, so the first one splits. Null for anything else.
 */
export function memberSender(member) {
  if (!isId(member)) return null;
  const bar = member.indexOf("|");
  if (bar <= 0 || bar === member.length - 1) return null;
  return `${member.slice(0, bar)} ${member.slice(bar + 1)}`;
}

/** The SFU member id of a worker sender id (the inverse of memberSender). */
export function senderMember(sender) {
  if (!isId(sender)) return null;
  const space = sender.indexOf(" ");
  if (space <= 0 || space === sender.length - 1) return null;
  return `${sender.slice(0, space)}|${sender.slice(space + 1)}`;
}

const SERVER_FIELDS = {
  joined: (m) => isId(m.id ?? m.member) && typeof (m.answer ?? m.sdp) === "string",
  offer: (m) => typeof m.sdp === "string" && m.sdp.length > 0 && m.sdp.length <= MAX_SDP,
  tracks: (m) => Array.isArray(m.tracks) && m.tracks.length <= MAX_TRACKS,
  left: (m) => isId(m.member),
  error: (m) => typeof m.reason === "string",
  speaking: (m) => Array.isArray(m.members) && m.members.length <= MAX_TRACKS && m.members.every(isId),
  layer: (m) => isId(m.publisher) && ["thumbnail", "full"].includes(m.quality),
  floor: (m) => m.holder === null || isId(m.holder),
  muted: (m) => memberSender(m.member) !== null && typeof m.audio === "boolean" && typeof m.video === "boolean",
};

/** The control message that tells the others our mute state (docs/sfu-protocol.md, section 5). */
export function muteMessage(audio, video) {
  return { type: "mute", audio: Boolean(audio), video: Boolean(video) };
}

/**
 * One message of the SFU (signaling socket or control channel) as an object, or null if it is
 * not one we know with the fields we need. `joined` is normalised to `{id, answer}` (the
 * contract's names; an SFU that still says `member`/`sdp` is read the same).
 */
export function parseSfuMessage(text) {
  if (typeof text !== "string" || text.length > MAX_SDP + 4096) return null;
  let m;
  try {
    m = JSON.parse(text);
  } catch {
    return null;
  }
  if (!isObject(m) || typeof m.type !== "string" || !Object.hasOwn(SERVER_FIELDS, m.type)) return null;
  if (!SERVER_FIELDS[m.type](m)) return null;
  if (m.type === "joined") return { type: "joined", id: m.id ?? m.member, answer: m.answer ?? m.sdp };
  return m;
}

/**
 * The `tracks` announcement as Map(mid -> {kind, member, sender}); entries that are malformed
 * (or name no member id we can read) are left out and counted in `bad`.
 */
export function trackMap(tracks) {
  const map = new Map();
  let bad = 0;
  for (const t of Array.isArray(tracks) ? tracks.slice(0, MAX_TRACKS) : []) {
    const sender = isObject(t) ? memberSender(t.member) : null;
    if (!sender || !isId(t.mid) || !["audio", "video"].includes(t.kind) || map.has(t.mid)) {
      bad += 1;
      continue;
    }
    map.set(t.mid, { kind: t.kind, member: t.member, sender, ssrc: Number.isInteger(t.ssrc) && t.ssrc >= 0 && t.ssrc < 2 ** 32 ? t.ssrc : 0 });
  }
  return { map, bad };
}

/**
 * The layer to ask of each publisher: what Python asked for it (`asked`: publisher -> quality,
 * `sfu_subscribe`), else `full` for the focused one (the large tile), `thumbnail` for the
 * others. `publishers`: SFU member ids (ours left out by the caller).
 */
export function wantedLayers(publishers, focus, asked = new Map()) {
  const wanted = new Map();
  for (const p of publishers) wanted.set(p, asked.get(p) ?? (p === focus ? "full" : "thumbnail"));
  return wanted;
}

/**
 * The `subscribe` messages that move the SFU from `asked` (what we asked so far) to `wanted`:
 * only the changes, in a stable order.
 */
export function subscribeChanges(asked, wanted) {
  const out = [];
  for (const [publisher, quality] of [...wanted].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (asked.get(publisher) !== quality) out.push({ type: "subscribe", publisher, quality });
  }
  return out;
}

/**
 * The thumbnail encoding of a camera of `height` pixels: scaled down to about 180 lines (never
 * up), at most 150 kbit/s; the full-resolution encoding is the camera as it is.
 */
export function videoEncodings(height) {
  const scale = Number.isFinite(height) && height > THUMBNAIL.height ? height / THUMBNAIL.height : 1;
  return {
    thumbnail: { scaleResolutionDownBy: scale, maxBitrate: THUMBNAIL.maxBitrate },
    full: { scaleResolutionDownBy: 1, maxBitrate: FULL_MAX_BITRATE },
  };
}

/**
 * The header extensions the page offers the SFU, with the ids aiortc gives them. The SFU forwards
 * each packet's extensions as its publisher numbered them, and an aiortc subscriber parses them
 * by its own numbers (a 3-byte abs-send-time read as a 1-byte audio level ended its connection):
 * so the page numbers them as aiortc does. The SFU accepts nothing else (docs/sfu-protocol.md).
 */
export const EXTENSION_IDS = {
  "urn:ietf:params:rtp-hdrext:sdes:mid": 1,
  "urn:ietf:params:rtp-hdrext:ssrc-audio-level": 2,
  "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time": 3,
};
const AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/**
 * The offer with its header extensions renumbered as EXTENSION_IDS says and every other one
 * left out; without the RFC 6464 audio level unless `audioLevel` (a member who says no to
 * who-is-speaking).
 */
export function offerExtensions(sdp, audioLevel) {
  const out = [];
  for (const line of sdp.split("\r\n")) {
    const m = /^a=extmap:\d+(\/\w+)? (\S+)(.*)$/.exec(line);
    if (!m) {
      out.push(line);
      continue;
    }
    const id = EXTENSION_IDS[m[2]];
    if (id === undefined || (m[2] === AUDIO_LEVEL && !audioLevel)) continue;
    out.push(`a=extmap:${id}${m[1] ?? ""} ${m[2]}${m[3]}`);
  }
  return out.join("\r\n");
}

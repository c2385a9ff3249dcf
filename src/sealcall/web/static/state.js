// The page's state: a pure reducer from socket events (and a few page actions) to plain data,
// and the selectors that turn it into what the views show. No DOM, no sockets: Node tests it.

import { historyText, shortName } from "./format.js";

/** The state before anything happened. `e2ee`: the browser has RTCRtpScriptTransform. */
export function initialState(e2ee) {
  return {
    e2ee: Boolean(e2ee),
    connected: false,
    me: null,
    rooms: [],
    selected: null,
    history: {},
    calls: {},
    waiting: {},
    groups: {},
    pairRooms: {},
    groupRings: {},
    notice: null,
    relayOnly: false, // the app's setting (Python holds it; the page shows and asks to change it)
  };
}

// Python checks what it sends, but the page trusts no shape: junk is dropped, never thrown on.
const isObject = (x) => x !== null && typeof x === "object" && !Array.isArray(x);
const objects = (x) => (Array.isArray(x) ? x.filter(isObject) : []);

const ITEM_LIMIT = 500; // per room: the timeline keeps the newest calls only

function addItems(list, items) {
  const byId = new Map((list ?? []).map((it) => [it.call_id, it]));
  for (const it of objects(items)) {
    if (typeof it.call_id === "string") byId.set(it.call_id, it);
  }
  const merged = [...byId.values()].sort((a, b) => (a.started_at ?? 0) - (b.started_at ?? 0));
  return merged.slice(-ITEM_LIMIT);
}

function withoutKey(obj, key) {
  const { [key]: _gone, ...rest } = obj;
  return rest;
}

const LOCAL_DEFAULT = { audio_muted: false, video_muted: false, screen: false, on_hold: false };

const BY_CALL = new Set(["call", "incoming_call", "call_waiting", "remote_media", "call_ended", "local_media"]);
const BY_ROOM = new Set(["select_room", "history_result", "history_item", "group", "group_local", "group_ring", "group_ring_ended"]);

/** The next state after `action` (a socket event, or a page action below). Never mutates. */
export function reduce(state, action) {
  if (BY_CALL.has(action.type) && typeof action.call_id !== "string") return state;
  if (BY_ROOM.has(action.type) && typeof action.room_id !== "string") return state;
  switch (action.type) {
    case "socket_open":
      return { ...state, connected: true };
    case "socket_closed":
      // Python ends the calls this page drove when its socket goes (their media was here) and
      // sends the ones still going on to the next socket: none of what is shown holds.
      return { ...state, connected: false, calls: {}, waiting: {}, groups: {}, pairRooms: {}, groupRings: {} };
    case "hello_result":
      return {
        ...state,
        me: { user_id: action.user_id, device_id: action.device_id, display_name: action.display_name },
        relayOnly: action.relay_only === true,
      };
    case "settings":
      return typeof action.relay_only === "boolean" ? { ...state, relayOnly: action.relay_only } : state;
    case "rooms_result": {
      const rooms = objects(action.rooms).filter((r) => typeof r.room_id === "string");
      const selected =
        state.selected && rooms.some((r) => r.room_id === state.selected)
          ? state.selected
          : (rooms[0]?.room_id ?? null);
      return { ...state, rooms, selected };
    }
    case "select_room":
      return { ...state, selected: action.room_id };
    case "history_result":
      return {
        ...state,
        history: { ...state.history, [action.room_id]: addItems(state.history[action.room_id], action.items) },
      };
    case "history_item":
      return {
        ...state,
        history: { ...state.history, [action.room_id]: addItems(state.history[action.room_id], [action.item]) },
      };
    case "call": {
      if (action.state === "ended") {
        return { ...state, calls: withoutKey(state.calls, action.call_id), waiting: withoutKey(state.waiting, action.call_id) };
      }
      const old = state.calls[action.call_id];
      const { type: _t, ...snapshot } = action;
      const call = {
        ...snapshot,
        remote: old?.remote ?? { streams: {}, on_hold: false },
        local: !old
          ? { ...LOCAL_DEFAULT, video_muted: !action.video }
          : !old.video && action.video
            ? { ...old.local, video_muted: false } // upgraded to video: the camera is on
            : old.local,
        rang: old?.rang ?? false,
      };
      return { ...state, calls: { ...state.calls, [action.call_id]: call } };
    }
    case "incoming_call": {
      const call = state.calls[action.call_id];
      if (!call) return state;
      return { ...state, calls: { ...state.calls, [action.call_id]: { ...call, rang: true } } };
    }
    case "call_waiting":
      return { ...state, waiting: { ...state.waiting, [action.call_id]: action.current_call_id } };
    case "remote_media": {
      const call = state.calls[action.call_id];
      if (!call) return state;
      const streams = Object.fromEntries(Object.entries(isObject(action.streams) ? action.streams : {}).filter(([, v]) => isObject(v)));
      const remote = { streams, on_hold: Boolean(action.on_hold) };
      return { ...state, calls: { ...state.calls, [action.call_id]: { ...call, remote } } };
    }
    case "call_ended": {
      const call = state.calls[action.call_id];
      const notice = call
        ? { call_id: action.call_id, text: endedText(call, action.reason, action.by_remote) }
        : state.notice;
      return {
        ...state,
        calls: withoutKey(state.calls, action.call_id),
        waiting: withoutKey(state.waiting, action.call_id),
        notice,
      };
    }
    case "local_media": {
      // What this page's media does for a call (from the peer connection or a request's result).
      const call = state.calls[action.call_id];
      if (!call) return state;
      const local = { ...call.local };
      for (const key of Object.keys(LOCAL_DEFAULT)) {
        if (typeof action[key] === "boolean") local[key] = action[key];
      }
      return { ...state, calls: { ...state.calls, [action.call_id]: { ...call, local } } };
    }
    case "group": {
      // The room's pairs are those of this snapshot: an ended pair is forgotten (bounded).
      const pairRooms = Object.fromEntries(Object.entries(state.pairRooms).filter(([, room]) => room !== action.room_id));
      const members = objects(action.members).filter((m) => typeof m.user_id === "string");
      for (const m of members) {
        if (typeof m.pair_id === "string") pairRooms[m.pair_id] = action.room_id;
      }
      const group = {
        joined: Boolean(action.joined),
        members,
        active_speaker: action.active_speaker ?? null,
        local: state.groups[action.room_id]?.local ?? { audio_muted: false, video_muted: false, screen: false },
      };
      const groupRings = group.joined ? withoutKey(state.groupRings, action.room_id) : state.groupRings;
      return { ...state, groups: { ...state.groups, [action.room_id]: group }, pairRooms, groupRings };
    }
    case "group_ring": {
      const ring = { room_id: action.room_id, sender: typeof action.sender === "string" ? action.sender : null };
      return { ...state, groupRings: { ...state.groupRings, [action.room_id]: ring } };
    }
    case "group_ring_ended":
      return { ...state, groupRings: withoutKey(state.groupRings, action.room_id) };
    case "group_local": {
      const group = state.groups[action.room_id];
      if (!group) return state;
      const local = { ...group.local };
      for (const key of ["audio_muted", "video_muted", "screen"]) {
        if (typeof action[key] === "boolean") local[key] = action[key];
      }
      return { ...state, groups: { ...state.groups, [action.room_id]: { ...group, local } } };
    }
    case "notice":
      return { ...state, notice: action.text ? { call_id: null, text: action.text } : null };
    default:
      return state;
  }
}

const REASON_TEXT = {
  user_hangup: "hung up",
  invite_timeout: "no answer",
  user_busy: "busy",
  ice_failed: "connection failed",
  ice_timeout: "connection lost",
  user_media_failed: "camera or microphone unavailable",
  answered_elsewhere: "answered on another device",
  encryption_required: "the other app cannot encrypt call media end to end, so the call was not connected",
};

function endedText(call, reason, byRemote) {
  const who = shortName(call.peer);
  if (isRinging(call) && reason !== "answered_elsewhere") {
    return byRemote || reason === "invite_timeout" ? `Missed call from ${who}` : `Call from ${who} declined`;
  }
  const why = REASON_TEXT[reason] ?? (reason ? String(reason).replace(/_/g, " ") : "ended");
  return `Call with ${who} ended${byRemote ? ` by ${who}` : ""}: ${why}`;
}

// -- selectors -------------------------------------------------------------------------------

const isRinging = (c) => c.direction === "incoming" && c.state === "ringing";

/** Whether media flowed in this call: connected, or reconnecting while its path is down. */
export const inCall = (c) => c.state === "connected" || c.state === "reconnecting";

/** The call the call screen shows: one that is not an unanswered incoming call. */
export function currentCall(state) {
  const calls = Object.values(state.calls).filter((c) => !isRinging(c));
  return calls.find((c) => c.owner && inCall(c)) ?? calls.find((c) => c.owner) ?? calls[0] ?? null;
}

/** The incoming call that rings with no other call going on (the ring banner), or null. */
export function ringingCall(state) {
  if (currentCall(state)) return null;
  return Object.values(state.calls).find(isRinging) ?? null;
}

/** An incoming call that rings during another call (the call-waiting banner), or null. */
export function waitingCall(state) {
  const current = currentCall(state);
  if (!current) return null;
  const call = Object.values(state.calls).find((c) => isRinging(c) && c.call_id !== current.call_id);
  return call ? { call, current_call_id: state.waiting[call.call_id] ?? current.call_id } : null;
}

/** The room of a mesh pair (from the group events' members), or null. */
export function roomOfPair(state, pairId) {
  return state.pairRooms[pairId] ?? null;
}

/** The name to show for a user id: the room member's name if known, else the id's local part. */
export function displayName(userId) {
  return shortName(userId);
}

/** The view model of the whole page: everything the views draw, as plain data. */
export function viewModel(state, now) {
  const room = state.rooms.find((r) => r.room_id === state.selected) ?? null;
  const current = currentCall(state);
  const busy = Object.keys(state.calls).length > 0 || Object.values(state.groups).some((g) => g.joined);
  const items = room ? (state.history[room.room_id] ?? []) : [];
  return {
    connected: state.connected,
    me: state.me,
    e2ee: state.e2ee,
    rooms: state.rooms.map((r) => ({
      room_id: r.room_id,
      name: r.name || (r.peer ? shortName(r.peer) : r.room_id),
      kind: r.kind,
      selected: r.room_id === state.selected,
      in_call:
        Object.values(state.calls).some((c) => c.room_id === r.room_id) ||
        Boolean(state.groups[r.room_id]?.joined),
      group_active: (state.groups[r.room_id]?.members ?? []).length > 0,
    })),
    room: room && {
      room_id: room.room_id,
      name: room.name || (room.peer ? shortName(room.peer) : room.room_id),
      kind: room.kind,
      peer: room.peer,
      can_call: state.e2ee && state.connected && !busy,
    },
    timeline: items.map((it) => ({
      call_id: it.call_id,
      outcome: it.outcome,
      direction: it.direction,
      video: Boolean(it.video),
      ...historyText(it, now),
    })),
    ringing: ringingCall(state),
    waiting: waitingCall(state),
    group_rings: Object.values(state.groupRings)
      .filter((r) => !state.groups[r.room_id]?.joined)
      .map((r) => {
        const room = state.rooms.find((x) => x.room_id === r.room_id);
        return { ...r, name: room?.name || r.room_id, can_join: state.e2ee && state.connected && !busy };
      }),
    call: current,
    group: Object.entries(state.groups)
      .filter(([, g]) => g.joined)
      .map(([room_id, g]) => ({ room_id, ...g }))[0] ?? null,
    notice: state.notice,
  };
}

/**
 * The remote streams of a call or pair split by purpose: {user, screen} (MediaStream or null).
 * `meta` is remote_media's streams map: when it names streams, only those count (a stopped
 * screen share leaves its stream behind); a stream it does not name is the user media if it has
 * audio. Streams with no tracks left are skipped.
 */
export function remoteByPurpose(streams, meta) {
  const named = meta && Object.keys(meta).length > 0;
  let user = null;
  let screen = null;
  const others = [];
  for (const [id, stream] of streams) {
    if (stream.getTracks().length === 0 || (named && !meta[id])) continue;
    const purpose = named ? meta[id].purpose : stream.getAudioTracks().length > 0 ? "m.usermedia" : null;
    if (purpose === "m.screenshare" && !screen) screen = stream;
    else if (purpose === "m.usermedia" && !user) user = stream;
    else others.push(stream);
  }
  user ??= others.shift() ?? null;
  screen ??= others.shift() ?? null;
  return { user, screen };
}

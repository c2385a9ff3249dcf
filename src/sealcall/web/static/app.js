// The calling page: joins the page socket, the state reducer, the media engine and the views.

import { PageSocket, socketUrl } from "./socket.js";
import { MediaEngine } from "./media.js";
import { Ringer } from "./ring.js";
import { initialState, reduce, roomOfPair, viewModel } from "./state.js";
import { shortName } from "./format.js";
import { dropVideos } from "./dom.js";
import { renderRooms, renderRoom } from "./view_rooms.js";
import { renderBanners, renderCall } from "./view_call.js";
import { renderGroup } from "./view_group.js";
import { renderSettings } from "./view_settings.js";
import { relaySetting } from "./settings.js";
import { SpeakingDetector, levelToDbov } from "./speaking.js";

const EVENTS = new Set(["call", "incoming_call", "call_waiting", "remote_media", "call_ended", "history_item", "group", "group_ring", "group_ring_ended", "settings"]);
const STATS_INTERVAL_MS = 1000;
const LEVELS_INTERVAL_MS = 100; // who is speaking: each member's received audio level

const e2ee = typeof RTCRtpScriptTransform !== "undefined";
let state = initialState(e2ee);
const socket = new PageSocket(socketUrl(location), e2ee);
const ringer = new Ringer();
const remote = new Map(); // call id / pair id -> Map(stream id -> MediaStream)
const connectedAt = new Map(); // call id -> Date.now() when it first connected
let awaitedRoom = null; // a DM we opened that the room list does not have yet
const lastStats = new Map(); // call id / room id -> the stats panel's latest figures
let statsOpen = false;
let relayPending = false; // a set_relay_only request is on its way

const media = new MediaEngine({
  report: (type, fields) => socket.send(type, fields),
  roomOfPair: (pairId) => roomOfPair(state, pairId),
  onTrack: ({ id, stream, track }) => {
    if (!remote.has(id)) remote.set(id, new Map());
    remote.get(id).set(stream.id, stream);
    const rerender = () => scheduleRender();
    track.addEventListener("ended", rerender);
    track.addEventListener("mute", rerender);
    track.addEventListener("unmute", rerender);
    stream.addEventListener("removetrack", rerender);
    scheduleRender();
  },
  onLocal: ({ scope, ...fields }) => {
    if (state.calls[scope]) dispatch({ type: "local_media", call_id: scope, ...fields });
    else dispatch({ type: "group_local", room_id: scope, ...fields });
  },
});

function dispatch(action) {
  state = reduce(state, action);
  scheduleRender();
}

// -- socket ------------------------------------------------------------------------------------

socket.on("open", async (hello) => {
  dispatch({ type: "socket_open" });
  dispatch({ ...hello, type: "hello_result" });
  try {
    const { rooms } = await socket.request("list_rooms");
    dispatch({ type: "rooms_result", rooms });
    if (state.selected) await loadHistory(state.selected);
  } catch (err) {
    notice(`Could not list rooms (${err.code ?? err.name})`);
  }
});
socket.on("close", () => {
  // The calls and group calls this page drove end with its socket (docs/web-protocol.md):
  // stop their media and have the worker forget their keys.
  media.endAll();
  remote.clear();
  connectedAt.clear();
  lastStats.clear();
  dropVideos("");
  dispatch({ type: "socket_closed" });
});
socket.on("*", (msg) => {
  if (msg.type === "media") {
    media.handle(msg);
    return;
  }
  if (typeof msg.type === "string" && msg.type.startsWith("sfu_")) {
    media.sfu(msg); // the room's call through its SFU: this page connects to it
    return;
  }
  if (msg.type === "group_keys") {
    media.groupKeys(msg); // straight to the worker: the page's state never holds a key
    return;
  }
  if (msg.type === "rooms") {
    // A room joined or left (a contact's new DM): the list follows, the selection stays.
    const hadSelection = state.selected;
    dispatch({ type: "rooms_result", rooms: msg.rooms });
    if (awaitedRoom && state.rooms.some((r) => r.room_id === awaitedRoom)) {
      actions.selectRoom(awaitedRoom);
      awaitedRoom = null;
    } else if (!hadSelection && state.selected) loadHistory(state.selected);
    return;
  }
  if (!EVENTS.has(msg.type)) return;
  const before = state;
  dispatch(msg);
  afterEvent(msg, before);
});

function afterEvent(msg, before) {
  if (msg.type === "call" && msg.state === "connected" && !connectedAt.has(msg.call_id)) {
    connectedAt.set(msg.call_id, Date.now());
  }
  if (msg.type === "call_ended" || (msg.type === "call" && msg.state === "ended")) {
    endCallMedia(msg.call_id);
  }
  if (msg.type === "group") {
    const present = new Set((msg.members ?? []).map((m) => m.sender));
    for (const source of speaking.sources.keys()) if (!present.has(source)) speaking.remove(source);
    // A pair that is gone (a member left or rejoined with a new pair): drop its streams.
    for (const pairId of Object.keys(before.pairRooms)) {
      if (!(pairId in state.pairRooms)) {
        remote.delete(pairId);
        dropVideos(`group:${msg.room_id}:${pairId}`);
      }
    }
  }
  if (msg.type === "group" && !msg.joined && before.groups[msg.room_id]?.joined) {
    for (const m of before.groups[msg.room_id].members) remote.delete(`sfu:${m.sender}`);
    pinned.delete(msg.room_id);
    media.endScope(msg.room_id, "pair_id");
    dropVideos(`group:${msg.room_id}:`);
    lastStats.delete(msg.room_id);
  }
}

function endCallMedia(callId) {
  media.endScope(callId, "call_id");
  remote.delete(callId);
  connectedAt.delete(callId);
  lastStats.delete(callId);
  dropVideos(`call:${callId}:`);
}

async function loadHistory(roomId) {
  try {
    const { items } = await socket.request("get_history", { room_id: roomId });
    dispatch({ type: "history_result", room_id: roomId, items });
  } catch (err) {
    notice(`Could not load the call history (${err.code ?? err.name})`);
  }
}

function notice(text) {
  dispatch({ type: "notice", text });
}

/** Send a request; an error becomes a notice (the request's promise then resolves to null). */
async function ask(type, fields, what) {
  try {
    return await socket.request(type, fields);
  } catch (err) {
    notice(`${what} failed (${err.code ?? err.name})`);
    return null;
  }
}

// -- user actions ------------------------------------------------------------------------------

const actions = {
  async setRelayOnly(on) {
    relayPending = true;
    scheduleRender();
    try {
      const result = await socket.request("set_relay_only", { on });
      dispatch({ type: "settings", relay_only: result?.relay_only });
    } catch (err) {
      // Refused (no TURN server offered): the app's own words say why.
      notice(`Relay-only was not turned ${on ? "on" : "off"}: ${err.message ?? err.code ?? err.name}`);
    } finally {
      relayPending = false;
      scheduleRender();
    }
  },
  selectRoom(roomId) {
    dispatch({ type: "select_room", room_id: roomId });
    if (!state.history[roomId]) loadHistory(roomId);
  },
  async openDm(userId) {
    const result = await ask("open_dm", { user_id: userId }, "Opening the conversation");
    if (!result) return false;
    // A new DM shows up with the next sync: selected once the room list has it.
    if (state.rooms.some((r) => r.room_id === result.room_id)) actions.selectRoom(result.room_id);
    else awaitedRoom = result.room_id;
    return true;
  },
  placeCall(video) {
    if (!state.e2ee || !state.selected) return;
    ask("place_call", { room_id: state.selected, video }, "Placing the call");
  },
  joinGroup(video, roomId = state.selected) {
    if (!state.e2ee || !roomId) return;
    ask("group_join", { room_id: roomId, video }, "Joining the call");
  },
  declineGroup(roomId) {
    ask("group_decline", { room_id: roomId }, "Declining");
  },
  answer(callId, video, allowUnencrypted) {
    return ask("answer", { call_id: callId, video, allow_unencrypted: allowUnencrypted }, "Answering");
  },
  reject(callId) {
    ask("reject", { call_id: callId }, "Rejecting");
  },
  hangup(callId) {
    ask("hangup", { call_id: callId }, "Hanging up");
  },
  // `allowUnencrypted`: the user chose a button that says the call will not be encrypted.
  async holdAndAnswer(currentId, call, allowUnencrypted = false) {
    if (await ask("hold", { call_id: currentId, on_hold: true }, "Holding")) {
      dispatch({ type: "local_media", call_id: currentId, on_hold: true });
      await actions.answer(call.call_id, call.video, allowUnencrypted);
    }
  },
  async endAndAnswer(currentId, call, allowUnencrypted = false) {
    if (await ask("hangup", { call_id: currentId }, "Hanging up")) {
      await actions.answer(call.call_id, call.video, allowUnencrypted);
    }
  },
  async mute(call) {
    const muted = !call.local.audio_muted;
    if (await ask("mute", { call_id: call.call_id, audio: muted }, "Muting")) {
      dispatch({ type: "local_media", call_id: call.call_id, audio_muted: muted });
    }
  },
  async camera(call) {
    if (!call.video) {
      await ask("upgrade_video", { call_id: call.call_id }, "Starting the camera");
      return;
    }
    const off = !call.local.video_muted;
    if (await ask("mute", { call_id: call.call_id, video: off }, "Switching the camera")) {
      dispatch({ type: "local_media", call_id: call.call_id, video_muted: off });
    }
  },
  async screen(call) {
    const on = !call.local.screen;
    await shareScreen(call.call_id, on, (value) => ask("screen_share", { call_id: call.call_id, on: value }, "Screen sharing"));
    dispatch({ type: "local_media", call_id: call.call_id, screen: Boolean(media.local.screen(call.call_id)) });
  },
  async hold(call) {
    const onHold = !call.local.on_hold;
    if (await ask("hold", { call_id: call.call_id, on_hold: onHold }, onHold ? "Holding" : "Resuming")) {
      dispatch({ type: "local_media", call_id: call.call_id, on_hold: onHold });
    }
  },
  async groupMute(roomId, fields) {
    const muted = { audio: fields.audio, video: fields.video };
    if (await ask("group_mute", { room_id: roomId, ...fields }, "Muting")) {
      media.local.setEnabled(roomId, {
        audio: typeof muted.audio === "boolean" ? !muted.audio : undefined,
        video: typeof muted.video === "boolean" ? !muted.video : undefined,
      });
      dispatch({ type: "group_local", room_id: roomId, audio_muted: muted.audio, video_muted: muted.video });
    }
  },
  async groupScreen(roomId, on) {
    await shareScreen(roomId, on, (value) => ask("group_screen_share", { room_id: roomId, on: value }, "Screen sharing"));
    dispatch({ type: "group_local", room_id: roomId, screen: Boolean(media.local.screen(roomId)) });
  },
  /** Show a member large (again: not any more); in an SFU call its full resolution comes. */
  pin(roomId, sender) {
    if (pinned.get(roomId) === sender) pinned.delete(roomId);
    else pinned.set(roomId, sender);
    updateFocus();
    scheduleRender();
  },
  groupLeave(roomId) {
    ask("group_leave", { room_id: roomId }, "Leaving");
  },
  toggleStats() {
    statsOpen = !statsOpen;
    if (statsOpen) refreshStats();
    scheduleRender();
  },
  dismissNotice() {
    dispatch({ type: "notice", text: null });
  },
};

/** Start (asking for the screen while the click still counts as a user gesture) or stop sharing. */
async function shareScreen(scope, on, tell) {
  if (on) {
    try {
      await media.local.startScreen(scope, () => shareScreen(scope, false, tell).then(scheduleRender));
    } catch (err) {
      notice(`Screen sharing was not started (${err.name})`);
      return;
    }
    if (!(await tell(true))) media.local.stopScreen(scope);
  } else {
    await tell(false);
    media.local.stopScreen(scope);
  }
}

// -- rendering ---------------------------------------------------------------------------------

const els = {
  me: document.getElementById("me"),
  status: document.getElementById("status"),
  banners: document.getElementById("banners"),
  rooms: document.getElementById("room-list"),
  main: document.getElementById("main"),
  settings: document.getElementById("settings"),
};

const ctx = {
  remoteStreams: (id) => remote.get(id) ?? new Map(),
  localStream: (scope) => media.local.current(scope),
  connectedAt: (id) => connectedAt.get(id),
  lastStats: (id) => lastStats.get(id) ?? null,
  speaking: (sender) => speaking.speaking(sender, performance.now() / 1000),
  pinned: (roomId) => pinned.get(roomId) ?? null,
  activeSpeaker: () => speaking.active(performance.now() / 1000),
  get statsOpen() {
    return statsOpen;
  },
};

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => {
    renderQueued = false;
    render();
  });
}

function render() {
  const vm = viewModel(state, Date.now() / 1000);
  els.me.textContent = vm.me ? vm.me.display_name || shortName(vm.me.user_id) : "";
  els.status.textContent = vm.connected ? "" : "offline – reconnecting…";
  els.status.hidden = vm.connected;
  renderBanners(els.banners, vm, actions);
  renderRooms(els.rooms, vm, actions);
  renderSettings(els.settings, relaySetting(state, relayPending), actions);
  if (vm.group) {
    const room = state.rooms.find((r) => r.room_id === vm.group.room_id);
    renderGroup(els.main, vm.group, room && vm.rooms.find((r) => r.room_id === room.room_id), vm.me, ctx, actions);
  } else if (vm.call) {
    renderCall(els.main, vm.call, ctx, actions);
  } else {
    renderRoom(els.main, vm, actions);
  }
  const call = vm.ringing ?? vm.waiting?.call ?? null;
  // A room's group call rings too (sound, notification, title), when no 1:1 call does.
  const room = call ? null : (vm.group_rings?.find((r) => r.can_join) ?? null);
  const who = call ? shortName(call.peer) : room ? `${room.sender ? shortName(room.sender) : "someone"} in ${room.name}` : "";
  if ((call || room) && !ringer.ringing) ringer.start(call ? "Incoming call" : "Group call", call ? `${who} is calling` : `${who} started a call`);
  if (!call && !room && ringer.ringing) ringer.stop();
  document.title = call || room ? `Call from ${who} – sealcall` : "sealcall";
}

// The stats panel, the e2ee badge and the call timer refresh once a second during a call.
async function refreshStats() {
  const vm = viewModel(state, Date.now() / 1000);
  const id = vm.group?.room_id ?? vm.call?.call_id;
  if (!id) return;
  try {
    lastStats.set(id, await media.stats(id));
  } catch (err) {
    console.warn("sealcall: stats failed:", err.name);
  }
  scheduleRender();
}
setInterval(refreshStats, STATS_INTERVAL_MS);

// Who is speaking: each member's received audio level, ten times a second while in a group call.
const speaking = new SpeakingDetector();
let speakingShown = "";
const pinned = new Map(); // room id -> the sender the user shows large
const focused = new Map(); // room id -> the sender whose full resolution we asked the SFU for

/** The member shown large: the one the user pinned, else the active speaker. */
function updateFocus() {
  const group = viewModel(state, 0).group;
  if (!group) return;
  const present = new Set(group.members.map((m) => m.sender));
  const pin = pinned.get(group.room_id);
  const active = speaking.active(performance.now() / 1000);
  const focus = present.has(pin) ? pin : present.has(active) ? active : null;
  if (focused.get(group.room_id) !== focus) {
    focused.set(group.room_id, focus);
    media.setFocus(group.room_id, focus);
  }
}
setInterval(async () => {
  const group = viewModel(state, 0).group;
  if (!group) return;
  const levels = await media.audioLevels(group.room_id);
  const now = performance.now() / 1000;
  for (const [sender, level] of levels) speaking.level(sender, levelToDbov(level), now);
  updateFocus();
  const shown = JSON.stringify([group.members.map((m) => speaking.speaking(m.sender, now)), speaking.active(now)]);
  if (shown !== speakingShown) {
    speakingShown = shown;
    scheduleRender();
  }
}, LEVELS_INTERVAL_MS);

document.addEventListener("click", () => ringer.unlock(), { once: true });

document.getElementById("new-dm").addEventListener("submit", async (event) => {
  event.preventDefault(); // no navigation: the socket does the work
  const input = document.getElementById("new-dm-user");
  const userId = input.value.trim();
  if (userId && (await actions.openDm(userId))) input.value = "";
});

// For tests (Playwright reads these): the state, the stats of a call, pair or room, the ring.
window.sealcall = {
  state: () => JSON.parse(JSON.stringify(state)),
  stats: (id) => media.stats(id),
  ringing: () => ringer.ringing,
  e2ee,
};

render();
socket.connect();

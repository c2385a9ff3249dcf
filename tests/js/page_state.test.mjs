// The page's state reducer and selectors (static/state.js): socket events in, view model out.
// Run: node --test tests/js/
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  currentCall,
  initialState,
  reduce,
  remoteByPurpose,
  ringingCall,
  roomOfPair,
  viewModel,
  waitingCall,
} from "../../src/sealcall/web/static/state.js";

const ROOMS = [
  { room_id: "!dm", name: "", kind: "dm", peer: "@bob:x", members: 2 },
  { room_id: "!g", name: "Team", kind: "group", peer: null, members: 3 },
];
const call = (id, fields = {}) => ({
  type: "call",
  call_id: id,
  room_id: "!dm",
  peer: "@bob:x",
  direction: "incoming",
  video: true,
  state: "ringing",
  encrypted: true,
  owner: false,
  ...fields,
});
const item = (id, started_at, outcome = "answered") => ({
  call_id: id,
  caller: "@alice:x",
  callee: "@bob:x",
  direction: "outgoing",
  video: false,
  outcome,
  started_at,
  duration: 3,
  end_reason: "user_hangup",
  group: false,
});
const run = (actions, e2ee = true) => actions.reduce(reduce, initialState(e2ee));
const ready = [{ type: "socket_open" }, { type: "rooms_result", rooms: ROOMS }];

test("rooms arrive, the first is selected, names fall back to the peer", () => {
  const s = run(ready);
  assert.equal(s.selected, "!dm");
  const vm = viewModel(s, 0);
  assert.deepEqual(vm.rooms.map((r) => r.name), ["bob", "Team"]);
  assert.equal(vm.room.kind, "dm");
  assert.equal(vm.room.can_call, true);
  // A selection that still exists survives a new room list.
  const again = run([...ready, { type: "select_room", room_id: "!g" }, { type: "rooms_result", rooms: ROOMS }]);
  assert.equal(again.selected, "!g");
});

test("history is oldest first and deduplicated by call id (a live item replaces a fetched one)", () => {
  const s = run([
    ...ready,
    { type: "history_result", room_id: "!dm", items: [item("b", 20), item("a", 10)] },
    { type: "history_item", room_id: "!dm", item: item("b", 20, "missed") },
    { type: "history_item", room_id: "!dm", item: item("c", 30) },
  ]);
  const timeline = viewModel(s, 0).timeline;
  assert.deepEqual(timeline.map((t) => [t.call_id, t.outcome]), [["a", "answered"], ["b", "missed"], ["c", "answered"]]);
  // Junk items (no call id) are not shown.
  const junk = reduce(s, { type: "history_item", room_id: "!dm", item: { outcome: "x" } });
  assert.equal(viewModel(junk, 0).timeline.length, 3);
});

test("the history of a room keeps its newest 500 calls", () => {
  const items = Array.from({ length: 600 }, (_, i) => item(`c${i}`, i));
  const s = run([...ready, { type: "history_result", room_id: "!dm", items }]);
  assert.equal(s.history["!dm"].length, 500);
  assert.equal(s.history["!dm"][0].call_id, "c100");
});

test("an incoming call rings; answered it becomes the current call and stops ringing", () => {
  let s = run([...ready, call("c1"), { type: "incoming_call", call_id: "c1" }]);
  assert.equal(ringingCall(s).call_id, "c1");
  assert.equal(currentCall(s), null);
  assert.equal(viewModel(s, 0).room.can_call, false); // no second call while one rings
  s = reduce(s, call("c1", { state: "connecting", owner: true }));
  assert.equal(ringingCall(s), null);
  assert.equal(currentCall(s).call_id, "c1");
  s = reduce(s, { type: "call_ended", call_id: "c1", reason: "user_hangup", by_remote: true });
  assert.equal(currentCall(s), null);
  assert.match(s.notice.text, /bob ended by bob: hung up/);
  assert.equal(viewModel(s, 0).room.can_call, true);
});

test("a second incoming call during a call is call waiting, not a ring banner", () => {
  const s = run([
    ...ready,
    call("c1", { direction: "outgoing", state: "connected", owner: true }),
    call("c2", { peer: "@carol:x" }),
    { type: "call_waiting", call_id: "c2", current_call_id: "c1" },
  ]);
  assert.equal(ringingCall(s), null);
  const waiting = waitingCall(s);
  assert.equal(waiting.call.call_id, "c2");
  assert.equal(waiting.current_call_id, "c1");
  assert.equal(currentCall(s).call_id, "c1");
});

test("remote media, local media and a snapshot keep each other", () => {
  let s = run([...ready, call("c1", { state: "connected", owner: true, video: false })]);
  assert.equal(s.calls.c1.local.video_muted, true); // an audio call has no camera on
  s = reduce(s, { type: "remote_media", call_id: "c1", streams: { s1: { purpose: "m.usermedia", audio_muted: true, video_muted: false } }, on_hold: true });
  s = reduce(s, { type: "local_media", call_id: "c1", audio_muted: true, screen: "yes" });
  s = reduce(s, call("c1", { state: "connected", owner: true, video: true }));
  assert.equal(s.calls.c1.remote.on_hold, true);
  assert.equal(s.calls.c1.remote.streams.s1.audio_muted, true);
  assert.equal(s.calls.c1.local.audio_muted, true);
  assert.equal(s.calls.c1.local.screen, false); // not a boolean: ignored
  // Events for unknown calls change nothing.
  assert.equal(reduce(s, { type: "remote_media", call_id: "nope", streams: {} }), s);
  assert.equal(reduce(s, { type: "local_media", call_id: "nope", audio_muted: true }), s);
});

test("a call snapshot in state ended removes the call", () => {
  const s = run([...ready, call("c1"), call("c1", { state: "ended" })]);
  assert.deepEqual(s.calls, {});
});

test("group events: members, the active speaker, the pairs' rooms; leaving ends the group view", () => {
  let s = run([
    ...ready,
    {
      type: "group",
      room_id: "!g",
      joined: true,
      members: [{ user_id: "@bob:x", device_id: "B", pair_id: "p1", state: "connected", audio_muted: false, video_muted: false, speaking: true }],
      active_speaker: "@bob:x",
    },
  ]);
  assert.equal(roomOfPair(s, "p1"), "!g");
  assert.equal(roomOfPair(s, "p2"), null);
  const vm = viewModel(s, 0);
  assert.equal(vm.group.room_id, "!g");
  assert.equal(vm.group.active_speaker, "@bob:x");
  assert.equal(vm.rooms[1].in_call, true);
  s = reduce(s, { type: "group_local", room_id: "!g", audio_muted: true });
  assert.equal(s.groups["!g"].local.audio_muted, true);
  s = reduce(s, { type: "group", room_id: "!g", joined: false, members: [], active_speaker: null });
  assert.equal(viewModel(s, 0).group, null);
});

test("without RTCRtpScriptTransform no call can be placed", () => {
  const vm = viewModel(run(ready, false), 0);
  assert.equal(vm.e2ee, false);
  assert.equal(vm.room.can_call, false);
});

test("offline, no call can be placed", () => {
  const vm = viewModel(run([...ready, { type: "socket_closed" }]), 0);
  assert.equal(vm.room.can_call, false);
});

const fakeStream = (audio, video) => ({
  getTracks: () => [...Array(audio).fill({ kind: "audio" }), ...Array(video).fill({ kind: "video" })],
  getAudioTracks: () => Array(audio).fill({ kind: "audio" }),
});

test("remote streams split into the camera's and the screen's, by remote_media or by their tracks", () => {
  const user = fakeStream(1, 1);
  const screen = fakeStream(0, 1);
  const streams = new Map([["s-screen", screen], ["s-user", user]]);
  assert.deepEqual(remoteByPurpose(streams, null), { user, screen });
  const meta = { "s-user": { purpose: "m.usermedia" }, "s-screen": { purpose: "m.screenshare" } };
  assert.deepEqual(remoteByPurpose(streams, meta), { user, screen });
  // A screen share that remote_media no longer names is gone, though its stream object stays.
  assert.deepEqual(remoteByPurpose(streams, { "s-user": { purpose: "m.usermedia" } }), { user, screen: null });
  // A stream with no tracks left is skipped.
  assert.deepEqual(remoteByPurpose(new Map([["x", fakeStream(0, 0)]]), null), { user: null, screen: null });
});

test("a call that stops ringing on the caller's side is a missed call", () => {
  const s = run([...ready, call("c1"), { type: "call_ended", call_id: "c1", reason: "user_hangup", by_remote: true }]);
  assert.equal(s.notice.text, "Missed call from bob");
  const taken = run([...ready, call("c1"), { type: "call_ended", call_id: "c1", reason: "answered_elsewhere", by_remote: true }]);
  assert.match(taken.notice.text, /answered on another device/);
});

test("an audio call upgraded to video has its camera on", () => {
  let s = run([...ready, call("c1", { state: "connected", owner: true, video: false })]);
  assert.equal(s.calls.c1.local.video_muted, true);
  s = reduce(s, call("c1", { state: "connected", owner: true, video: true }));
  assert.equal(s.calls.c1.local.video_muted, false);
});

test("junk events never break the reducer or the view model", () => {
  let seed = 42;
  const rand = (n) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const values = [null, undefined, 0, -1, 1e308, "", "x", "ringing", "!dm", "c1", true, false, [], [null], {}, { a: 1 }, "ended"];
  const junk = (depth = 0) => {
    const v = values[rand(values.length)];
    if (depth < 2 && rand(4) === 0) return { call_id: junk(depth + 1), purpose: junk(depth + 1), user_id: junk(depth + 1), pair_id: "p1" };
    if (depth < 2 && rand(5) === 0) return [junk(depth + 1), junk(depth + 1)];
    return v;
  };
  const types = ["call", "incoming_call", "call_waiting", "remote_media", "call_ended", "history_item", "group", "rooms_result", "history_result", "hello_result", "local_media", "group_local", "select_room", "notice", "group_ring", "group_ring_ended"];
  const fields = ["call_id", "room_id", "peer", "direction", "video", "state", "encrypted", "owner", "streams", "on_hold", "item", "items", "rooms", "members", "joined", "active_speaker", "reason", "by_remote", "audio_muted", "text", "sender"];
  let s = run(ready);
  for (let i = 0; i < 3000; i++) {
    const action = { type: types[rand(types.length)] };
    for (const f of fields) if (rand(2)) action[f] = junk();
    if (rand(3) === 0) action.call_id = "c1";
    if (rand(3) === 0) action.room_id = "!dm";
    s = reduce(s, action);
    viewModel(s, 0);
  }
  // Whatever came, what the page keeps has its shape.
  assert.ok(Object.keys(s.calls).every((id) => typeof id === "string" && id !== "undefined"));
  assert.ok(s.rooms.every((r) => typeof r.room_id === "string"));
  assert.ok(Object.values(s.history).every((items) => items.every((it) => typeof it.call_id === "string")));
  assert.ok(Object.values(s.groupRings).every((r) => typeof r.room_id === "string" && (r.sender === null || typeof r.sender === "string")));
});

test("a lost socket drops the calls and group calls shown: Python ended those this page drove and re-sends the rest", () => {
  const group = { type: "group", room_id: "!g", joined: true, members: [{ user_id: "@c:x", pair_id: "p1" }] };
  const before = [...ready, call("c1", { state: "connected", owner: true }), group, { type: "group_ring", room_id: "!g2", sender: "@c:x" }];
  const s = run([...before, { type: "socket_closed" }]);
  assert.deepEqual([s.calls, s.waiting, s.groups, s.groupRings], [{}, {}, {}, {}]);
  const vm = viewModel(s, 0);
  assert.equal(vm.call, null);
  assert.equal(vm.group, null);
  // Reconnected: the snapshots that come again show the calls that still go on.
  const again = reduce(reduce(s, { type: "socket_open" }), call("c2"));
  assert.equal(viewModel(again, 0).ringing.call_id, "c2");
});

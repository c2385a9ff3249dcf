// A room's group call that rings the page (static/state.js): the ring banner's data, gone when
// the ring ends or we join; a ring of a call we are in is not shown. Run: node --test tests/js/
import assert from "node:assert/strict";
import { test } from "node:test";

import { initialState, reduce, viewModel } from "../../src/sealcall/web/static/state.js";

const ROOMS = [
  { room_id: "!dm", name: "", kind: "dm", peer: "@bob:x", members: 2 },
  { room_id: "!g", name: "Team", kind: "group", peer: null, members: 3 },
];
const run = (actions) => actions.reduce(reduce, initialState(true));
const ready = [{ type: "socket_open" }, { type: "rooms_result", rooms: ROOMS }];
const ring = { type: "group_ring", room_id: "!g", sender: "@cat:x" };
const group = (joined) => ({ type: "group", room_id: "!g", joined, members: [] });

test("a ring shows its banner until it ends", () => {
  let s = run([...ready, ring]);
  assert.deepEqual(viewModel(s, 0).group_rings, [{ room_id: "!g", sender: "@cat:x", name: "Team", can_join: true }]);
  s = reduce(s, { type: "group_ring_ended", room_id: "!g", reason: "declined" });
  assert.deepEqual(viewModel(s, 0).group_rings, []);
});

test("joining the call ends its ring; while in another call the banner cannot join", () => {
  let s = run([...ready, ring, group(true)]);
  assert.deepEqual(viewModel(s, 0).group_rings, []);
  s = run([...ready, { type: "call", call_id: "c1", room_id: "!dm", peer: "@bob:x", direction: "outgoing", video: false, state: "connected", encrypted: true, owner: true }, ring]);
  assert.equal(viewModel(s, 0).group_rings[0].can_join, false);
});

test("a ring without a usable room is dropped; a junk sender becomes null", () => {
  let s = run([...ready, { type: "group_ring", room_id: 5, sender: "@x:y" }]);
  assert.deepEqual(s.groupRings, {});
  s = reduce(s, { type: "group_ring", room_id: "!g", sender: { a: 1 } });
  assert.deepEqual(viewModel(s, 0).group_rings.map((r) => r.sender), [null]);
});

test("the pairs of a room are those of its latest snapshot: a member who rejoins again and again leaves nothing behind", () => {
  const member = (pair) => ({ user_id: "@cat:x", device_id: "D", sender: "@cat:x D", pair_id: pair });
  const other = { type: "group", room_id: "!h", joined: false, members: [member("h1")] };
  let s = run([...ready, other]);
  for (let i = 0; i < 50; i++) s = reduce(s, { type: "group", room_id: "!g", joined: true, members: [member(`p${i}`)] });
  assert.deepEqual(s.pairRooms, { h1: "!h", p49: "!g" });
  s = reduce(s, group(false));
  assert.deepEqual(s.pairRooms, { h1: "!h" });
});

// The relay-only setting in the page's state (static/state.js) and its panel (static/settings.js).
// Run: node --test tests/js/
import assert from "node:assert/strict";
import { test } from "node:test";

import { relaySetting } from "../../src/sealcall/web/static/settings.js";
import { initialState, reduce } from "../../src/sealcall/web/static/state.js";

const hello = (fields = {}) => ({ type: "hello_result", user_id: "@a:x", device_id: "D", display_name: "a", ...fields });
const connected = (fields) => reduce(reduce(initialState(true), { type: "socket_open" }), hello(fields));

test("the hello result gives the app's setting; it is off unless it says true", () => {
  assert.equal(connected({ relay_only: true }).relayOnly, true);
  assert.equal(connected({}).relayOnly, false);
  assert.equal(connected({ relay_only: "yes" }).relayOnly, false);
  assert.equal(relaySetting(connected({ relay_only: true })).on, true);
});

test("a settings event changes it; junk leaves it as it was", () => {
  let state = connected({ relay_only: false });
  state = reduce(state, { type: "settings", relay_only: true });
  assert.equal(state.relayOnly, true);
  for (const junk of [undefined, null, 1, "false", {}]) {
    assert.equal(reduce(state, { type: "settings", relay_only: junk }).relayOnly, true);
  }
  assert.equal(reduce(state, { type: "settings", relay_only: false }).relayOnly, false);
});

test("the switch waits for the socket and for a change on its way", () => {
  assert.equal(relaySetting(initialState(true)).disabled, true);
  const state = connected({});
  assert.equal(relaySetting(state).disabled, false);
  assert.equal(relaySetting(state, true).disabled, true);
  assert.equal(relaySetting(reduce(state, { type: "socket_closed" })).disabled, true);
});

test("during a call it says a change applies to the next call only", () => {
  let state = connected({});
  assert.equal(relaySetting(state).note, null);
  state = reduce(state, {
    type: "call", call_id: "c", room_id: "!dm", peer: "@b:x", direction: "outgoing",
    video: false, state: "connected", encrypted: true, owner: true,
  });
  assert.match(relaySetting(state).note, /next call/);
  state = reduce(state, { type: "call_ended", call_id: "c", reason: "user_hangup", by_remote: false });
  assert.equal(relaySetting(state).note, null);
  state = reduce(state, { type: "group", room_id: "!g", joined: true, members: [] });
  assert.match(relaySetting(state).note, /next call/);
});

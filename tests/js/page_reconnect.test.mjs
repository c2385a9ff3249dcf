// A call whose media path is down: Chromium's own ICE states reach Python (static/peer.js), which
// makes the call `reconnecting`; the page shows that state (static/format.js, static/state.js).
// Run: node --test tests/js/
import assert from "node:assert/strict";
import { test } from "node:test";

import { callStatus } from "../../src/sealcall/web/static/format.js";
import { Peer } from "../../src/sealcall/web/static/peer.js";
import { currentCall, inCall } from "../../src/sealcall/web/static/state.js";

test("Chromium's disconnected and failed states are reported; its passing states are not", () => {
  const reported = [];
  const peer = new Peer({ idField: "call_id", id: "c1", scope: "c1", local: null, worker: null, report: (type, fields) => reported.push([type, fields]), onTrack: () => {} });
  for (const state of ["new", "connecting", "connected", "disconnected", "connected", "failed", "closed"]) {
    peer.connectionChanged(state);
  }
  assert.deepEqual(
    reported.map(([type, fields]) => [type, fields.call_id, fields.state]),
    ["connected", "disconnected", "connected", "failed", "closed"].map((s) => ["connection_state", "c1", s]),
  );
});

test("a reconnecting call reads Reconnecting…, not its duration, and stays the current call", () => {
  assert.equal(callStatus("reconnecting", 65), "Reconnecting…");
  assert.equal(callStatus("connected", 65), "1:05");
  assert.equal(callStatus("connected", null), "Connected");
  assert.equal(callStatus("connecting", null), "Connecting…");
  assert.equal(callStatus("some_new_state", null), "some_new_state");
  const calls = {
    c2: { call_id: "c2", state: "invite_sent", owner: true, direction: "outgoing" },
    c1: { call_id: "c1", state: "reconnecting", owner: true, direction: "outgoing" },
  };
  assert.equal(currentCall({ calls }).call_id, "c1");
  assert.ok(inCall(calls.c1) && !inCall(calls.c2));
});

// The page's media engine (static/media.js) keeps a 1:1 call and a group call apart: the far side
// chooses call ids (and a mesh pair's id), so a call whose id is a group room's id or a pair's id
// must never reach that group's worker scope (its keys, allow_plain, forget) or its connections.
// Run: node --test tests/js/
import assert from "node:assert/strict";
import { test } from "node:test";

class FakeWorker {
  constructor() {
    this.posted = [];
  }
  postMessage(msg) {
    this.posted.push(msg);
  }
  addEventListener() {}
}
globalThis.Worker = FakeWorker;
globalThis.RTCRtpScriptTransform = class {};
globalThis.navigator ??= {};

const { MediaEngine } = await import("../../src/sealcall/web/static/media.js");

const KEY = Buffer.alloc(16, 7).toString("base64");
const ROOM = "!room:x";

function engine() {
  const reports = [];
  const media = new MediaEngine({
    report: (type, fields) => reports.push({ type, ...fields }),
    roomOfPair: () => ROOM,
    onTrack: () => {},
    onLocal: () => {},
  });
  return { media, reports, posted: () => media.worker?.posted ?? [] };
}

async function inGroup(media) {
  // A pair of the room's call exists and the group's send key is in the worker.
  await media.handle({ type: "media", op: "add_candidates", pair_id: "pair-1", room_id: ROOM, sender: "@b:x B", candidates: [] });
  media.groupKeys({ type: "group_keys", room_id: ROOM, suite: 1, send: { kid: 3, key: KEY }, receive: [] });
}

for (const [what, callId] of [
  ["a group room's id", ROOM],
  ["a mesh pair's id", "pair-1"],
]) {
  test(`a 1:1 call whose id is ${what} never touches the group's scope`, async () => {
    const { media, reports, posted } = engine();
    await inGroup(media);
    const before = posted().length;
    await media.handle({ type: "media", op: "keys", call_id: callId, suite: 1, send: KEY, receive: KEY });
    await media.handle({ type: "media", op: "allow_unencrypted", call_id: callId });
    await media.handle({ type: "media", op: "close", call_id: callId });
    media.endScope(callId, "call_id"); // the refused call's call_ended
    const after = posted().slice(before);
    assert.deepEqual(after.filter((m) => m.scope === ROOM), [], "the group's scope was touched");
    assert.equal(media.peers.get("pair-1")?.idField, "pair_id", "the pair was closed");
    assert.deepEqual(
      reports.filter((r) => r.call_id === callId).map((r) => r.type),
      ["media_failed", "media_failed"],
    );
  });
}

test("a pair whose room is a 1:1 call's id is refused; the call's scope stays its own", async () => {
  const { media, reports, posted } = engine();
  await media.handle({ type: "media", op: "keys", call_id: ROOM, suite: 1, send: KEY, receive: KEY });
  const before = posted().length;
  await media.handle({ type: "media", op: "add_candidates", pair_id: "pair-2", room_id: ROOM, sender: "@b:x B", candidates: [] });
  media.groupKeys({ type: "group_keys", room_id: ROOM, suite: 1, send: { kid: 3, key: KEY }, receive: [] });
  assert.deepEqual(posted().slice(before), []);
  assert.deepEqual(reports.map((r) => [r.type, r.pair_id]), [["media_failed", "pair-2"]]);
});

test("after the call ends, a group in a room of that id works", async () => {
  const { media, posted } = engine();
  await media.handle({ type: "media", op: "keys", call_id: ROOM, suite: 1, send: KEY, receive: KEY });
  await media.handle({ type: "media", op: "close", call_id: ROOM });
  media.endScope(ROOM, "call_id");
  const before = posted().length;
  await inGroup(media);
  assert.deepEqual(posted().slice(before).map((m) => [m.op, m.scope]), [["set_send_key", ROOM]]);
});

test("a lost page socket ends every call and group scope (the worker forgets their keys)", async () => {
  const { media, posted } = engine();
  await inGroup(media);
  await media.handle({ type: "media", op: "keys", call_id: "call-1", suite: 1, send: KEY, receive: KEY });
  const before = posted().length;
  media.endAll();
  assert.equal(media.peers.size, 0);
  assert.deepEqual(new Set(posted().slice(before).filter((m) => m.op === "forget").map((m) => m.scope)), new Set([ROOM, "call-1"]));
});

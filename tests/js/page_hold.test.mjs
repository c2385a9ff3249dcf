// A call on hold (static/peer.js, static/local_media.js): the held party no longer gets our
// microphone and camera (as matrix-js-sdk mutes them on hold): "Hold & answer" must not let the
// first caller hear the second call. The user's own mute survives the hold.
// Run: node --test tests/js/
import assert from "node:assert/strict";
import { test } from "node:test";

import { LocalMedia } from "../../src/sealcall/web/static/local_media.js";
import { Peer } from "../../src/sealcall/web/static/peer.js";

const track = (kind) => ({ kind, enabled: true, stop() {} });
class FakeStream {
  constructor(tracks) {
    this.tracks = tracks;
  }
  getAudioTracks() {
    return this.tracks.filter((t) => t.kind === "audio");
  }
  getVideoTracks() {
    return this.tracks.filter((t) => t.kind === "video");
  }
  getTracks() {
    return this.tracks;
  }
}
const devices = {
  getUserMedia: async ({ video }) => new FakeStream([track("audio"), ...(video ? [track("video")] : [])]),
  getDisplayMedia: async () => new FakeStream([{ ...track("video"), addEventListener() {} }]),
};

function peerOf(local, scope) {
  const peer = new Peer({ idField: "call_id", id: scope, scope, local, worker: null, report: () => {}, onTrack: () => {} });
  peer.pc = { getTransceivers: () => [] };
  return peer;
}

const enabled = (stream) => stream.getTracks().map((t) => [t.kind, t.enabled]);

test("holding a call stops its microphone and camera; resuming restores the user's own mute", async () => {
  const local = new LocalMedia(devices);
  const held = await local.userMedia("c1", true);
  const other = await local.userMedia("c2", false);
  const screen = await local.startScreen("c1");
  const peer = peerOf(local, "c1");
  peer.applyHold(true);
  assert.deepEqual(enabled(held), [["audio", false], ["video", false]]);
  assert.deepEqual(enabled(screen), [["video", false]], "the shared screen is held too");
  assert.deepEqual(enabled(other), [["audio", true]], "another call's microphone is its own");
  local.setEnabled("c1", { audio: false }); // the user mutes while on hold
  assert.deepEqual(enabled(held), [["audio", false], ["video", false]]);
  peer.applyHold(false);
  assert.deepEqual(enabled(held), [["audio", false], ["video", true]]);
  assert.deepEqual(enabled(screen), [["video", true]]);
});

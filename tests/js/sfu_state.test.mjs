// The pure parts of the page's SFU link (static/sfu_state.js): the SFU's socket address, its
// messages checked, member ids, the track map, the layers asked for, the encodings.
// Run: node --test tests/js/
import assert from "node:assert/strict";
import { test } from "node:test";

const s = await import("../../src/sealcall/web/static/sfu_state.js");

test("the SFU's signaling address: ws for http, wss for https, /ws appended; junk refused", () => {
  assert.equal(s.sfuSocketUrl("http://127.0.0.1:8443"), "ws://127.0.0.1:8443/ws");
  assert.equal(s.sfuSocketUrl("https://sfu.example/room-a/"), "wss://sfu.example/room-a/ws");
  for (const bad of ["ftp://x", "javascript:alert(1)", "http://u:p@x/", "http://x/?a=1", "http://x/#f", "", null, 7, "x"]) {
    assert.equal(s.sfuSocketUrl(bad), null, String(bad));
  }
});

test("SFU member ids and worker sender ids map both ways; malformed ones are null", () => {
  assert.equal(s.memberSender("@ann:hs|DEV1"), "@ann:hs DEV1");
  assert.equal(s.senderMember("@ann:hs DEV1"), "@ann:hs|DEV1");
  assert.equal(s.memberSender("@ann:hs|a|b"), "@ann:hs a|b"); // the first bar splits
  for (const bad of ["", "|DEV", "@ann:hs|", "nobar", null, 3, "x".repeat(300)]) {
    assert.equal(s.memberSender(bad), null, String(bad));
  }
  assert.equal(s.senderMember("nospace"), null);
});

test("SFU messages: known types with their fields pass, anything else is null", () => {
  assert.deepEqual(s.parseSfuMessage('{"type":"joined","id":"@a:hs|D","answer":"v=0"}'), { type: "joined", id: "@a:hs|D", answer: "v=0" });
  // The same from an SFU that still names them member/sdp.
  assert.deepEqual(s.parseSfuMessage('{"type":"joined","member":"@a:hs|D","sdp":"v=0"}'), { type: "joined", id: "@a:hs|D", answer: "v=0" });
  assert.equal(s.parseSfuMessage('{"type":"offer","sdp":"v=0"}').sdp, "v=0");
  assert.equal(s.parseSfuMessage('{"type":"layer","publisher":"@a:hs|D","quality":"full"}').quality, "full");
  assert.equal(s.parseSfuMessage('{"type":"floor","holder":null}').holder, null);
  assert.deepEqual(s.parseSfuMessage('{"type":"speaking","members":["@a:hs|D"]}').members, ["@a:hs|D"]);
  for (const bad of [
    "not json",
    "[]",
    "null",
    '{"type":"offer"}',
    '{"type":"offer","sdp":""}',
    '{"type":"joined","id":"x"}',
    '{"type":"tracks","tracks":{}}',
    '{"type":"layer","publisher":"a","quality":"huge"}',
    '{"type":"speaking","members":[1]}',
    '{"type":"floor","holder":5}',
    '{"type":"mystery"}',
    '{"type":"__proto__"}',
    `{"type":"offer","sdp":"${"a".repeat(300 * 1024)}"}`,
    42,
  ]) {
    assert.equal(s.parseSfuMessage(bad), null, String(bad).slice(0, 60));
  }
});

test("the track map: mid -> member and its sender; malformed or repeated entries counted", () => {
  const { map, bad } = s.trackMap([
    { mid: "4", ssrc: 1, kind: "audio", member: "@b:hs|B" },
    { mid: "5", ssrc: 2, kind: "video", member: "@b:hs|B" },
    { mid: "5", ssrc: 3, kind: "video", member: "@c:hs|C" }, // a second claim on a mid
    { mid: "6", kind: "data", member: "@c:hs|C" },
    { mid: "7", kind: "video", member: "nobar" },
    { kind: "video", member: "@c:hs|C" },
    "junk",
  ]);
  assert.deepEqual([...map], [
    ["4", { kind: "audio", member: "@b:hs|B", sender: "@b:hs B", ssrc: 1 }],
    ["5", { kind: "video", member: "@b:hs|B", sender: "@b:hs B", ssrc: 2 }],
  ]);
  assert.equal(bad, 5);
  assert.equal(s.trackMap(null).map.size, 0);
  const many = Array.from({ length: s.MAX_TRACKS + 10 }, (_, i) => ({ mid: String(i), kind: "audio", member: `@u${i}:hs|D` }));
  assert.equal(s.trackMap(many).map.size, s.MAX_TRACKS);
});

test("layers: full for the focused publisher, thumbnails for the others; only changes are sent", () => {
  const wanted = s.wantedLayers(["@b:hs|B", "@c:hs|C"], "@c:hs|C");
  assert.deepEqual([...wanted], [["@b:hs|B", "thumbnail"], ["@c:hs|C", "full"]]);
  const before = new Map([["@b:hs|B", "thumbnail"], ["@c:hs|C", "thumbnail"]]);
  assert.deepEqual(s.subscribeChanges(before, wanted), [{ type: "subscribe", publisher: "@c:hs|C", quality: "full" }]);
  assert.deepEqual(s.subscribeChanges(new Map(), s.wantedLayers(["@z:hs|Z", "@a:hs|A"], null)), [
    { type: "subscribe", publisher: "@a:hs|A", quality: "thumbnail" },
    { type: "subscribe", publisher: "@z:hs|Z", quality: "thumbnail" },
  ]);
  assert.deepEqual(s.subscribeChanges(wanted, wanted), []);
  // What Python asked for a publisher (sfu_subscribe) wins over the page's focus.
  const asked = new Map([["@c:hs|C", "none"]]);
  assert.deepEqual([...s.wantedLayers(["@b:hs|B", "@c:hs|C"], "@c:hs|C", asked)], [["@b:hs|B", "thumbnail"], ["@c:hs|C", "none"]]);
});

test("encodings: the thumbnail scaled to about 180 lines at 150 kbit/s, never scaled up", () => {
  const hd = s.videoEncodings(720);
  assert.equal(hd.thumbnail.scaleResolutionDownBy, 4);
  assert.equal(hd.thumbnail.maxBitrate, 150_000);
  assert.equal(hd.full.scaleResolutionDownBy, 1);
  assert.ok(hd.full.maxBitrate > hd.thumbnail.maxBitrate);
  assert.equal(s.videoEncodings(120).thumbnail.scaleResolutionDownBy, 1);
  assert.equal(s.videoEncodings(undefined).thumbnail.scaleResolutionDownBy, 1);
});

test("the offer's header extensions are numbered as aiortc numbers them, the others left out", () => {
  const sdp = [
    "v=0",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
    "m=video 9 UDP/TLS/RTP/SAVPF 96",
    "a=extmap:2/sendonly http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
    "",
  ].join("\r\n");
  assert.equal(
    s.offerExtensions(sdp, true),
    [
      "v=0",
      "m=audio 9 UDP/TLS/RTP/SAVPF 111",
      "a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
      "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
      "m=video 9 UDP/TLS/RTP/SAVPF 96",
      "a=extmap:3/sendonly http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
      "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
      "",
    ].join("\r\n"),
  );
  // A member who keeps who-is-speaking from the SFU offers no audio level at all.
  const quiet = s.offerExtensions(sdp, false);
  assert.ok(!quiet.includes("ssrc-audio-level"));
  assert.ok(quiet.includes("a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid"));
});

test("mute indicators: `muted` needs a member id and two booleans; `mute` carries ours", () => {
  const muted = s.parseSfuMessage('{"type":"muted","member":"@a:hs|D","audio":true,"video":false}');
  assert.deepEqual(muted, { type: "muted", member: "@a:hs|D", audio: true, video: false });
  for (const bad of [
    '{"type":"muted","member":"@a:hs|D","audio":1,"video":false}',
    '{"type":"muted","member":"@a:hs|D","audio":true,"video":"false"}',
    '{"type":"muted","member":"@a:hs|D","audio":true}',
    '{"type":"muted","member":"nobar","audio":true,"video":true}',
    '{"type":"muted","audio":true,"video":true}',
  ]) {
    assert.equal(s.parseSfuMessage(bad), null, bad);
  }
  assert.deepEqual(s.muteMessage(true, undefined), { type: "mute", audio: true, video: false });
});

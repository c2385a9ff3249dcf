// The page's pure formatting and arithmetic (static/format.js): durations, history item text,
// base64, bitrates and the stats panel's summary.
// Run: node --test tests/js/
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  base64ToBuffer,
  bitrate,
  bufferToBase64,
  droppedTotal,
  formatBitrate,
  formatDuration,
  historyText,
  shortName,
  summarizeStats,
} from "../../src/sealcall/web/static/format.js";

test("durations read as m:ss or h:mm:ss; bad input reads 0:00", () => {
  assert.equal(formatDuration(0), "0:00");
  assert.equal(formatDuration(7.9), "0:07");
  assert.equal(formatDuration(125), "2:05");
  assert.equal(formatDuration(3723), "1:02:03");
  for (const bad of [-5, NaN, Infinity, undefined, "12"]) assert.equal(formatDuration(bad), "0:00");
});

test("a user id shortens to its local part", () => {
  assert.equal(shortName("@alice:example.org"), "alice");
  assert.equal(shortName("bob"), "bob");
  assert.equal(shortName(null), "");
});

const item = (fields) => ({
  call_id: "c",
  caller: "@alice:x",
  callee: "@bob:x",
  direction: "outgoing",
  video: false,
  outcome: "answered",
  started_at: 1_700_000_000,
  duration: 65,
  end_reason: "user_hangup",
  group: false,
  ...fields,
});

test("history text: direction arrow, kind, the other party, outcome and duration", () => {
  const out = historyText(item({ video: true }));
  assert.equal(out.arrow, "↗");
  assert.equal(out.kind, "video");
  assert.equal(out.title, "Outgoing video call · bob");
  assert.equal(out.detail, "Answered · 1:05");
  const missed = historyText(item({ direction: "incoming", outcome: "missed", duration: 0 }));
  assert.equal(missed.arrow, "↙");
  assert.equal(missed.title, "Incoming audio call · alice");
  assert.equal(missed.detail, "Missed"); // no duration for a call that never connected
  assert.equal(historyText(item({ outcome: "rejected" })).detail, "Declined");
  assert.equal(historyText(item({ group: true, video: true })).title, "Group video call");
});

test("the time of an item today is hh:mm, of another day the date too", () => {
  const now = new Date(2026, 10, 23, 15, 0).getTime() / 1000;
  const today = new Date(2026, 10, 23, 9, 5).getTime() / 1000;
  const earlier = new Date(2026, 10, 2, 18, 30).getTime() / 1000;
  assert.equal(historyText(item({ started_at: today }), now).time, "09:05");
  assert.equal(historyText(item({ started_at: earlier }), now).time, "2026-11-02 18:30");
});

test("base64 round-trips bytes, standard and URL-safe, padded or not", () => {
  const bytes = new Uint8Array([0, 1, 2, 250, 251, 252, 253, 254, 255, 62, 63]);
  const text = bufferToBase64(bytes);
  assert.deepEqual(new Uint8Array(base64ToBuffer(text)), bytes);
  const urlSafe = text.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  assert.deepEqual(new Uint8Array(base64ToBuffer(urlSafe)), bytes);
  assert.equal(base64ToBuffer("").byteLength, 0);
  assert.ok(base64ToBuffer("AAAAAAAAAAAAAAAAAAAAAA==") instanceof ArrayBuffer);
  assert.equal(base64ToBuffer("AAAAAAAAAAAAAAAAAAAAAA==").byteLength, 16);
});

test("base64 that is not base64 is refused with a TypeError", () => {
  for (const bad of ["a", "abc$", "ab cd", "====", 12, null, "AAAA=A"]) {
    assert.throws(() => base64ToBuffer(bad), TypeError, String(bad));
  }
});

test("bitrate is bits per second over the interval, never negative", () => {
  assert.equal(bitrate(1000, 2000, 1000), 8000);
  assert.equal(bitrate(1000, 1500, 500), 8000);
  assert.equal(bitrate(2000, 1000, 1000), 0); // a counter reset
  assert.equal(bitrate(0, 1000, 0), 0);
  assert.equal(bitrate(undefined, 1000, 1000), 0);
  assert.equal(formatBitrate(0), "0 kbit/s");
  assert.equal(formatBitrate(312_400), "312 kbit/s");
  assert.equal(formatBitrate(1_400_000), "1.4 Mbit/s");
});

test("dropped frames are the sum of the worker's counters", () => {
  assert.equal(droppedTotal({ no_key: 2, auth: 3, replay: 0, malformed: 1, unencrypted: 4 }), 10);
  assert.equal(droppedTotal(undefined), 0);
});

const sample = (inBytes, outBytes, extra = []) => [
  { type: "inbound-rtp", kind: "audio", bytesReceived: inBytes, framesDecoded: undefined, packetsLost: 1 },
  { type: "inbound-rtp", kind: "video", bytesReceived: inBytes, framesDecoded: 30, packetsLost: 2 },
  { type: "outbound-rtp", kind: "video", bytesSent: outBytes },
  ...extra,
];

test("the stats summary: bitrates, RTT of the selected pair, decoded and lost, worker figures", () => {
  const pairs = [
    { type: "candidate-pair", state: "failed", currentRoundTripTime: 9 },
    { type: "candidate-pair", state: "succeeded", nominated: true, currentRoundTripTime: 0.0423 },
  ];
  const worker = { encrypted: 50, decrypted: 40, dropped: { no_key: 1, auth: 2 } };
  const s = summarizeStats(sample(1000, 500), sample(2000, 1500, pairs), 1000, worker);
  assert.equal(s.inbound_bps, 16000); // both inbound streams: 2 x 1000 bytes in 1 s
  assert.equal(s.outbound_bps, 8000);
  assert.equal(s.rtt_ms, 42);
  assert.equal(s.frames_decoded, 30);
  assert.equal(s.packets_lost, 3);
  assert.equal(s.decrypted, 40);
  assert.equal(s.dropped, 3);
  assert.equal(s.e2ee, true);
});

test("the stats summary says end-to-end encrypted only when the worker decrypted frames", () => {
  const first = summarizeStats(null, sample(2000, 1500), 0, null);
  assert.equal(first.inbound_bps, 0); // no interval yet
  assert.equal(first.rtt_ms, null);
  assert.equal(first.e2ee, false);
  const plain = summarizeStats(null, sample(1, 1), 0, { decrypted: 0, dropped: {} });
  assert.equal(plain.e2ee, false);
});

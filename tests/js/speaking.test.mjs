// Who is speaking in the page (static/speaking.js): the threshold, the 1 s hang-over, the active
// speaker held against a louder one for 1 s, and the last speaker kept through silence.
// Run: node --test tests/js/
import assert from "node:assert/strict";
import { test } from "node:test";

const { SpeakingDetector, levelToDbov, MAX_SOURCES } = await import(
  "../../src/sealcall/web/static/speaking.js"
);

/** Feed `source` a level every 0.1 s from `from` to `to` (seconds, exclusive). */
function feed(d, source, dbov, from, to) {
  for (let t = from; t < to - 1e-9; t += 0.1) d.level(source, dbov, t);
}

test("audioLevel (linear 0..1) becomes dBov, silence and junk at -127", () => {
  assert.equal(levelToDbov(1), 0);
  assert.ok(Math.abs(levelToDbov(0.1) + 20) < 1e-9);
  for (const junk of [0, -1, NaN, undefined, null, "0.5"]) assert.equal(levelToDbov(junk), -127);
  assert.equal(levelToDbov(2), 0);
});

test("a member speaks from -50 dBov up and is silent after 1 s without a loud level", () => {
  const d = new SpeakingDetector();
  d.level("a", -60, 0);
  assert.equal(d.speaking("a", 0), false);
  d.level("a", -50, 0.1);
  assert.equal(d.speaking("a", 0.1), true);
  feed(d, "a", -80, 0.2, 1.0); // quiet between words: still speaking
  assert.equal(d.speaking("a", 1.05), true);
  d.level("a", -80, 1.1);
  assert.equal(d.speaking("a", 1.1), false);
  assert.equal(d.speaking("nobody", 1.1), false);
});

test("the active speaker is the loudest, held against a louder one for 1 s, kept in silence", () => {
  const d = new SpeakingDetector();
  feed(d, "a", -30, 0, 0.5);
  assert.equal(d.active(0.5), "a");
  // b is louder by more than 3 dB while a goes on: a stays for a second, then b takes over.
  for (let t = 0.5; t < 2.0; t += 0.1) {
    d.level("a", -30, t);
    d.level("b", -20, t);
    if (t < 1.45) assert.equal(d.active(t), "a", `at ${t}`);
  }
  assert.equal(d.active(2.0), "b");
  // b only a little louder than a would not have taken over.
  const e = new SpeakingDetector();
  for (let t = 0; t < 3; t += 0.1) {
    e.level("a", -30, t);
    e.level("b", -28, t);
  }
  assert.equal(e.active(3), "a");
  // Nobody speaks: the last one who spoke stays the active speaker.
  assert.equal(d.active(10), "b");
  assert.equal(d.speaking("b", 10), false);
  d.remove("b");
  assert.equal(d.active(10), null);
});

test("a silent active speaker gives way at once to one who speaks", () => {
  const d = new SpeakingDetector();
  feed(d, "a", -30, 0, 0.5);
  feed(d, "a", -90, 0.5, 2);
  d.level("b", -45, 2);
  assert.equal(d.active(2), "b");
});

test("at most MAX_SOURCES members are tracked", () => {
  const d = new SpeakingDetector();
  for (let i = 0; i < MAX_SOURCES + 10; i++) d.level(`m${i}`, -20, 0);
  assert.equal(d.sources.size, MAX_SOURCES);
  assert.equal(d.speaking(`m${MAX_SOURCES + 1}`, 0), false);
});

// The worker's counters per sender of a scope (a group call's members): each member's frames
// received and opened with its keys, by kind; only senders with keys count (bounded).
// Run: node --test tests/js/
import assert from "node:assert/strict";
import { test } from "node:test";

if (!globalThis.crypto?.subtle) {
  Object.defineProperty(globalThis, "crypto", { value: (await import("node:crypto")).webcrypto });
}
const { FrameContexts } = await import("../../src/sealcall/web/static/sframe_context.js");

const SUITE = 4;
const KEY_A = Uint8Array.from({ length: 32 }, (_, i) => i);
const KEY_B = Uint8Array.from({ length: 32 }, (_, i) => 100 + i);
const OPUS = Uint8Array.from([0x78, ...Array.from({ length: 60 }, (_, i) => i)]);

test("a group scope counts each member's frames apart, and a forged one against its victim", async () => {
  const alice = new FrameContexts();
  const bob = new FrameContexts();
  const me = new FrameContexts();
  await alice.setSendKey("room", SUITE, 0, KEY_A);
  await bob.setSendKey("room", SUITE, 2, KEY_B);
  await me.addReceiveKey("room", "@alice:x A", SUITE, 0, KEY_A, 0);
  await me.addReceiveKey("room", "@bob:x B", SUITE, 2, KEY_B, 0);
  for (let i = 0; i < 3; i++) {
    const frame = await alice.protect("room", "audio", "audio/opus", OPUS);
    await me.unprotect("room", "@alice:x A", "audio", "audio/opus", frame, 0.1);
  }
  const bobs = await bob.protect("room", "audio", "audio/opus", OPUS);
  await me.unprotect("room", "@bob:x B", "audio", "audio/opus", bobs, 0.1);
  // Bob's frame on alice's receiver: alice's keys do not open it.
  const again = await bob.protect("room", "audio", "audio/opus", OPUS);
  await assert.rejects(me.unprotect("room", "@alice:x A", "audio", "audio/opus", again, 0.2));
  // A sender with no key is not listed (the table cannot grow with made-up senders).
  await assert.rejects(me.unprotect("room", "@mallory:x M", "audio", "audio/opus", bobs, 0.2));
  const s = me.stats("room").senders;
  assert.deepEqual(Object.keys(s).sort(), ["@alice:x A", "@bob:x B"]);
  assert.deepEqual(s["@alice:x A"].audio, { received: 4, decrypted: 3 });
  assert.deepEqual(s["@bob:x B"].audio, { received: 1, decrypted: 1 });
  assert.deepEqual(s["@bob:x B"].video, { received: 0, decrypted: 0 });
  assert.deepEqual(me.stats("elsewhere").senders, {});
});

"""A complete end-to-end encrypted audio+video call between two peer connections in one process.

Run: ``python examples/encrypted_call.py``. It prints what each side sent, decrypted and decoded.
"""

import asyncio

from sealcall.e2ee import KeyShare, Role
from sealcall.media import (
    LOOPBACK,
    EncryptedPeerConnection,
    FrameCounter,
    MediaKeys,
    PatternVideoTrack,
    SyntheticAudioTrack,
    negotiate,
)
from sealcall.media.stats import StatsCollector


async def main() -> None:
    # 1. Key agreement: each side makes an ephemeral key share; the public halves travel in the
    #    (Olm/Megolm-encrypted) invite and answer. Here they are simply handed over.
    alice_share, bob_share = KeyShare(), KeyShare()
    alice_keys = MediaKeys.for_call(
        alice_share.derive(bob_share.public_bytes, "call-1", Role.CALLER)
    )
    bob_keys = MediaKeys.for_call(bob_share.derive(alice_share.public_bytes, "call-1", Role.CALLEE))

    # 2. Encrypted peer connections. ICE servers are explicit (none here: host candidates only),
    #    and this demo keeps ICE on the loopback interface.
    alice = EncryptedPeerConnection(alice_keys, host_addresses=LOOPBACK)
    bob = EncryptedPeerConnection(bob_keys, host_addresses=LOOPBACK)
    received: list[FrameCounter] = []
    bob.on("track", lambda track: received.append(FrameCounter(track).start()))

    alice.addTrack(SyntheticAudioTrack("speech"))  # the microphone
    alice.addTrack(PatternVideoTrack(640, 480, fps=30))  # the camera

    # 3. Offer/answer (in an app this goes through the messenger's signaling).
    await negotiate(alice, bob)
    await asyncio.sleep(2)
    alice.set_camera_enabled(False)  # camera off: no video frames leave Alice
    await asyncio.sleep(1)
    alice.set_camera_enabled(True)
    await asyncio.sleep(1)

    for stats in (await StatsCollector(alice).collect()).outbound:
        print(f"alice sent     {stats.role:<10} {stats.frames_encrypted:4d} encrypted frames")
    for stats in (await StatsCollector(bob).collect()).inbound:
        print(
            f"bob received   {stats.kind:<10} {stats.frames_decrypted:4d} decrypted,"
            f" {stats.frames_dropped} dropped"
        )
    for counter in received:
        print(f"bob decoded    {counter.track.kind:<10} {counter.frames:4d} frames")
        await counter.stop()
    await alice.close()
    await bob.close()


if __name__ == "__main__":
    asyncio.run(main())

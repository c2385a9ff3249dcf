"""Placing and answering a call with the library API (two devices in one process).

Run: ``python examples/voip_call.py``. The devices talk through an in-memory transport; with
the Matrix transport only the transport line changes.
"""

import asyncio

from sealcall.media import LOOPBACK
from sealcall.session import CallSession, VoIP
from sealcall.transport import InMemoryHub, InMemoryTransport

ROOM = "!dm:example.org"


async def main() -> None:
    hub = InMemoryHub()
    devices = {}
    for user, device in (("@alice:example.org", "ALICEPHONE"), ("@bob:example.org", "BOBLAPTOP")):
        transport = InMemoryTransport(hub, user, device)
        transport.join(ROOM)
        devices[user] = VoIP(transport, host_addresses=LOOPBACK)
    alice, bob = devices["@alice:example.org"], devices["@bob:example.org"]

    # Bob's app: ring, then answer (a real app would ask the user first).
    async def on_incoming(session: CallSession) -> None:
        kind = "video" if session.call.video else "voice"
        print(f"bob: incoming {kind} call from {session.call.peer}")
        await session.answer()

    bob.on("incoming_call", on_incoming)
    bob.on(
        "remote_media_added",
        lambda s, track, purpose: print(f"bob: receiving {purpose.value} {track.kind}"),
    )
    for name, voip in (("alice", alice), ("bob", bob)):
        voip.on(
            "state_changed",
            lambda s, old, new, name=name: print(f"{name}: {old.value} -> {new.value}"),
        )
        voip.on(
            "history_item",
            lambda item, name=name: print(
                f"{name}: history: {item.direction.value}"
                f" {'video' if item.video else 'voice'} call, {item.outcome.value},"
                f" {item.duration:.1f} s, encrypted={item.encrypted}"
            ),
        )

    # Alice's app: place a video call, mute for a moment, hang up.
    call = await alice.place_call(ROOM, "@bob:example.org", video=True)
    while call.state.value != "connected":
        await asyncio.sleep(0.05)
    await asyncio.sleep(1)
    await call.set_microphone_muted(True)
    await asyncio.sleep(0.5)
    await call.hangup()
    await asyncio.sleep(0.3)
    await alice.close()
    await bob.close()


if __name__ == "__main__":
    asyncio.run(main())

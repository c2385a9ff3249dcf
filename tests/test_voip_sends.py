"""Call events leave in order without holding up the call engine (real aiortc, in-memory room)."""

import asyncio
from typing import Any

from sealcall.transport import InMemoryHub
from voip_helpers import ROOM, Device, eventually


async def test_a_slow_send_does_not_hold_up_the_call_and_events_keep_their_order() -> None:
    hub = InMemoryHub(latency=0.01)
    alice, bob = Device(hub, "@alice:local", "ALICE"), Device(hub, "@bob:local", "BOB")
    transport: Any = alice.voip.transport
    send = transport.send_room_event
    release = asyncio.Event()

    async def slow_select_answer(room_id: str, event_type: str, content: dict[str, Any]) -> None:
        if event_type == "m.call.select_answer":
            await release.wait()  # a homeserver that takes its time
        await send(room_id, event_type, content)

    transport.send_room_event = slow_select_answer
    hangup: asyncio.Future[None] | None = None
    try:
        session = await alice.voip.place_call(ROOM, "@bob:local")
        await eventually(lambda: bool(bob.events["incoming_call"]))
        incoming = bob.events["incoming_call"][0][0]
        await incoming.answer()
        # The caller connects and decrypts media while its select_answer is still on its way.
        await eventually(lambda: session.state.value == "connected")
        await eventually(lambda: (session.call_id, "m.usermedia/audio") in alice.counters)
        await eventually(lambda: alice.counter(session.call_id, "audio").frames > 5)
        types = [e["type"] for _, _, e in hub.log]
        assert types == ["m.call.invite", "m.call.answer"]
        # A hang-up meanwhile ends the call at once but goes out after the select_answer.
        hangup = asyncio.ensure_future(session.hangup())
        await eventually(lambda: session.state.value == "ended")
        assert not hangup.done()
        assert [e["type"] for _, _, e in hub.log] == ["m.call.invite", "m.call.answer"]
        release.set()
        await hangup
        await eventually(lambda: incoming.state.value == "ended")
        assert [e["type"] for _, _, e in hub.log] == [
            "m.call.invite",
            "m.call.answer",
            "m.call.select_answer",
            "m.call.hangup",
        ]
    finally:
        release.set()
        if hangup is not None:
            await hangup
        await alice.close()
        await bob.close()

"""A peer whose process vanishes mid-call, over the real stack: VoIP, the call engine, real aiortc
with encrypted media, an in-memory transport. Nothing is faked above aiortc: the survivor's peer
connection closes by itself once ICE consent fails, as it does ~30 s after a real crash (consent
checks run faster here)."""

from typing import Any

import aioice.ice
import pytest

from sealcall.calls import CallPolicy, Outcome
from sealcall.transport import InMemoryHub
from voip_helpers import ROOM, Device, answered_call, eventually


def vanish(device: Device, session: Any) -> None:
    """The process behind ``device`` dies: no hang-up, no more sync, its UDP ports are gone."""

    async def nothing(*_: Any) -> None:
        return None

    device.voip.transport.send_room_event = nothing  # type: ignore[method-assign]
    device.voip.transport._listeners.clear()
    for transceiver in session.pc.getTransceivers():
        connection = transceiver.receiver.transport.transport.iceGatherer._connection
        for protocol in connection._protocols:
            protocol.transport.abort()


async def test_call_whose_peer_vanished_ends_as_ice_timeout_and_the_next_call_rings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # RFC 7675 consent checks every 0.05 s, expiring after 2 misses (aioice: 5 s, 6 misses).
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.05)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 2)
    hub = InMemoryHub(latency=0.01)
    policy = CallPolicy(ice_restart_timeout=1.0)
    alice = Device(hub, "@alice:local", "ALICE", policy)
    bob = Device(hub, "@bob:local", "BOB", policy)
    bob_again = None
    try:
        call, incoming = await answered_call(alice, bob)
        seen: list[tuple[str, str]] = []
        pc = call.pc
        pc.on("connectionstatechange", lambda: seen.append((pc.connectionState, call.state)))
        vanish(bob, incoming)
        await eventually(lambda: call.state.value == "ended", timeout=20)
        # The connection closed under the live call (reconnecting once consent checks failed).
        assert [s for c, s in seen if c == "closed"] in (["connected"], ["reconnecting"])
        (item,) = [i for (i,) in alice.events["history_item"] if i.call_id == call.call_id]
        assert (item.outcome, item.end_reason) == (Outcome.ANSWERED, "ice_timeout")
        hangups = [e["content"] for _, who, e in hub.log if e["type"] == "m.call.hangup"]
        assert [(h["call_id"], h["reason"]) for h in hangups] == [(call.call_id, "ice_timeout")]
        # Bob's restarted client calls again: it rings as a call, not as call waiting.
        bob_again = Device(hub, "@bob:local", "BOB2", policy)
        second = await bob_again.voip.place_call(ROOM, "@alice:local")
        await eventually(
            lambda: any(s.call_id == second.call_id for (s,) in alice.events["incoming_call"])
        )
        assert alice.events["call_waiting"] == []
    finally:
        await alice.close()
        await bob.voip.close(hang_up=False)
        if bob_again is not None:
            await bob_again.close()

"""A 1:1 call whose network path goes down, over the real stack: two clients talking through a
real Synapse (Megolm, SFrame), real aiortc on loopback, the path cut in user space
(:func:`sealcall.bench.impair.impair_connection`, both directions of one side's ICE sockets).

aiortc cannot restart ICE, so the call keeps its ICE session through the outage: the call goes
``reconnecting`` when consent checks go unanswered and back to ``connected`` when they are
answered again; a path that never comes back ends the call as ``ice_timeout`` at its deadline.
Consent checks run every 0.5 s here (aioice: 5 s) and STUN retransmits faster, so the outages
stay short."""

from pathlib import Path
from typing import Any

import aioice.ice
import aioice.stun
import pytest

from matrix_helpers import MatrixDevice, device, dm, ringing
from sealcall.bench.impair import Impairer, impair_connection
from sealcall.calls import CallPolicy, CallState, Outcome
from sealcall.demo import wait_for
from sealcall.homeserver import Homeserver
from sealcall.session import CallSession

pytestmark = pytest.mark.usefixtures("synapse")
S = CallState


@pytest.fixture(autouse=True)
def fast_consent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.5)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 60)  # the ICE session outlives the test
    monkeypatch.setattr(aioice.stun, "RETRY_RTO", 0.1)  # a check gives up after 0.7 s


def states(d: MatrixDevice, call_id: str) -> list[S]:
    return [new for session, _, new in d.events["state_changed"] if session.call_id == call_id]


async def connected_call(alice: MatrixDevice, bob: MatrixDevice) -> tuple[CallSession, CallSession]:
    room = await dm(alice, bob)
    call = await alice.voip.place_call(room, bob.user_id)
    incoming = await ringing(bob)
    await incoming.answer()
    await wait_for(lambda: call.state is incoming.state is S.CONNECTED, 15, "connected")
    for d in (alice, bob):
        key = (call.call_id, "audio")
        await wait_for(
            lambda d=d, key=key: key in d.counters and d.counters[key].frames > 5, 10, "audio"
        )
    return call, incoming


def cut(session: CallSession) -> list[Impairer]:
    """Cut the path of ``session``'s connection both ways; lift it with ``outage = False``."""
    inbound, outbound = Impairer(seed=1), Impairer(seed=2)
    assert impair_connection(session.pc, inbound=inbound, outbound=outbound) >= 1
    inbound.outage = outbound.outage = True
    return [inbound, outbound]


async def test_a_path_that_comes_back_reconnects_and_media_flows_again(
    synapse: Homeserver, tmp_path: Path
) -> None:
    policy = CallPolicy(reconnect_timeout=60)
    alice = await device(synapse, tmp_path, "alice", policy)
    bob = await device(synapse, tmp_path, "bob", policy)
    try:
        call, incoming = await connected_call(alice, bob)
        path = cut(call)
        await wait_for(lambda: call.state is incoming.state is S.RECONNECTING, 15, "reconnecting")
        frames = bob.counters[(call.call_id, "audio")]
        stalled = frames.frames
        await wait_for(lambda: path[0].dropped > 50, 10, "media dropped in the outage")
        assert frames.frames <= stalled + 2  # nothing got through (a frame may be in flight)
        for impairer in path:
            impairer.outage = False
        await wait_for(lambda: call.state is incoming.state is S.CONNECTED, 15, "restored")
        await wait_for(lambda: frames.frames > stalled + 25, 10, "media again")
        for d in (alice, bob):
            assert states(d, call.call_id)[-3:] == [S.CONNECTED, S.RECONNECTING, S.CONNECTED]
            assert d.events["call_ended"] == []
            assert d.events["history_item"] == []
        await call.hangup()
        await wait_for(lambda: bool(bob.events["history_item"]), 15, "history")
        for d in (alice, bob):
            (item,) = [i for (i,) in d.events["history_item"]]
            assert (item.outcome, item.end_reason) == (Outcome.ANSWERED, "user_hangup")
    finally:
        await alice.stop()
        await bob.stop()


async def test_a_path_that_never_comes_back_ends_as_ice_timeout_after_the_deadline(
    synapse: Homeserver, tmp_path: Path
) -> None:
    policy = CallPolicy(reconnect_timeout=2)
    alice = await device(synapse, tmp_path, "alice", policy)
    bob = await device(synapse, tmp_path, "bob", policy)
    deadlines: dict[str, float | None] = {}

    def seen(session: Any, _: S, new: S) -> None:
        if new is S.RECONNECTING:
            deadlines[session.call.party_id] = session.call.reconnect_deadline

    for d in (alice, bob):
        d.voip.on("state_changed", seen)
    try:
        call, incoming = await connected_call(alice, bob)
        cut(call)
        await wait_for(
            lambda: bool(alice.events["history_item"] and bob.events["history_item"]), 30, "the end"
        )
        for d in (alice, bob):
            assert states(d, call.call_id)[-3:] == [S.CONNECTED, S.RECONNECTING, S.ENDED]
            (item,) = [i for (i,) in d.events["history_item"]]
            assert (item.outcome, item.end_reason) == (Outcome.ANSWERED, "ice_timeout")
        # Both went from reconnecting (with a deadline set) to ended, never back to connected,
        # and at least one gave up by itself: its own deadline, not the far side's hang-up
        # (which goes through the homeserver, untouched by the outage). That the deadline is
        # kept to the second is the sans-I/O test's (test_call_reconnect.py): no clocks here.
        assert all(deadline is not None for deadline in deadlines.values())
        assert sorted(deadlines) == sorted({call.call.party_id, incoming.call.party_id})
        ends = [
            (getattr(reason, "value", reason), by_remote)
            for d in (alice, bob)
            for _, reason, by_remote in d.events["call_ended"]
        ]
        assert ("ice_timeout", False) in ends
    finally:
        await alice.stop()
        await bob.stop()

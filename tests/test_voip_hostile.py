"""Hostile callers against the VoIP layer (in-memory transport, real aiortc where media is made):
floods of call events, endless invite lifetimes across restarts, unusable call keys and offers."""

import base64
import gc
import logging
import tracemalloc
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from call_harness import fake_sdp
from sealcall.calls import ENCRYPTION_REQUIRED, CallState, Outcome
from sealcall.e2ee import KeyShare
from sealcall.media import LOOPBACK
from sealcall.session import VoIP
from sealcall.session.ringing_store import RingingStore
from sealcall.sframe import CipherSuite
from sealcall.signaling import (
    E2EE_VERSION,
    CallCandidates,
    CallInvite,
    CallNegotiate,
    Candidate,
    E2eeParams,
    SessionDescription,
)
from sealcall.transport import InMemoryHub, InMemoryTransport
from voip_helpers import ROOM, SMALL_MEDIA, Device, eventually

EVE = "@eve:local"
BOB = "@bob:local"


class Clock:
    """A wall clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def invite(call_id: str, *, padding: int = 0, lifetime: int = 2**53 - 1) -> dict[str, Any]:
    """An invite to Bob as a hostile client may send it (valid, with an endless lifetime)."""
    sdp = fake_sdp("offer", video=False, screenshare=False, on_hold=False, tag="eve")
    sdp += f"a=x-padding:{'p' * padding}\r\n" if padding else ""
    return CallInvite(
        call_id=call_id,
        party_id="EVE",
        lifetime=lifetime,
        offer=SessionDescription(type="offer", sdp=sdp),
        invitee=BOB,
        e2ee=E2eeParams(
            version=E2EE_VERSION,
            suites=(CipherSuite.AES_128_GCM_SHA256_128,),
            public_key=KeyShare().public_bytes,
        ),
    ).to_dict()


def candidates(call_id: str, count: int) -> dict[str, Any]:
    found = tuple(
        Candidate(candidate=f"candidate:{i} 1 udp 2130706431 10.{i % 250}.0.1 {i} typ host")
        for i in range(count)
    )
    return CallCandidates(call_id=call_id, party_id="EVE", candidates=found).to_dict()


def bob_voip(hub: InMemoryHub, clock: Clock, state_dir: Path) -> tuple[VoIP, dict[str, list[Any]]]:
    transport = InMemoryTransport(hub, BOB, "BOB")
    transport.join(ROOM)
    voip = VoIP(
        transport, media=SMALL_MEDIA, host_addresses=LOOPBACK, clock=clock, state_dir=state_dir
    )
    seen: dict[str, list[Any]] = defaultdict(list)
    for name in ("incoming_call", "call_waiting", "history_item"):
        voip.on(name, lambda *args, name=name: seen[name].append(args))
    return voip, seen


async def settle(voip: VoIP, hub: InMemoryHub, condition: Callable[[], bool]) -> None:
    """Wait until every delivery ran and ``condition`` holds (timers run once the clock moved)."""
    # Any call event wakes the engine, which then sets its timers by the moved clock.
    wake = {"call_id": "wake", "party_id": "EVE", "version": "1", "reason": "user_hangup"}
    hub.publish(ROOM, EVE, {"type": "m.call.hangup", "content": wake})
    await eventually(lambda: not hub._tasks and voip._queue.empty() and condition(), timeout=60)


async def test_heap_returns_after_a_barrage_of_hostile_call_events(tmp_path: Path) -> None:
    hub, clock = InMemoryHub(), Clock()
    voip, seen = bob_voip(hub, clock, tmp_path)
    tracemalloc.start()
    try:
        await settle(voip, hub, lambda: True)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        calls = [f"{'x' * 240}-{n}" for n in range(100)]  # long ids: the caller chooses them
        for call_id in calls:
            hub.publish(ROOM, EVE, invite(call_id, padding=8_000))
            for _ in range(4):
                hub.publish(ROOM, EVE, candidates(call_id, 250))
        for n in range(60):  # events for calls whose invite never comes
            unknown = f"{'y' * 240}-{n}"
            for _ in range(4):
                hub.publish(ROOM, EVE, candidates(unknown, 100))
            sdp = "v=0\r\n" + "a=x-padding:" + "q" * 8_000 + "\r\n"
            negotiate = CallNegotiate(
                call_id=unknown,
                party_id="EVE",
                description=SessionDescription(type="offer", sdp=sdp),
            )
            for _ in range(8):
                hub.publish(ROOM, EVE, negotiate.to_dict())
        await settle(voip, hub, lambda: len(voip.manager.active_calls()) == len(calls))
        assert len(seen["incoming_call"]) + len(seen["call_waiting"]) == len(calls)
        clock.now += 121  # past the longest lifetime an invite may ask for
        await settle(voip, hub, lambda: not voip.manager.active_calls())
        assert {i.outcome for (i,) in seen["history_item"]} == {Outcome.MISSED}
        assert list((tmp_path / "ringing").iterdir()) == []
        clock.now += 601  # past the time ended calls are kept for their late events
        await settle(voip, hub, lambda: not voip.manager.calls)
        seen.clear()
        hub.log.clear()  # the test's record of every event sent, not the client's memory
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        assert after - before < 10_000_000, f"heap grew by {(after - before) / 1e6:.1f} MB"
    finally:
        tracemalloc.stop()
        await voip.close()


async def test_huge_ids_and_types_are_dropped_and_logged_in_one_short_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hub, clock = InMemoryHub(), Clock()
    voip, seen = bob_voip(hub, clock, tmp_path)
    try:
        huge = invite("huge")
        huge["content"]["call_id"] = "Z" * 40_000
        hub.publish(ROOM, EVE, huge)
        hub.publish(ROOM, EVE, {"type": "m.call." + "Z" * 40_000, "content": {}})
        hub.publish(ROOM, EVE, invite("fine"))
        await eventually(lambda: bool(seen["incoming_call"]))
        assert [s.call_id for (s,) in seen["incoming_call"]] == ["fine"]
        assert voip.malformed_events == 2
        for record in caplog.records:
            message = record.getMessage()
            assert "Z" * 300 not in message
            assert len(message) < 500
    finally:
        await voip.close()


async def test_endless_lifetime_rings_again_after_a_restart_only_within_the_cap(
    tmp_path: Path,
) -> None:
    hub, clock = InMemoryHub(), Clock()
    voip, seen = bob_voip(hub, clock, tmp_path)
    hub.publish(ROOM, EVE, invite("endless"))
    await eventually(lambda: bool(seen["incoming_call"]))
    await voip.close(hang_up=False)  # the device stops while the call rings
    clock.now += 60
    voip, seen = bob_voip(hub, clock, tmp_path)
    await eventually(lambda: bool(seen["incoming_call"]))  # still within 120 s: rings again
    await voip.close(hang_up=False)
    clock.now += 70
    voip, seen = bob_voip(hub, clock, tmp_path)
    try:
        await eventually(lambda: bool(seen["history_item"]))
        (item,) = seen["history_item"][0]
        assert (item.call_id, item.outcome, item.end_reason) == (
            "endless",
            Outcome.MISSED,
            "invite_timeout",
        )
        assert seen["incoming_call"] == []
        assert list((tmp_path / "ringing").iterdir()) == []
    finally:
        await voip.close()


def proc_bytes_written() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("wchar:"))


def test_ringing_store_writes_only_the_new_ring(tmp_path: Path) -> None:
    from sealcall.calls import RemoteEvent
    from sealcall.signaling import parse

    store = RingingStore(tmp_path / "ringing")
    for n in range(200):
        store.add(RemoteEvent(ROOM, EVE, parse(invite(f"call-{n}"))), 1000.0)
    one = RemoteEvent(ROOM, EVE, parse(invite("one-more")))
    size = len(str(one.event.to_dict()))
    written = proc_bytes_written()
    store.add(one, 1000.0)
    store.remove("call-7")
    assert proc_bytes_written() - written < 3 * size
    restored = store.restore(1010.0)
    assert sorted(r.event.call_id for r in restored) == sorted(
        [f"call-{n}" for n in range(200) if n != 7] + ["one-more"]
    )
    assert {r.age_ms for r in restored} == {10_000}


def test_ringing_store_drops_unreadable_entries(tmp_path: Path) -> None:
    from sealcall.calls import RemoteEvent
    from sealcall.signaling import parse

    store = RingingStore(tmp_path / "ringing")
    store.add(RemoteEvent(ROOM, EVE, parse(invite("good"))), 1000.0)
    (tmp_path / "ringing" / "junk.json").write_text('{"event": 1')
    assert [r.event.call_id for r in store.restore(1000.0)] == ["good"]
    assert len(list((tmp_path / "ringing").iterdir())) == 1


# -- unusable call keys and offers, refused on arrival -------------------------------------------

LOW_ORDER = base64.urlsafe_b64encode(bytes(32)).decode().rstrip("=")


@pytest.mark.parametrize(
    ("public_key", "refused"),
    [
        (LOW_ORDER, True),  # a valid encoding of a low-order point: refused, said why
        (base64.urlsafe_b64encode(bytes(31)).decode(), False),  # malformed: dropped
        ("not base64 at all!", False),
        (12345, False),
    ],
)
async def test_invite_with_unusable_call_key_never_rings(public_key: Any, refused: bool) -> None:
    hub = InMemoryHub()
    bob = Device(hub, BOB, "BOB")
    try:
        event = invite("bad-key")
        event["content"]["org.sealcall.e2ee"]["public_key"] = public_key
        hub.publish(ROOM, EVE, event)
        await eventually(lambda: bool(bob.events["history_item"]) or bob.voip.malformed_events)
        assert bob.events["incoming_call"] == bob.events["call_waiting"] == []
        sent = [e["content"] for _, who, e in hub.log if who == BOB]
        if refused:
            (item,) = bob.events["history_item"]
            assert (item[0].outcome, item[0].end_reason) == (Outcome.FAILED, ENCRYPTION_REQUIRED)
            assert [s["org.sealcall.reason"] for s in sent] == [ENCRYPTION_REQUIRED]
        else:
            assert bob.voip.malformed_events == 1
            assert sent == []
    finally:
        await bob.close()


async def test_offer_with_only_unencryptable_codecs_ends_as_encryption_required() -> None:
    hub = InMemoryHub(latency=0.01)
    alice, bob = Device(hub, "@alice:local", "ALICE"), Device(hub, BOB, "BOB")
    send = alice.voip.transport.send_room_event

    async def pcmu_only(room_id: str, event_type: str, content: dict[str, Any]) -> None:
        # As a client offering only G.711 sends it (aiortc's real offer, codec swapped).
        if event_type == "m.call.invite":
            sdp = content["offer"]["sdp"].replace("opus/48000/2", "PCMU/8000")
            content = {**content, "offer": {"type": "offer", "sdp": sdp}}
        await send(room_id, event_type, content)

    alice.voip.transport.send_room_event = pcmu_only  # type: ignore[method-assign]
    try:
        call = await alice.voip.place_call(ROOM, BOB)
        await eventually(lambda: call.state is CallState.ENDED)
        assert call.call.end_reason == ENCRYPTION_REQUIRED
        (item,) = bob.events["history_item"]
        assert (item[0].end_reason, item[0].outcome) == (ENCRYPTION_REQUIRED, Outcome.FAILED)
        assert bob.events["incoming_call"] == []
    finally:
        await alice.close()
        await bob.close()

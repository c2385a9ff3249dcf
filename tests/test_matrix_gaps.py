"""No call event is lost when Synapse limits a sync: the gap is filled with ``/messages``."""

import asyncio
from pathlib import Path

import pytest

from matrix_helpers import MatrixDevice, device, dm, ringing
from sealcall.calls import Outcome
from sealcall.demo import wait_for
from sealcall.homeserver import Homeserver
from sealcall.transport import RoomEvent
from sealcall.transport.matrix import MatrixTransport

pytestmark = pytest.mark.usefixtures("synapse")


async def stop_device(d: MatrixDevice) -> None:
    """The device goes away as a crashed one would (no hang-up)."""
    await d.voip.close(hang_up=False)
    await d.transport.stop()


async def test_invites_sent_while_stopped_all_arrive_after_restart(
    synapse: Homeserver, tmp_path: Path
) -> None:
    alice = await device(synapse, tmp_path, "alice")
    bob = await device(synapse, tmp_path, "bob")
    try:
        room = await dm(alice, bob)
        await stop_device(bob)
        ended = []
        for _ in range(29):  # each call rings nobody and is cancelled: a missed call for Bob
            call = await alice.voip.place_call(room, bob.user_id)
            await wait_for(lambda c=call: c.state.value == "invite_sent", 10, "invite sent")
            await call.hangup()
            ended.append(call.call_id)
        live = await alice.voip.place_call(room, bob.user_id)
        await wait_for(lambda: live.state.value == "invite_sent", 10, "invite sent")
        # 30 invites and 29 hang-ups are more than one sync's timeline (50 events).
        await bob.restart()
        await wait_for(lambda: len(bob.events["history_item"]) == 29, 30, "29 missed calls")
        items = [event[0] for event in bob.events["history_item"]]
        assert sorted(item.call_id for item in items) == sorted(ended)
        assert {item.outcome for item in items} == {Outcome.MISSED}
        assert bob.transport.gap_events > 0
        rang = await ringing(bob)
        assert rang.call_id == live.call_id
        assert [event[0].call_id for event in bob.events["incoming_call"]] == [live.call_id]
        await live.hangup()
        await wait_for(lambda: len(bob.events["history_item"]) == 30, 15, "the live call ended")
    finally:
        await alice.stop()
        await bob.stop()


async def test_a_burst_while_running_loses_no_event(synapse: Homeserver, tmp_path: Path) -> None:
    alice = await device(synapse, tmp_path, "alice")
    bob = await device(synapse, tmp_path, "bob")
    try:
        room = await dm(alice, bob)
        seen: list[str] = []

        def take(event: RoomEvent) -> None:
            if event.sender == alice.user_id:
                seen.append(str(event.event["content"].get("call_id")))

        bob.transport.add_listener(take)

        async def hangup(i: int) -> None:
            content = {"call_id": f"burst-{i}", "party_id": "x", "version": "1"}
            await alice.transport.send_room_event(room, "m.call.hangup", content)

        await hangup(0)  # shares the room key once, before the burst
        sent = 300
        for start in range(1, sent, 30):
            await asyncio.gather(*(hangup(i) for i in range(start, min(start + 30, sent))))
        await wait_for(lambda: len(set(seen)) == sent, 60, f"{sent} events")
        assert sorted(seen) == sorted(f"burst-{i}" for i in range(sent))  # none twice
    finally:
        await alice.stop()
        await bob.stop()


async def test_a_new_login_does_not_fill_gaps_of_the_past(
    synapse: Homeserver, tmp_path: Path
) -> None:
    alice = await device(synapse, tmp_path, "alice")
    bob = await device(synapse, tmp_path, "bob")
    try:
        room = await dm(alice, bob)
        for i in range(60):
            content = {"call_id": f"old-{i}", "party_id": "x", "version": "1"}
            await alice.transport.send_room_event(room, "m.call.hangup", content)
        # A second device of Bob's, logged in now: calls of the past are not its business.
        seen: list[RoomEvent] = []
        second = await MatrixTransport.login(
            synapse.url, bob.user_id, "secret-" + bob.user_id[1:].split(":")[0], tmp_path / "b2"
        )
        second.add_listener(seen.append)
        try:
            await second.start()  # returns once the first sync has been delivered
            assert seen == []
            assert second.gap_events == 0
        finally:
            await second.stop()
    finally:
        await alice.stop()
        await bob.stop()

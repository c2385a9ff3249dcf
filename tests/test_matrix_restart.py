"""A restarted client: it still answers a call that rings, and never rings for one that ended."""

from pathlib import Path

import pytest

from matrix_helpers import device, dm, ringing
from sealcall.calls import Outcome
from sealcall.demo import wait_for
from sealcall.homeserver import Homeserver

pytestmark = pytest.mark.usefixtures("synapse")


async def test_restart_while_ringing_still_answers(synapse: Homeserver, tmp_path: Path) -> None:
    alice = await device(synapse, tmp_path, "alice")
    bob = await device(synapse, tmp_path, "bob")
    try:
        room = await dm(alice, bob)
        call = await alice.voip.place_call(room, bob.user_id)
        first_ring = await ringing(bob)
        assert first_ring.call_id == call.call_id
        await bob.restart()  # no hang-up: the device just went away and came back
        again = await ringing(bob)
        assert again.call_id == call.call_id
        await again.answer()
        await wait_for(
            lambda: call.state.value == again.state.value == "connected", 20, "connected"
        )
        await call.hangup()
        await wait_for(lambda: bool(bob.events["history_item"]), 15, "history")
        assert bob.events["history_item"][0][0].outcome is Outcome.ANSWERED
    finally:
        await alice.stop()
        await bob.stop()


async def test_restart_after_the_call_ended_records_missed_and_does_not_ring(
    synapse: Homeserver, tmp_path: Path
) -> None:
    alice = await device(synapse, tmp_path, "alice")
    bob = await device(synapse, tmp_path, "bob")
    try:
        room = await dm(alice, bob)
        call = await alice.voip.place_call(room, bob.user_id)
        await ringing(bob)
        # Bob's device goes away while it rings; meanwhile Alice gives up.
        await bob.voip.close(hang_up=False)
        await bob.transport.stop()
        await call.hangup()
        await wait_for(lambda: call.state.value == "ended", 10, "alice hung up")
        saved = bob.transport.saved_credentials(bob.store)
        assert saved is not None
        await bob.restart()
        await wait_for(lambda: bool(bob.events["history_item"]), 15, "the missed call")
        assert bob.events["history_item"][0][0].outcome is Outcome.MISSED
        assert bob.events["history_item"][0][0].call_id == call.call_id
        assert bob.events["incoming_call"] == []
        # A call placed to a device that was offline for the whole call: missed, never rung.
        await bob.voip.close(hang_up=False)
        await bob.transport.stop()
        second = await alice.voip.place_call(room, bob.user_id)
        await wait_for(lambda: second.state.value == "invite_sent", 10, "invite sent")
        await second.hangup()
        await bob.restart()
        await wait_for(lambda: bool(bob.events["history_item"]), 15, "the second missed call")
        assert [i[0].call_id for i in bob.events["history_item"]] == [second.call_id]
        assert bob.events["history_item"][0][0].outcome is Outcome.MISSED
        assert bob.events["incoming_call"] == []
    finally:
        await alice.stop()
        await bob.stop()

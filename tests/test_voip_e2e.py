"""Calls end to end: the call engine, real aiortc with encrypted media, an in-memory transport."""

import asyncio
from typing import Any

from sealcall.calls import BusyPolicy, CallPolicy, Outcome
from sealcall.transport import InMemoryHub
from voip_helpers import ROOM, Device, answered_call, eventually


async def test_audio_call() -> None:
    hub = InMemoryHub(latency=0.01)
    alice, bob = Device(hub, "@alice:local", "ALICE"), Device(hub, "@bob:local", "BOB")
    try:
        session = await alice.voip.place_call(ROOM, "@bob:local")
        await eventually(lambda: bool(bob.events["incoming_call"]))
        incoming = bob.events["incoming_call"][0][0]
        assert incoming.call_id == session.call_id
        await incoming.answer()
        await eventually(
            lambda: session.state.value == "connected" and incoming.state.value == "connected"
        )
        await eventually(lambda: (session.call_id, "m.usermedia/audio") in bob.counters)
        await eventually(lambda: bob.counter(session.call_id, "audio").frames > 50, timeout=5)
        await eventually(lambda: alice.counter(session.call_id, "audio").frames > 50, timeout=5)
        # Media is end-to-end encrypted with the keys from the invite and answer.
        assert session.keys.encrypted
        receiver = session.pc.getReceivers()[0]
        assert session.pc.receiver_tap(receiver).counters.frames_decrypted > 50
        await session.hangup()
        await eventually(lambda: bool(bob.events["call_ended"]))
        assert alice.states(session.call_id) == [
            "create_offer",
            "invite_sent",
            "connecting",
            "connected",
            "ended",
        ]
        assert bob.states(session.call_id) == [
            "ringing",
            "create_answer",
            "connecting",
            "connected",
            "ended",
        ]
        (a_item,), (b_item,) = alice.events["history_item"], bob.events["history_item"]
        assert a_item[0].outcome is b_item[0].outcome is Outcome.ANSWERED
        assert not a_item[0].video
        types = [e["type"] for _, _, e in hub.log]
        assert types == ["m.call.invite", "m.call.answer", "m.call.select_answer", "m.call.hangup"]
    finally:
        await alice.close()
        await bob.close()


async def test_video_call_with_mute_and_camera_off() -> None:
    hub = InMemoryHub(latency=0.01)
    alice, bob = Device(hub, "@alice:local", "ALICE"), Device(hub, "@bob:local", "BOB")
    try:
        session, incoming = await answered_call(alice, bob, video=True)
        await eventually(lambda: (session.call_id, "m.usermedia/video") in bob.counters)
        video = bob.counter(session.call_id, "video")
        audio = bob.counter(session.call_id, "audio")
        await eventually(lambda: video.frames > 20 and audio.frames > 20, timeout=5)
        assert video.last_size == (320, 240)

        await session.set_microphone_muted(True)
        await eventually(
            lambda: (
                incoming.call.remote_streams
                and next(iter(incoming.call.remote_streams.values())).audio_muted
            )
        )
        await asyncio.sleep(0.7)
        assert not audio.active(within=0.5)
        assert video.active()

        await session.set_camera_muted(True)
        await eventually(lambda: bob.events["remote_mute_changed"][-1:] == [(incoming, True, True)])
        await asyncio.sleep(0.7)
        assert not video.active(within=0.5)

        await session.set_camera_muted(False)
        await session.set_microphone_muted(False)
        frames = video.frames
        await eventually(lambda: video.frames > frames + 10 and audio.active(), timeout=5)
        metadata = next(iter(incoming.call.remote_streams.values()))
        assert not metadata.audio_muted
        assert not metadata.video_muted
        await incoming.hangup()
        await eventually(lambda: bool(alice.events["call_ended"]))
        assert alice.events["history_item"][0][0].video
    finally:
        await alice.close()
        await bob.close()


async def test_glare_ends_in_one_connected_call() -> None:
    hub = InMemoryHub(latency=0.05)
    alice, bob = Device(hub, "@alice:local", "ALICE"), Device(hub, "@bob:local", "BOB")
    try:
        a, b = await asyncio.gather(
            alice.voip.place_call(ROOM, "@bob:local"), bob.voip.place_call(ROOM, "@alice:local")
        )
        survivor = min(a.call_id, b.call_id)
        await eventually(
            lambda: (
                alice.voip.sessions.get(survivor) is not None
                and bob.voip.sessions.get(survivor) is not None
                and alice.voip.sessions[survivor].state.value == "connected"
                and bob.voip.sessions[survivor].state.value == "connected"
            )
        )
        for device in (alice, bob):
            assert [c.call_id for c in device.voip.manager.active_calls()] == [survivor]
            assert device.events["incoming_call"] == []
        await eventually(lambda: (survivor, "m.usermedia/audio") in bob.counters)
        await eventually(lambda: bob.counter(survivor, "audio").frames > 20, timeout=5)
        await alice.voip.sessions[survivor].hangup()
        await eventually(lambda: bool(bob.events["history_item"]))
        assert [i[0].call_id for i in alice.events["history_item"]] == [survivor]
        assert [i[0].call_id for i in bob.events["history_item"]] == [survivor]
    finally:
        await alice.close()
        await bob.close()


def microphone_tap(session: Any) -> Any:
    """The sender tap of a call's microphone."""
    pc = session.pc
    return pc.sender_tap(pc.senders_for("microphone")[0])


async def test_call_waiting_and_busy() -> None:
    hub = InMemoryHub(latency=0.01)
    alice = Device(hub, "@alice:local", "ALICE")
    bob = Device(hub, "@bob:local", "BOB")
    carol = Device(hub, "@carol:local", "CAROL")
    try:
        first, _ = await answered_call(alice, bob)

        second = await carol.voip.place_call(ROOM, "@bob:local")
        await eventually(lambda: bool(bob.events["call_waiting"]))
        waiting, current = bob.events["call_waiting"][0]
        assert waiting.call_id == second.call_id
        assert current.call_id == first.call_id
        assert len(bob.events["incoming_call"]) == 1  # shown as waiting, not as a new ring

        # Hold the first call, answer the second: both stay up, the first on hold.
        await current.hold(True)
        await waiting.answer()
        await eventually(lambda: second.state.value == "connected")
        await eventually(lambda: bool(alice.events["remote_hold_changed"]))
        assert alice.events["remote_hold_changed"][-1][1] is True
        await eventually(lambda: (second.call_id, "m.usermedia/audio") in carol.counters)
        await eventually(lambda: carol.counter(second.call_id, "audio").frames > 20, timeout=5)
        held_mic = microphone_tap(current)
        assert held_mic.paused
        paused_before = held_mic.counters.frames_paused
        await eventually(lambda: held_mic.counters.frames_paused > paused_before + 10)
        assert not microphone_tap(waiting).paused
        # Resumed: the microphone goes out again; a mute set during the hold stays.
        await current.hold(False)
        await eventually(lambda: not held_mic.paused)
        await current.set_microphone_muted(True)
        await current.hold(True)
        await current.hold(False)
        assert held_mic.paused  # the user's mute outlives the hold
        await waiting.hangup()
        await current.hangup()
        await eventually(lambda: len(bob.events["history_item"]) == 2)
    finally:
        for device in (alice, bob, carol):
            await device.close()

    # With the busy policy, the second call is refused with user_busy at once.
    hub = InMemoryHub(latency=0.01)
    alice = Device(hub, "@alice:local", "ALICE")
    bob = Device(hub, "@bob:local", "BOB", CallPolicy(busy=BusyPolicy.REJECT))
    carol = Device(hub, "@carol:local", "CAROL")
    try:
        first, _ = await answered_call(alice, bob)
        await carol.voip.place_call(ROOM, "@bob:local")
        await eventually(lambda: bool(carol.events["history_item"]))
        assert carol.events["history_item"][0][0].outcome is Outcome.BUSY
        assert bob.events["call_waiting"] == []
        rejects = [e for _, _, e in hub.log if e["type"] == "m.call.reject"]
        assert rejects[-1]["content"]["reason"] == "user_busy"
        assert first.state.value == "connected"
    finally:
        for device in (alice, bob, carol):
            await device.close()


async def test_upgrade_to_video_and_screen_share() -> None:
    hub = InMemoryHub(latency=0.01)
    alice, bob = Device(hub, "@alice:local", "ALICE"), Device(hub, "@bob:local", "BOB")
    try:
        session, incoming = await answered_call(alice, bob)
        assert not session.call.video

        await session.upgrade_to_video()
        await eventually(lambda: (session.call_id, "m.usermedia/video") in bob.counters, timeout=10)
        await eventually(lambda: bob.counter(session.call_id, "video").frames > 10, timeout=5)

        await session.set_screen_share(True)
        await eventually(
            lambda: (session.call_id, "m.screenshare/video") in bob.counters, timeout=10
        )
        screen = bob.counter(session.call_id, "video", "m.screenshare")
        await eventually(lambda: screen.frames > 5, timeout=5)
        purposes = {m.purpose for m in incoming.call.remote_streams.values()}
        assert purposes == {"m.usermedia", "m.screenshare"}

        await session.set_screen_share(False)
        await eventually(
            lambda: {m.purpose for m in incoming.call.remote_streams.values()} == {"m.usermedia"}
        )
        await eventually(lambda: bool(bob.events["remote_media_removed"]))
        assert bob.events["remote_media_removed"][0][2].value == "m.screenshare"
        # The screen's frames stop (a loaded machine may still deliver a few in flight).
        await eventually(lambda: not screen.active(within=0.5), timeout=10)
        assert bob.counter(session.call_id, "video").active()
        await session.hangup()
        await eventually(lambda: bool(bob.events["history_item"]))
        assert alice.events["history_item"][0][0].video
    finally:
        await alice.close()
        await bob.close()


async def test_renegotiation_glare_over_aiortc() -> None:
    hub = InMemoryHub(latency=0.05)
    alice, bob = Device(hub, "@alice:local", "ALICE"), Device(hub, "@bob:local", "BOB")
    try:
        session, incoming = await answered_call(alice, bob)
        # Both change the call at the same moment: their offers cross in the room. Alice (the
        # caller) keeps her offer; Bob withdraws his (a rollback), answers, and offers again.
        await asyncio.gather(session.set_screen_share(True), incoming.upgrade_to_video())
        await eventually(
            lambda: (session.call_id, "m.usermedia/video") in alice.counters, timeout=10
        )
        await eventually(lambda: alice.counter(session.call_id, "video").frames > 10, timeout=10)
        await eventually(
            lambda: (session.call_id, "m.screenshare/video") in bob.counters, timeout=10
        )
        await eventually(
            lambda: bob.counter(session.call_id, "video", "m.screenshare").frames > 5, timeout=10
        )
        assert session.state.value == incoming.state.value == "connected"
        offers = [
            e["content"]["description"]["type"]
            for _, sender, e in hub.log
            if sender == "@bob:local" and e["type"] == "m.call.negotiate"
        ]
        assert offers == ["offer", "answer", "offer"]
    finally:
        await alice.close()
        await bob.close()

"""Group calls through the SFU over the real stack: real Synapse, the real SFU server with its
real admission, members' GroupCallSessions in SFU mode (one aiortc link each)."""

import pytest

import test_group_membership_session as gm
from group_call_helpers import TIMEOUT, CallDevices
from sealcall.demo import wait_for
from sealcall.homeserver import Homeserver
from sealcall.session.group_call import GroupCallSession
from sealcall.session.sfu_link import SfuAdmissionError, admit
from sealcall.session.sfu_session import AiortcSfuLink
from sfu_call_helpers import running_sfu, sfu_member_session, sfu_url

pytestmark = pytest.mark.usefixtures("synapse")

HIGH = 10_000_000  # bit/s: thumbnails of five and one full layer fit
LOW = 600_000  # bit/s: five thumbnails fit, a full layer (1.2 Mbit/s nominal) does not


async def test_three_members_through_the_sfu_decode_each_others_audio_and_video(
    call_devices: CallDevices, synapse: Homeserver
) -> None:
    alice, bob, carol, sfu = [await call_devices.new(n) for n in ("alice", "bob", "carol", "sfu")]
    room_id = await gm.group_room(sfu, alice, bob, carol)
    async with running_sfu(synapse, sfu) as server:
        members = [
            sfu_member_session(call_devices, d, room_id, server) for d in (alice, bob, carol)
        ]
        for m in members:
            await m.session.join()
            assert m.session.focus is not None
            assert m.session.mesh is None
        devices = [d.device for d in (alice, bob, carol)]

        def everyone_decodes() -> bool:
            return all(
                m.decoded(other, kind) >= 10 and m.decrypted(other, kind) >= 10
                for m, own in zip(members, devices, strict=True)
                for other in devices
                if other != own
                for kind in ("audio", "video")
            )

        await wait_for(everyone_decodes, TIMEOUT, "every member decoding every other's media")
        room = server.rooms[room_id]
        assert len(room.members) == 3
        # One link per member: nothing peer to peer, each frame encoded and encrypted once.
        for m in members:
            assert m.session.pairs == {}
            sent = m.session.stats()["sent"]
            assert set(sent) == {"microphone", "camera", "camera_full"}
            assert sent["camera"]["target_bitrate"] <= 150_000
        # Bob leaves: the others stop getting new frames from him, the call goes on.
        await members[1].session.leave()
        await wait_for(lambda: len(room.members) == 2, TIMEOUT, "bob leaving the SFU")


async def test_a_non_member_is_refused_admission_with_the_sfus_reason(
    call_devices: CallDevices, synapse: Homeserver
) -> None:
    alice, sfu = await call_devices.new("alice"), await call_devices.new("sfu")
    room_id = await gm.group_room(sfu, alice)
    async with running_sfu(synapse, sfu) as server:
        with pytest.raises(SfuAdmissionError) as refused:
            await admit(alice.transport, sfu_url(server), room_id)
        assert refused.value.reason == "not_member"


async def test_six_members_thumbnails_and_a_full_layer_that_follows_a_bandwidth_cap(
    call_devices: CallDevices, synapse: Homeserver
) -> None:
    """Must-show 1 of issue 11: six members through the SFU all decode each other's thumbnails;
    a subscriber's full-resolution choice goes down and up with the bandwidth it reports (a
    simulated cap on its link's REMB), and the publisher's full-resolution encoder follows the
    SFU's clamp."""
    names = ("alice", "bob", "carol", "dave", "erin", "frank")
    ds = [await call_devices.new(n) for n in names]
    sfu = await call_devices.new("sfu")
    room_id = await gm.group_room(sfu, *ds)
    async with running_sfu(synapse, sfu) as server:
        members = [sfu_member_session(call_devices, d, room_id, server) for d in ds]
        for m in members:
            # Video only: six members' audio in one test process would crowd out the rest.
            await m.session.set_microphone_muted(True)
            await m.session.join()
        devices = [d.device for d in ds]

        def thumbnails() -> bool:
            return all(
                m.decoded(other, "video") >= 5
                for m, own in zip(members, devices, strict=True)
                for other in devices
                if other != own
            )

        await wait_for(thumbnails, TIMEOUT * 2, "every member decoding every other's thumbnail")
        viewer, publisher = members[0], members[1]
        link = viewer.session.link
        assert isinstance(link, AiortcSfuLink)
        full = publisher.session.encoders["camera_full"]
        link.set_remb_cap(HIGH)
        await viewer.session.subscribe(devices[1], "full")
        await wait_for(
            lambda: viewer.session.layers.get(devices[1]) == "full", TIMEOUT, "the full layer"
        )
        await wait_for(lambda: full.target_bitrate > LOW, TIMEOUT, "the clamp lifted")
        # The cap comes down: back to the thumbnail, and the publisher's full layer is clamped.
        link.set_remb_cap(LOW)
        await wait_for(
            lambda: viewer.session.layers.get(devices[1]) == "thumbnail", TIMEOUT, "going down"
        )
        await wait_for(lambda: full.target_bitrate <= LOW, TIMEOUT, "the clamp to the cap")
        # And up again.
        link.set_remb_cap(HIGH)
        await wait_for(
            lambda: viewer.session.layers.get(devices[1]) == "full", TIMEOUT, "going up again"
        )
        await wait_for(lambda: full.target_bitrate > LOW, TIMEOUT, "the clamp lifted again")
        told = [q for p, q in viewer.layers if p == devices[1]]
        changes = [q for i, q in enumerate(told) if i == 0 or told[i - 1] != q]
        assert changes == ["thumbnail", "full", "thumbnail", "full"]
        # The thumbnails kept flowing to the viewer meanwhile, decrypted with each sender's key.
        assert all(viewer.decrypted(other, "video") > 0 for other in devices[1:])


async def test_mute_states_reach_the_other_members_through_the_sfu(
    call_devices: CallDevices, synapse: Homeserver
) -> None:
    """MSC3291's indicators without pair signaling: the SFU's control channel carries them."""
    alice, bob, carol, sfu = [await call_devices.new(n) for n in ("alice", "bob", "carol", "sfu")]
    room_id = await gm.group_room(sfu, alice, bob, carol)
    async with running_sfu(synapse, sfu) as server:
        members = [sfu_member_session(call_devices, d, room_id, server) for d in (alice, bob)]
        seen: dict[str, list[tuple[object, bool, bool]]] = {}

        def watch(name: str, session: GroupCallSession) -> None:
            seen[name] = []
            session.on("remote_mute_changed", lambda *args: seen[name].append(args))

        for name, m in zip(("alice", "bob"), members, strict=True):
            watch(name, m.session)
            await m.session.join()
        await members[0].session.set_microphone_muted(True)
        a_muted = (alice.device, True, False)
        await wait_for(lambda: a_muted in seen["bob"], TIMEOUT, "bob seeing alice muted")
        # A newcomer learns the states set before it joined.
        late = sfu_member_session(call_devices, carol, room_id, server)
        watch("carol", late.session)
        members.append(late)
        await late.session.join()
        await wait_for(lambda: a_muted in seen["carol"], TIMEOUT, "carol seeing alice muted")
        await members[1].session.set_camera_muted(True)
        b_off = (bob.device, False, True)
        await wait_for(
            lambda: b_off in seen["alice"] and b_off in seen["carol"], TIMEOUT, "bob's camera off"
        )
        await members[0].session.set_microphone_muted(False)
        a_back = (alice.device, False, False)
        await wait_for(lambda: a_back in seen["carol"], TIMEOUT, "alice unmuted")
        assert all(args[0] != alice.device for args in seen["alice"])  # never our own
        for m in members:
            await m.session.leave()


async def test_a_link_the_sfu_dropped_is_reopened_but_not_after_admission_ended(
    call_devices: CallDevices, synapse: Homeserver
) -> None:
    """The SFU closes bob's WebSocket, then his connection fails (as when ICE consent expired
    under load): each time his session removes the old link's media, is admitted again and
    opens a new link whose frames decrypt with the same keys. When the SFU ends his admission
    (``admission_ended``) nothing is reopened."""
    alice, bob, sfu = [await call_devices.new(n) for n in ("alice", "bob", "sfu")]
    room_id = await gm.group_room(sfu, alice, bob)
    async with running_sfu(synapse, sfu) as server:
        members = [sfu_member_session(call_devices, d, room_id, server) for d in (alice, bob)]
        b = members[1].session
        removed: list[object] = []
        closed: list[str] = []
        b.on("remote_media_removed", lambda member, track, purpose: removed.append(member))
        b.on("sfu_closed", closed.append)
        for m in members:
            await m.session.join()
        keys = b.keys

        def bob_decrypts_alice() -> bool:
            return all(members[1].decrypted(alice.device, k) >= 10 for k in ("audio", "video"))

        await wait_for(bob_decrypts_alice, TIMEOUT, "bob decrypting alice")
        old = b.link
        room = server.rooms[room_id]
        [bobs] = [m for m in room.members.values() if m.participant.user_id == bob.user_id]
        await bobs.ws.close()
        await wait_for(lambda: closed == ["closed"], TIMEOUT, "bob's link ending")
        assert removed.count(alice.device) == 2  # her audio and video, gone with the old link
        await wait_for(lambda: b.link is not old and b.link is not None, TIMEOUT, "a new link")
        # The new link's own counters (they start at zero) grow: alice's media is back.
        await wait_for(bob_decrypts_alice, TIMEOUT, "bob decrypting alice again")
        assert b.keys is keys
        assert b.stats()["sfu_reopens"] == 1
        assert members[1].decoded(alice.device, "video") > 0
        # Bob's connection fails (as when ICE consent expires) with the WebSocket still open.
        old = b.link
        assert isinstance(old, AiortcSfuLink)
        await old.pc.close()
        await wait_for(lambda: closed[-1:] == ["connection_closed"], TIMEOUT, "link ending")
        await wait_for(lambda: b.link is not old and b.link is not None, TIMEOUT, "a new link")
        await wait_for(bob_decrypts_alice, TIMEOUT, "bob decrypting alice once more")
        assert b.stats()["sfu_reopens"] == 2
        assert removed.count(alice.device) == 4
        # The SFU ends bob's admission: he is no longer a member, nothing is reopened.
        [bobs] = [m for m in room.members.values() if m.participant.user_id == bob.user_id]
        server.disconnect(bobs.participant)
        await wait_for(lambda: closed[-1:] == ["admission_ended"], TIMEOUT, "admission ended")
        assert b._reopening is None
        assert b._link_retry.stopped
        assert b.stats()["sfu_reopens"] == 2
        for m in members:
            await m.session.leave()

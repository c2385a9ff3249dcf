"""Group calls through the SFU over the real stack: real Synapse, the real SFU server with its
real admission, members' GroupCallSessions in SFU mode (one aiortc link each)."""

import pytest

import test_group_membership_session as gm
from group_call_helpers import TIMEOUT, CallDevices
from sealcall.demo import wait_for
from sealcall.homeserver import Homeserver
from sealcall.session.sfu_link import SfuAdmissionError, admit
from sfu_call_helpers import running_sfu, sfu_member_session, sfu_url

pytestmark = pytest.mark.usefixtures("synapse")


async def test_three_members_through_the_sfu_decode_each_others_audio_and_video(
    call_devices: CallDevices, synapse: Homeserver
) -> None:
    alice, bob, carol, sfu = [await call_devices.new(n) for n in ("alice", "bob", "carol", "sfu")]
    room_id = await gm.group_room(sfu, alice, bob, carol)
    async with running_sfu(synapse, sfu) as server:
        members = [sfu_member_session(call_devices, d, room_id, server) for d in (alice, bob, carol)]
        for m in members:
            await m.session.join()
            assert m.session.focus is not None and m.session.mesh is None
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

"""Group calls whose media runs in the page, without a browser: a pair's media actions as page
commands (addressed by pair, room and sender), our key as the page's send key, and the members'
keys forwarded from the key ring only for members."""

import base64
import os
from types import SimpleNamespace
from typing import Any

from sealcall.calls import actions as act
from sealcall.e2ee import CallKeys, GroupKey, GroupKeyRing, KeyVerdict, ToDeviceSender
from sealcall.e2ee import MemberDevice as KeyMember
from sealcall.group import MemberDevice
from sealcall.web.page_group import (
    PageGroupSending,
    PagePairSession,
    receive_key_message,
    send_key_message,
)

ROOM = "!room:example.org"
ALICE = ("@alice:example.org", "ALICEDEV")
BOB = ("@bob:example.org", "BOBDEV")
MALLORY = ("@mallory:example.org", "MALDEV")


def pair(messages: list[dict[str, Any]]) -> PagePairSession:
    group: Any = SimpleNamespace(room_id=ROOM, ice_servers=(), relay_only=False)
    call: Any = SimpleNamespace(call_id="pair-1")
    return PagePairSession(group, MemberDevice(*BOB), call, messages.append)


async def test_a_pairs_media_actions_go_to_the_page_addressed_by_pair_room_and_sender() -> None:
    messages: list[dict[str, Any]] = []
    session = pair(messages)
    await session.perform(act.CreateOffer(video=True, screenshare=False, on_hold=False))
    await session.perform(act.SetLocalMute(audio_muted=True, video_muted=False))
    # Group media is always encrypted with the group keys: no 1:1 keys, no plain media.
    await session.perform(act.UseMediaKeys(suite=4, keys=CallKeys(os.urandom(16), os.urandom(16))))
    await session.perform(act.AllowUnencryptedMedia())
    await session.perform(act.ClosePeerConnection())
    await session.perform(act.ApplyAnswer("v=0 late"))
    await session.close()
    assert [m["op"] for m in messages] == ["create_offer", "set_mute", "close"]
    for message in messages:
        assert message["type"] == "media"
        assert message["pair_id"] == "pair-1"
        assert message["room_id"] == ROOM
        assert message["sender"] == "@bob:example.org BOBDEV"
        assert "call_id" not in message
    assert messages[0]["video"] is True
    assert messages[0]["ice_servers"] == []


def test_our_key_goes_to_the_page_when_it_is_to_be_used_and_nothing_is_encoded_here() -> None:
    messages: list[dict[str, Any]] = []
    sending = PageGroupSending(ROOM, messages.append, video=True)
    sending.start()
    assert sending.encoders == {}
    assert sending.screen_encoder(True) is None
    key = GroupKey(3, os.urandom(32))
    sending.use_key(key)
    assert messages == [send_key_message(ROOM, 4, key)]
    assert messages[0]["send"] == {"kid": 3, "key": base64.b64encode(key.key).decode()}
    assert messages[0]["receive"] == []
    assert messages[0]["suite"] == 4
    sending.set_muted(True, None)
    assert sending.audio_muted
    assert not sending.video_muted


def ring_with_bob() -> GroupKeyRing:
    ring = GroupKeyRing(ROOM, ALICE)
    ring.set_members([KeyMember(*BOB, membership_id="bob-session")], now=0.0)
    return ring


def offer(ring: GroupKeyRing, device: tuple[str, str], key: GroupKey) -> KeyVerdict:
    return ring.on_key(
        ToDeviceSender(device[0], device[1], olm_encrypted=True),
        room_id=ROOM,
        member_id=None,
        claimed_device_id=None,
        key=key,
        now=1.0,
    )


def test_a_members_accepted_key_reaches_the_page_a_non_members_never() -> None:
    ring = ring_with_bob()
    bobs, mallorys = GroupKey(1, os.urandom(32)), GroupKey(1, os.urandom(32))
    assert offer(ring, BOB, bobs) is KeyVerdict.ACCEPTED
    assert offer(ring, MALLORY, mallorys) is KeyVerdict.NOT_MEMBER
    message = receive_key_message(ROOM, ring.suite, ring.key, *BOB, 1)
    assert message == {
        "type": "group_keys",
        "room_id": ROOM,
        "suite": ring.suite,
        "send": None,
        "receive": [
            {
                "sender": "@bob:example.org BOBDEV",
                "kid": 1,
                "key": base64.b64encode(bobs.key).decode(),
            }
        ],
    }
    # Mallory's key was refused: asked for it (as a key_received event might be forged to
    # ask), the ring has nothing to give.
    assert receive_key_message(ROOM, ring.suite, ring.key, *MALLORY, 1) is None
    # A key held under another index is not handed out under this one.
    assert receive_key_message(ROOM, ring.suite, ring.key, *BOB, 2) is None
    # Bob left the call: his keys are gone, none goes to the page any more.
    ring.set_members([], now=2.0)
    assert receive_key_message(ROOM, ring.suite, ring.key, *BOB, 1) is None

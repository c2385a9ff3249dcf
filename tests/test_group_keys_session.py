"""GroupKeys, the asyncio layer of group media keys, over a real Synapse: three devices exchange
keys over Olm and decrypt each other's SFrame frames; after a leave the others rotate and the
departed device cannot read their new frames; keys sent in plaintext or by a non-member are
refused and counted."""

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nio import ToDeviceMessage

import test_group_membership_session as gm
from sealcall.demo import wait_for
from sealcall.e2ee import Codec, GroupKey, protect_frame
from sealcall.homeserver import Homeserver
from sealcall.session import GroupKeys
from sealcall.sframe import SFrameSender
from sealcall.sframe.errors import UnknownKeyError
from sealcall.signaling.key_events import ENCRYPTION_KEY_EVENT, EncryptionKeyContent
from sealcall.transport.matrix import DeviceMessage

pytestmark = pytest.mark.usefixtures("synapse")

TIMEOUT = gm.TIMEOUT
OPUS_FRAME = bytes([0x78]) + bytes(range(60))


class KeyDevices(gm.Devices):
    keys: dict[str, GroupKeys]


@pytest.fixture
async def devices(synapse: Homeserver, tmp_path: Path) -> AsyncIterator[KeyDevices]:
    made = KeyDevices(synapse, tmp_path)
    made.keys = {}
    yield made
    for keys in made.keys.values():
        await keys.close()
    for d in made.started:
        if d.group is not None:
            await d.group.close(leave=False)
        await d.transport.stop()


async def join_with_keys(
    devices: KeyDevices, d: gm.Device, room_id: str, **options: Any
) -> GroupKeys:
    """Join the call, then start the device's keys: short delays, so the test is quick; a key
    stays "young" for a minute, so a slow machine's joins never rotate (only leaves do)."""
    group = d.membership(room_id)
    await group.join()
    options = {"use_delay": 0.5, "early_ttl": 1.0, "young_key_age": 60.0, **options}
    keys = GroupKeys(d.transport, room_id, group, **options)
    devices.keys[d.user_id] = keys
    await keys.start()
    return keys


def protect(keys: GroupKeys) -> tuple[int, bytes]:
    """An Opus frame protected with the device's current send key: (KID, frame)."""
    key = keys.send_key
    assert key is not None
    return key.index, protect_frame(Codec.OPUS, SFrameSender(key.index, key.key), OPUS_FRAME)


def holds(keys: GroupKeys, other: gm.Device, index: int) -> bool:
    return index in keys.kids(other.user_id, other.transport.device_id)


async def test_members_exchange_keys_and_a_leaver_cannot_read_new_frames(
    devices: KeyDevices,
) -> None:
    a, b, c = [await devices.new(n) for n in ("alice", "bob", "carol")]
    room_id = await gm.group_room(a, b, c)
    ka, kb, kc = [await join_with_keys(devices, d, room_id) for d in (a, b, c)]
    everyone = [(a, ka), (b, kb), (c, kc)]
    await gm.all_in_call([a, b, c])
    await wait_for(
        lambda: all(holds(k, o, 0) for d, k in everyone for o, _ in everyone if o is not d),
        TIMEOUT,
        "every device holding the others' keys",
    )
    for sender, sender_keys in everyone:
        _, frame = protect(sender_keys)
        for receiver, receiver_keys in everyone:
            if receiver is not sender:
                plain = receiver_keys.unprotect(
                    sender.user_id, sender.transport.device_id, Codec.OPUS, frame
                )
                assert plain == OPUS_FRAME
    assert all(k.counters["accepted"] == 2 for _, k in everyone)

    # Carol leaves; her keys stay running, handed every to-device message sent to her.
    assert c.group is not None
    await c.group.leave()
    await wait_for(
        lambda: all(
            k.send_key is not None and k.send_key.index == 1 and holds(k, o, 1)
            for (d, k), (o, _) in (((a, ka), (b, kb)), ((b, kb), (a, ka)))
        ),
        TIMEOUT,
        "alice and bob using new keys and holding each other's",
    )
    for sender, sender_keys, receiver_keys in ((a, ka, kb), (b, kb, ka)):
        index, frame = protect(sender_keys)
        assert index == 1
        who = (sender.user_id, sender.transport.device_id)
        assert receiver_keys.unprotect(*who, Codec.OPUS, frame) == OPUS_FRAME
        with pytest.raises(UnknownKeyError):
            kc.unprotect(*who, Codec.OPUS, frame)
        assert kc.kids(*who) == [0]
    assert ka.counters["rotations"] == kb.counters["rotations"] == 1
    assert kc.counters["rotations"] == 0


async def test_plaintext_and_non_member_keys_are_refused_and_counted(
    devices: KeyDevices,
) -> None:
    a, b, m = [await devices.new(n) for n in ("alice", "bob", "mallory")]
    room_id = await gm.group_room(a, b, m)
    ka = await join_with_keys(devices, a, room_id)
    kb = await join_with_keys(devices, b, room_id)
    await wait_for(lambda: holds(ka, b, 0) and holds(kb, a, 0), TIMEOUT, "the keys exchanged")
    bob = (b.user_id, b.transport.device_id)
    alice = (a.user_id, a.transport.device_id)

    # Mallory, in the room but not in the call, sends alice a key over Olm.
    forged = GroupKey(5, os.urandom(32))
    content = EncryptionKeyContent(room_id, kb.member_id, forged).to_dict()
    await m.transport.send_to_device(*alice, ENCRYPTION_KEY_EVENT, content)
    await wait_for(lambda: ka.counters["not_member"] == 1, TIMEOUT, "mallory's key refused")

    # Bob (a member) sends alice a key in plaintext: the transport drops it, alice counts it.
    fake = GroupKey(7, os.urandom(32))
    content = EncryptionKeyContent(room_id, kb.member_id, fake).to_dict()
    sent = await b.transport.client.to_device(
        ToDeviceMessage(ENCRYPTION_KEY_EVENT, *alice, content)
    )
    assert not hasattr(sent, "status_code"), sent
    await wait_for(lambda: ka.counters["plaintext"] == 1, TIMEOUT, "the plaintext key refused")
    assert a.transport.dropped_plaintext_to_device == 1

    assert ka.kids(*bob) == [0]
    assert ka.kids(m.user_id, m.transport.device_id) == []
    for key in (fake, forged):
        frame = protect_frame(Codec.OPUS, SFrameSender(key.index, key.key), OPUS_FRAME)
        with pytest.raises(UnknownKeyError):
            ka.unprotect(*bob, Codec.OPUS, frame)
    assert ka.counters["accepted"] == 1
    # Bob's real key still works.
    _, frame = protect(kb)
    assert ka.unprotect(*bob, Codec.OPUS, frame) == OPUS_FRAME


async def test_a_lost_key_is_asked_for_and_sent_again(devices: KeyDevices) -> None:
    a, b = [await devices.new(n) for n in ("alice", "bob")]
    room_id = await gm.group_room(a, b)
    lost: list[DeviceMessage] = []
    listeners = a.transport.to_device.listeners

    def lose_first_key(listener: Any) -> Any:
        def deliver(message: DeviceMessage) -> None:
            if message.type == ENCRYPTION_KEY_EVENT and not lost:
                lost.append(message)  # as if the homeserver had lost it
                return
            listener(message)

        return deliver

    ka = await join_with_keys(devices, a, room_id, request_delay=0.5)
    listeners[-1] = lose_first_key(listeners[-1])  # the one GroupKeys.start added
    kb = await join_with_keys(devices, b, room_id)
    await wait_for(lambda: holds(kb, a, 0), TIMEOUT, "bob holding alice's key")
    bob = (b.user_id, b.transport.device_id)
    await wait_for(lambda: holds(ka, b, 0), TIMEOUT, "alice asking for bob's key and getting it")
    assert [m.sender for m in lost] == [b.user_id]
    assert ka.counters["requests_sent"] >= 1
    assert kb.counters["requests_answered"] >= 1
    assert ka.counters["accepted"] == 1
    _, frame = protect(kb)
    assert ka.unprotect(*bob, Codec.OPUS, frame) == OPUS_FRAME

"""The Matrix transport's parts for group calls, over a real Synapse: Olm-encrypted to-device
messages with the verified sending device, room state and its listener, MSC4140 delayed state
events, and group rooms."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from unpaddedbase64 import encode_base64

from sealcall.demo import wait_for
from sealcall.homeserver import Homeserver
from sealcall.transport.matrix import (
    CALL_MEMBER,
    CallMembershipForbiddenError,
    DelayedEventGoneError,
    DeviceMessage,
    MatrixTransport,
    StateEvent,
    UnencryptableDeviceError,
    UnencryptedRoomError,
)
from sealcall.transport.matrix.http import V3, path, request
from sealcall.transport.matrix.rooms import ENCRYPTION_STATE

pytestmark = pytest.mark.usefixtures("synapse")

KIND = "org.sealcall.test"


class Device:
    """A bare logged-in transport and what it received."""

    def __init__(self, transport: MatrixTransport, password: str) -> None:
        self.transport = transport
        self.password = password
        self.messages: list[DeviceMessage] = []
        self.states: list[StateEvent] = []
        transport.add_to_device_listener(self.messages.append)
        transport.add_state_listener(self.states.append, [CALL_MEMBER])

    @property
    def user_id(self) -> str:
        return self.transport.user_id

    @property
    def device_id(self) -> str:
        return self.transport.device_id

    def states_at(self, key: str) -> list[StateEvent]:
        return [s for s in self.states if s.state_key == key]


class Devices:
    def __init__(self, server: Homeserver, tmp: Path) -> None:
        self.server, self.tmp = server, tmp
        self.started: list[Device] = []

    async def new(self, name: str) -> Device:
        username = f"{name}{uuid.uuid4().hex[:8]}"
        account = await self.server.register(username, "secret-" + username)
        return await self.login(account.user_id, account.password, username)

    async def login(self, user_id: str, password: str, folder: str) -> Device:
        transport = await MatrixTransport.login(
            self.server.url, user_id, password, self.tmp / f"{folder}-{uuid.uuid4().hex[:4]}"
        )
        found = Device(transport, password)
        self.started.append(found)
        await transport.start()
        return found


@pytest.fixture
async def devices(synapse: Homeserver, tmp_path: Path) -> AsyncIterator[Devices]:
    made = Devices(synapse, tmp_path)
    yield made
    for d in made.started:
        await d.transport.stop()


async def group_room(a: Device, *others: Device) -> str:
    room_id = await a.transport.create_group_room("group", invite=[o.user_id for o in others])
    for other in others:
        await wait_for(lambda o=other: room_id in o.transport.invites(), 15, "the invite")
        await other.transport.join(room_id)
    await wait_for(
        lambda: all(
            room_id in d.transport.client.rooms
            and d.transport.client.rooms[room_id].encrypted
            and len(d.transport.client.rooms[room_id].users) == 1 + len(others)
            for d in (a, *others)
        ),
        15,
        "everybody in the encrypted room",
    )
    return room_id


# -- to-device ---------------------------------------------------------------------------------


async def test_an_olm_message_reaches_each_device_with_its_real_sender_device(
    devices: Devices,
) -> None:
    a = await devices.new("alice")
    b = await devices.new("bob")
    # No room in common: to-device messages need none.
    sent = await a.transport.send_to_device(b.user_id, b.device_id, KIND, {"n": 1})
    assert sent == 1
    await wait_for(lambda: bool(b.messages), 15, "the to-device message")
    assert b.messages == [DeviceMessage(a.user_id, a.device_id, KIND, {"n": 1})]
    # Batched: one call reaches several devices of several users (here also A's own other one).
    a2 = await devices.login(a.user_id, a.password, "alice2")
    b.messages.clear()
    sent = await a.transport.send_to_devices(
        [(b.user_id, b.device_id), (a2.user_id, a2.device_id)], KIND, {"n": 2}
    )
    assert sent == 2
    await wait_for(lambda: bool(b.messages and a2.messages), 15, "both to-device messages")
    for receiver in (b, a2):
        assert receiver.messages == [DeviceMessage(a.user_id, a.device_id, KIND, {"n": 2})]


async def test_a_message_claiming_another_device_is_attributed_to_the_real_one(
    devices: Devices,
) -> None:
    a = await devices.new("mallory")
    a2 = await devices.login(a.user_id, a.password, "mallory2")
    b = await devices.new("bob")
    await a.transport.send_to_device(b.user_id, b.device_id, KIND, {"n": 0})
    await wait_for(lambda: bool(b.messages), 15, "the first message")
    # A writes the Olm payload itself, naming its other device as the sender, in the payload and
    # in the content: the Olm session still is A's first device's.
    olm = a.transport.client.olm
    target = next(
        d for d in a.transport.client.device_store.active_user_devices(b.user_id)
        if d.id == b.device_id
    )  # fmt: skip
    session = olm.session_store.get(target.curve25519)
    payload = {
        "sender": a.user_id,
        "sender_device": a2.device_id,
        "keys": {"ed25519": olm.account.identity_keys["ed25519"]},
        "recipient": b.user_id,
        "recipient_keys": {"ed25519": target.ed25519},
        "type": KIND,
        "content": {"n": 1, "sender_device": a2.device_id, "device_id": a2.device_id},
    }
    kind, body = session.encrypt(json.dumps(payload)).to_parts()
    encrypted = {
        "algorithm": "m.olm.v1.curve25519-aes-sha2",
        "sender_key": olm.account.identity_keys["curve25519"],
        "ciphertext": {target.curve25519: {"type": kind, "body": encode_base64(body)}},
    }
    url = path(V3, "sendToDevice", "m.room.encrypted", uuid.uuid4().hex)
    messages = {"messages": {b.user_id: {b.device_id: encrypted}}}
    await request(a.transport.client, "PUT", url, messages, "spoof")
    await wait_for(lambda: len(b.messages) == 2, 15, "the spoofing message")
    assert b.messages[1].sender_device == a.device_id != a2.device_id
    assert b.messages[1].content["n"] == 1


async def test_a_plaintext_group_message_is_dropped_and_counted(devices: Devices) -> None:
    a = await devices.new("alice")
    b = await devices.new("bob")
    url = path(V3, "sendToDevice", "org.matrix.msc4143.rtc.encryption_key", uuid.uuid4().hex)
    plain = {"messages": {b.user_id: {b.device_id: {"media_key": {"index": 0, "key": "AAAA"}}}}}
    await request(a.transport.client, "PUT", url, plain, "plaintext")
    # An encrypted one after it: once that has come, the plaintext one has been seen too.
    await a.transport.send_to_device(b.user_id, b.device_id, KIND, {"after": True})
    await wait_for(lambda: bool(b.messages), 15, "the encrypted message")
    assert [m.content for m in b.messages] == [{"after": True}]
    assert b.transport.dropped_plaintext_to_device == 1


async def test_a_garbled_olm_message_is_dropped_alone(devices: Devices) -> None:
    """vodozemac raises on a ciphertext that is not base64, and nio does not catch it: the rest
    of that sync (here: a good message right behind it) was lost. Any user can send one."""
    a = await devices.new("alice")
    b = await devices.new("bob")
    await a.transport.send_to_device(b.user_id, b.device_id, KIND, {"n": 0})
    await wait_for(lambda: bool(b.messages), 15, "the first message")
    await b.transport.stop()  # both messages below then come in one sync
    curve = b.transport.client.olm.account.identity_keys["curve25519"]
    for kind in (0, 1):  # a pre-key message and a normal one
        garbled = {
            "algorithm": "m.olm.v1.curve25519-aes-sha2",
            "sender_key": a.transport.client.olm.account.identity_keys["curve25519"],
            "ciphertext": {curve: {"type": kind, "body": "!!! not base64 !!!"}},
        }
        url = path(V3, "sendToDevice", "m.room.encrypted", uuid.uuid4().hex)
        messages = {"messages": {b.user_id: {b.device_id: garbled}}}
        await request(a.transport.client, "PUT", url, messages, "garbled")
    await a.transport.send_to_device(b.user_id, b.device_id, KIND, {"n": 1})
    saved = MatrixTransport.saved_credentials(b.transport.store_dir)
    assert saved is not None
    again = Device(MatrixTransport.from_credentials(saved, b.transport.store_dir), b.password)
    devices.started.append(again)
    await again.transport.start()
    await wait_for(lambda: bool(again.messages), 15, "the message behind the garbled one")
    assert [m.content for m in again.messages] == [{"n": 1}]
    assert again.transport.malformed == 2


async def test_a_device_that_cannot_be_encrypted_to_gets_nothing_and_is_named(
    devices: Devices,
) -> None:
    a = await devices.new("alice")
    b = await devices.new("bob")
    with pytest.raises(UnencryptableDeviceError) as raised:
        await a.transport.send_to_devices(
            [(b.user_id, "NOSUCHDEVICE"), (b.user_id, b.device_id)], KIND, {"n": 1}
        )
    assert raised.value.missing == [(b.user_id, "NOSUCHDEVICE")]
    assert raised.value.sent == 1
    await wait_for(lambda: bool(b.messages), 15, "the message to the real device")
    with pytest.raises(UnencryptableDeviceError):
        await a.transport.send_to_device(a.user_id, a.device_id, KIND, {"self": True})


# -- state and rooms ---------------------------------------------------------------------------


async def test_a_group_room_lets_members_announce_themselves(devices: Devices) -> None:
    a = await devices.new("alice")
    b = await devices.new("bob")
    room_id = await group_room(a, b)
    b.transport.check_group_room(room_id)
    key = f"_{b.user_id}_{b.device_id}_m.call"
    content = {"application": "m.call", "call_id": "", "device_id": b.device_id}
    event_id = await b.transport.send_state_event(room_id, CALL_MEMBER, key, content)
    await wait_for(lambda: bool(a.states_at(key)), 15, "the member event at A")
    seen = a.states_at(key)[-1]
    assert (seen.sender, seen.room_id, seen.content, seen.event_id) == (
        b.user_id,
        room_id,
        content,
        event_id,
    )
    assert seen.origin_server_ts > 0
    current = await a.transport.room_state(room_id, CALL_MEMBER)
    assert [(s.state_key, s.sender, s.content) for s in current] == [(key, b.user_id, content)]
    # Leaving: empty content at the same key, seen as a change.
    await b.transport.send_state_event(room_id, CALL_MEMBER, key, {})
    await wait_for(lambda: a.states_at(key)[-1].content == {}, 15, "the leave at A")


async def test_group_calls_are_refused_where_they_cannot_be_private_or_announced(
    devices: Devices,
) -> None:
    a = await devices.new("alice")
    b = await devices.new("bob")
    client = a.transport.client
    plain = await client.room_create(name="plain", invite=[b.user_id])
    closed = await client.room_create(
        name="closed", invite=[b.user_id], initial_state=[ENCRYPTION_STATE]
    )
    for room in (plain, closed):
        await wait_for(lambda r=room: r.room_id in b.transport.invites(), 15, "the invite")
        await b.transport.join(room.room_id)
    await wait_for(
        lambda: all(r.room_id in b.transport.client.rooms for r in (plain, closed)), 15, "joined"
    )
    await wait_for(lambda: b.transport.client.rooms[closed.room_id].encrypted, 15, "encryption")
    with pytest.raises(UnencryptedRoomError):
        b.transport.check_group_room(plain.room_id)
    # An encrypted room with Synapse's default power levels: members may not send member state.
    with pytest.raises(CallMembershipForbiddenError):
        b.transport.check_group_room(closed.room_id)


# -- delayed events ----------------------------------------------------------------------------


async def test_delayed_state_is_sent_after_its_delay_unless_restarted_or_cancelled(
    devices: Devices,
) -> None:
    a = await devices.new("alice")
    room_id = await group_room(a)
    support = await a.transport.delayed_event_support()
    assert support.supported
    assert support.max_delay_ms == 24 * 3600 * 1000
    send = a.transport.send_state_event
    cancelled = await send(room_id, CALL_MEMBER, "cancelled", {"x": 3}, delay_ms=1500)
    restarted = await send(room_id, CALL_MEMBER, "restarted", {"x": 2}, delay_ms=2500)
    left_alone = await send(room_id, CALL_MEMBER, "left-alone", {"x": 1}, delay_ms=1500)
    assert len({cancelled, restarted, left_alone}) == 3
    await a.transport.cancel_delayed_event(cancelled)
    loop = asyncio.get_running_loop()
    past_first_deadline = loop.time() + 4.0
    give_up = loop.time() + 20
    # Keep the restarted one alive, as a member device does, until the server has sent the
    # left-alone one and the restarted one's first deadline is well past.
    while not a.states_at("left-alone") or loop.time() < past_first_deadline:
        assert loop.time() < give_up, "the delayed event never came"
        await a.transport.restart_delayed_event(restarted)
        await asyncio.sleep(0.5)  # the restart cadence
    assert [s.content for s in a.states_at("left-alone")] == [{"x": 1}]
    current = {s.state_key: s.content for s in await a.transport.room_state(room_id, CALL_MEMBER)}
    assert current == {"left-alone": {"x": 1}}
    assert a.states_at("restarted") == []
    assert a.states_at("cancelled") == []
    # "send" delivers the restarted one now; the cancelled one is gone for good.
    await a.transport.send_delayed_event(restarted)
    await wait_for(lambda: bool(a.states_at("restarted")), 15, "the event sent on request")
    with pytest.raises(DelayedEventGoneError):
        await a.transport.restart_delayed_event(cancelled)
    with pytest.raises(DelayedEventGoneError):
        await a.transport.restart_delayed_event(left_alone)
    current = {s.state_key: s.content for s in await a.transport.room_state(room_id, CALL_MEMBER)}
    assert "cancelled" not in current

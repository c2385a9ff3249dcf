"""GroupKeys without a homeserver: devices joined by an in-memory to-device network (each message
delivered as the transport delivers an Olm-authenticated one), driven by member lists. Covers
what the Synapse tests cannot time: a key that arrives before its sender's membership, malformed
content and another room's keys."""

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from sealcall.demo import wait_for
from sealcall.e2ee import Codec, MemberDevice, protect_frame
from sealcall.session import GroupKeys
from sealcall.sframe import SFrameSender
from sealcall.signaling.key_events import ENCRYPTION_KEY_EVENT
from sealcall.transport.matrix import DeviceMessage, MatrixTransport

ROOM = "!call:hs"
FRAME = bytes([0x78]) + bytes(range(40))


class _Client:
    def __init__(self) -> None:
        self.to_device_callbacks: list[Any] = []

    def add_to_device_callback(self, func: Any, _filter: Any) -> None:
        self.to_device_callbacks.append(SimpleNamespace(func=func))


class _ToDevice:
    def __init__(self) -> None:
        self.listeners: list[Any] = []


class Network:
    """Delivers each message to its recipient's listeners, as from the sender's device."""

    def __init__(self) -> None:
        self.devices: dict[tuple[str, str], StubTransport] = {}

    def deliver(self, target: tuple[str, str], message: DeviceMessage) -> None:
        for listener in list(self.devices[target].to_device.listeners):
            listener(message)


class StubTransport:
    def __init__(self, network: Network, user_id: str, device_id: str) -> None:
        self.network, self.user_id, self.device_id = network, user_id, device_id
        self.client = _Client()
        self.to_device = _ToDevice()
        network.devices[(user_id, device_id)] = self

    def add_to_device_listener(self, listener: Any) -> None:
        self.to_device.listeners.append(listener)

    def remove_to_device_listener(self, listener: Any) -> None:
        self.to_device.listeners[:] = [f for f in self.to_device.listeners if f != listener]

    async def send_to_devices(self, targets: Any, event_type: str, content: dict[str, Any]) -> int:
        targets = list(targets)
        for target in targets:
            message = DeviceMessage(self.user_id, self.device_id, event_type, content)
            self.network.deliver(target, message)
        return len(targets)


@pytest.fixture
async def network() -> AsyncIterator[tuple[Network, list[GroupKeys]]]:
    made: list[GroupKeys] = []
    yield Network(), made
    for keys in made:
        await keys.close()


def new_keys(net: Network, made: list[GroupKeys], name: str) -> GroupKeys:
    transport = cast(MatrixTransport, StubTransport(net, f"@{name}:hs", name.upper()))
    keys = GroupKeys(transport, ROOM, member_id=f"m-{name}", early_ttl=0.5)
    made.append(keys)
    return keys


def member(name: str) -> MemberDevice:
    return MemberDevice(f"@{name}:hs", name.upper(), f"m-{name}")


async def test_a_key_ahead_of_its_senders_membership_waits_for_it(
    network: tuple[Network, list[GroupKeys]],
) -> None:
    net, made = network
    alice, bob = new_keys(net, made, "alice"), new_keys(net, made, "bob")
    await alice.start([])
    await bob.start([member("alice")])  # bob's key reaches alice before she sees him join
    await wait_for(lambda: alice.waiting == 1, 5, "bob's key waiting at alice")
    alice.set_members([member("bob")])
    await wait_for(lambda: alice.kids("@bob:hs", "BOB") == [0], 5, "bob's key at alice")
    assert alice.counters["not_member"] == 0
    assert alice.counters["accepted"] == 1
    key = bob.send_key
    assert key is not None
    frame = protect_frame(Codec.OPUS, SFrameSender(key.index, key.key), FRAME)
    assert alice.unprotect("@bob:hs", "BOB", Codec.OPUS, frame) == FRAME


async def test_a_key_from_a_device_that_never_joins_is_refused_after_the_wait(
    network: tuple[Network, list[GroupKeys]],
) -> None:
    net, made = network
    alice, eve = new_keys(net, made, "alice"), new_keys(net, made, "eve")
    await alice.start([])
    await eve.start([member("alice")])
    await wait_for(lambda: alice.counters["not_member"] == 1, 5, "eve's key refused")
    assert alice.kids("@eve:hs", "EVE") == []
    assert alice.counters["accepted"] == 0


async def test_malformed_and_other_rooms_keys_change_nothing(
    network: tuple[Network, list[GroupKeys]],
) -> None:
    net, made = network
    alice, bob = new_keys(net, made, "alice"), new_keys(net, made, "bob")
    await alice.start([member("bob")])
    await bob.start([member("alice")])
    await wait_for(lambda: alice.kids("@bob:hs", "BOB") == [0], 5, "bob's key at alice")
    good = {"index": 1, "key": "A" * 43}
    hostile: list[Any] = [
        None,
        [],
        {"room_id": ROOM},
        {"room_id": ROOM, "member_id": "m-bob", "media_key": {"index": 300, "key": "A" * 43}},
        {"room_id": ROOM, "member_id": "m-bob", "media_key": {"index": 1, "key": "!!"}},
        {"room_id": ROOM, "member_id": "m-bob", "media_key": good, "org.sealcall.format": "x"},
    ]
    other = {"room_id": "!other:hs", "member_id": "m-bob", "media_key": good}
    for content in [other, *hostile]:  # another room's key: another GroupKeys' business
        message = DeviceMessage("@bob:hs", "BOB", ENCRYPTION_KEY_EVENT, content)
        net.deliver(("@alice:hs", "ALICE"), message)
    await wait_for(lambda: alice.counters["malformed"] == len(hostile), 5, "all counted")
    assert alice.waiting == 0
    assert alice.kids("@bob:hs", "BOB") == [0]
    assert alice.counters["accepted"] == 1

"""GroupRinger over a real Synapse: the first joiner of a group room's call rings the room's
other members (an encrypted MSC4075 notification); they decline (MSC4310, seen by the caller and
by their other device), join (here or on another device), or the ring expires or the call ends;
a second joiner does not ring."""

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import test_group_membership_session as gm
from sealcall.demo import wait_for
from sealcall.group import (
    DECLINE_EVENT_TYPE,
    NOTIFICATION_EVENT_TYPE,
    GroupRing,
    RingEndReason,
    parse_decline,
    parse_notification,
    ring_notification,
)
from sealcall.homeserver import Homeserver
from sealcall.session import GroupMembership, GroupRinger
from sealcall.transport import RoomEvent
from sealcall.transport.matrix import CALL_MEMBER, MatrixTransport
from sealcall.transport.matrix.http import V3, path, request

pytestmark = pytest.mark.usefixtures("synapse")

TIMEOUT = 20


class Device:
    """A logged-in device with a started GroupRinger, and what it heard."""

    def __init__(self, transport: MatrixTransport, **options: Any) -> None:
        self.transport = transport
        self.ringer = GroupRinger(transport, **options)
        self.started: list[GroupRing] = []
        self.ended: list[tuple[GroupRing, RingEndReason]] = []
        self.declined: list[tuple[str, str, str]] = []
        self.room_events: list[RoomEvent] = []  # what the transport delivered, for checks
        self.ringer.on("ring_started", self.started.append)
        self.ringer.on("ring_ended", lambda ring, reason: self.ended.append((ring, reason)))
        self.ringer.on("ring_declined", lambda *args: self.declined.append(args))
        transport.add_listener(self.room_events.append)
        self.group: GroupMembership | None = None

    @property
    def user_id(self) -> str:
        return self.transport.user_id

    async def join_call(self, room_id: str) -> GroupMembership:
        self.group = GroupMembership(self.transport, room_id)
        await self.group.join()
        return self.group

    def reasons(self) -> list[RingEndReason]:
        return [reason for _, reason in self.ended]


class Devices:
    def __init__(self, server: Homeserver, tmp: Path) -> None:
        self.server, self.tmp = server, tmp
        self.made: list[Device] = []

    async def new(self, name: str, **options: Any) -> Device:
        username = f"{name}{uuid.uuid4().hex[:8]}"
        account = await self.server.register(username, "secret-" + username)
        return await self._login(account.user_id, account.password, username, **options)

    async def second_device(self, of: Device) -> Device:
        """Another device of ``of``'s user."""
        username = of.user_id[1:].split(":")[0]
        return await self._login(of.user_id, "secret-" + username, username + "-2")

    async def _login(self, user_id: str, password: str, store: str, **options: Any) -> Device:
        transport = await MatrixTransport.login(
            self.server.url, user_id, password, self.tmp / store
        )
        await transport.start()
        made = Device(transport, **options)
        await made.ringer.start()
        self.made.append(made)
        return made


@pytest.fixture
async def devices(synapse: Homeserver, tmp_path: Path) -> AsyncIterator[Devices]:
    made = Devices(synapse, tmp_path)
    yield made
    for d in made.made:
        await d.ringer.close()
        if d.group is not None:
            await d.group.close(leave=False)
        await d.transport.stop()


async def test_the_first_joiner_rings_and_a_decline_reaches_the_caller_and_other_devices(
    devices: Devices,
) -> None:
    a, b = await devices.new("alice"), await devices.new("bob")
    b2 = await devices.second_device(b)
    room_id = await gm.group_room(a, b, b2, name="ringing")
    membership = await a.join_call(room_id)
    ring_id = await a.ringer.ring_if_first(membership)
    assert ring_id is not None
    [member_event] = [
        s
        for s in await a.transport.room_state(room_id, CALL_MEMBER)
        if s.state_key == membership.own.state_key
    ]
    for d in (b, b2):
        await wait_for(lambda d=d: bool(d.started), TIMEOUT, "the ring")
        [ring] = d.started
        assert (ring.room_id, ring.sender, ring.event_id) == (room_id, a.user_id, ring_id)
        assert ring.member_event_id == member_event.event_id
        assert d.ringer.ringing() == [ring]
    # It went out encrypted (the transport delivers only what it decrypted) and as js-sdk
    # writes it; the caller's own devices do not ring for it.
    [sent] = [e for e in b.room_events if e.event["type"] == NOTIFICATION_EVENT_TYPE]
    notification = parse_notification(sent.event["content"])
    assert notification.rings
    assert notification.lifetime == 30_000
    assert not a.started

    await b.ringer.decline(room_id)
    assert b.reasons() == [RingEndReason.DECLINED]
    assert b.ringer.ringing() == []
    await wait_for(lambda: bool(a.declined), TIMEOUT, "the decline at the caller")
    assert a.declined == [(room_id, b.user_id, ring_id)]
    [raw] = [e for e in a.room_events if e.event["type"] == DECLINE_EVENT_TYPE]
    assert raw.sender == b.user_id
    assert parse_decline(raw.event["content"]).relates_to.event_id == ring_id
    # Bob's other device stops ringing too, and Bob's own device does not count its echo twice.
    await wait_for(lambda: bool(b2.ended), TIMEOUT, "the decline at bob's other device")
    assert b2.reasons() == [RingEndReason.DECLINED_ELSEWHERE]
    assert b.reasons() == [RingEndReason.DECLINED]


async def test_joining_stops_the_ring_everywhere_and_a_second_joiner_does_not_ring(
    devices: Devices,
) -> None:
    a, b = await devices.new("alice"), await devices.new("bob")
    b2 = await devices.second_device(b)
    room_id = await gm.group_room(a, b, b2, name="ringing")
    assert await a.ringer.ring_if_first(await a.join_call(room_id)) is not None
    for d in (b, b2):
        await wait_for(lambda d=d: bool(d.started), TIMEOUT, "the ring")
    # Bob joins on one device: the other one learns it from the room's call state.
    assert await b.ringer.ring_if_first(await b.join_call(room_id)) is None
    assert b.reasons() == [RingEndReason.JOINED]
    await wait_for(lambda: bool(b2.ended), TIMEOUT, "bob's other device to stop ringing")
    assert b2.reasons() == [RingEndReason.JOINED]


async def test_a_ring_stops_when_its_lifetime_runs_out_or_the_call_ends(devices: Devices) -> None:
    a = await devices.new("alice", ring_lifetime_ms=1500)
    b = await devices.new("bob")
    room_id = await gm.group_room(a, b, name="ringing")
    first = await a.join_call(room_id)
    # A notification sent in plaintext to the encrypted room does not ring: it is dropped.
    plain = ring_notification("$member", int(time.time() * 1000)).to_json()
    del plain["m.relates_to"]  # Synapse refuses a relation to an event it does not know
    url = path(V3, "rooms", room_id, "send", NOTIFICATION_EVENT_TYPE, uuid.uuid4().hex)
    await request(a.transport.client, "PUT", url, plain, "a plaintext ring")
    await wait_for(lambda: b.transport.dropped_plaintext == 1, TIMEOUT, "the plaintext ring")
    assert not b.started
    await a.ringer.ring_if_first(first)
    await wait_for(lambda: bool(b.ended), TIMEOUT, "the ring to expire")
    assert [r.room_id for r in b.started] == [room_id]
    assert b.reasons() == [RingEndReason.EXPIRED]

    await first.leave()
    a.ringer.left(room_id)
    a.ringer.ring_lifetime_ms = 30_000
    second = await a.join_call(room_id)
    assert await a.ringer.ring_if_first(second) is not None
    await wait_for(lambda: len(b.started) == 2, TIMEOUT, "the second ring")
    await second.leave()
    await wait_for(lambda: len(b.ended) == 2, TIMEOUT, "the ring to stop with the call")
    assert b.reasons() == [RingEndReason.EXPIRED, RingEndReason.CALL_ENDED]

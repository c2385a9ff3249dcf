"""GroupMembership, the asyncio layer of MatrixRTC membership, over a real Synapse: devices join
a group room's call and see each other; a clean leave, a crash (the homeserver's delayed leave
removes the device), a rejoin as a new session, a spoofed member event, an unencrypted room, and
a homeserver without delayed events (expiry removes a crashed device)."""

import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sealcall.demo import wait_for
from sealcall.group import Ignored, LeftReason, Member, MemberDevice, OwnState
from sealcall.homeserver import Homeserver
from sealcall.session import GroupMembership
from sealcall.transport.matrix import (
    CALL_MEMBER,
    DelayedEventSupport,
    MatrixTransport,
    StateEvent,
    UnencryptedRoomError,
)

pytestmark = pytest.mark.usefixtures("synapse")

# Short, so a crashed device is gone within seconds; restarted well inside the delay.
DELAY_MS = 3000
RESTART_MS = 1000
TIMEOUT = 20


class Device:
    """A logged-in transport, its GroupMembership and what that told the application."""

    def __init__(self, transport: MatrixTransport) -> None:
        self.transport = transport
        self.events: list[tuple[Any, ...]] = []
        self.states: list[StateEvent] = []  # the member state events its syncs brought
        transport.add_state_listener(self.states.append, [CALL_MEMBER])
        self.group: GroupMembership | None = None

    @property
    def user_id(self) -> str:
        return self.transport.user_id

    @property
    def device(self) -> MemberDevice:
        return MemberDevice(self.transport.user_id, self.transport.device_id)

    def membership(self, room_id: str, **options: Any) -> GroupMembership:
        """A new GroupMembership of ``room_id`` whose events are recorded."""
        options = {"leave_delay_ms": DELAY_MS, "restart_ms": RESTART_MS, **options}
        group = GroupMembership(self.transport, room_id, **options)
        group.on("member_joined", lambda m: self.events.append(("joined", m)))
        group.on("member_left", lambda m, r: self.events.append(("left", m, r)))
        group.on("member_rejoined", lambda o, n: self.events.append(("rejoined", o, n)))
        self.group = group
        return group

    def member_devices(self) -> set[MemberDevice]:
        assert self.group is not None
        return {m.device for m in self.group.members()}

    def about(self, device: MemberDevice, kind: str) -> list[tuple[Any, ...]]:
        """The ``kind`` events (joined, left, rejoined) about ``device``."""
        return [e for e in self.events if e[0] == kind and e[1].device == device]


class Devices:
    def __init__(self, server: Homeserver, tmp: Path) -> None:
        self.server, self.tmp = server, tmp
        self.started: list[Device] = []

    async def new(self, name: str) -> Device:
        username = f"{name}{uuid.uuid4().hex[:8]}"
        account = await self.server.register(username, "secret-" + username)
        transport = await MatrixTransport.login(
            self.server.url, account.user_id, account.password, self.tmp / username
        )
        found = Device(transport)
        self.started.append(found)
        await transport.start()
        return found


@pytest.fixture
async def devices(synapse: Homeserver, tmp_path: Path) -> AsyncIterator[Devices]:
    made = Devices(synapse, tmp_path)
    yield made
    for d in made.started:
        if d.group is not None:
            await d.group.close(leave=False)
        await d.transport.stop()


async def group_room(a: Any, *others: Any, name: str = "group") -> str:
    """A group room made by ``a`` with ``others`` joined (another device of ``a``'s user is in it
    already), every device seeing every member."""
    users = sorted({o.user_id for o in others} - {a.user_id})
    room_id = await a.transport.create_group_room(name, invite=users)
    for other in others:
        if other.user_id != a.user_id:
            await wait_for(lambda o=other: room_id in o.transport.invites(), TIMEOUT, "the invite")
            await other.transport.join(room_id)
    await wait_for(
        lambda: all(
            room_id in d.transport.client.rooms
            and d.transport.client.rooms[room_id].encrypted
            and len(d.transport.client.rooms[room_id].users) == 1 + len(users)
            for d in (a, *others)
        ),
        TIMEOUT,
        "everybody in the encrypted room",
    )
    return room_id


async def all_in_call(members: list[Device]) -> None:
    await wait_for(
        lambda: all(
            d.member_devices() == {o.device for o in members if o is not d} for d in members
        ),
        TIMEOUT,
        "every device seeing every other",
    )


async def test_three_devices_see_each_other_and_a_clean_leave_promptly(devices: Devices) -> None:
    a, b, c = [await devices.new(n) for n in ("alice", "bob", "carol")]
    room_id = await group_room(a, b, c)
    for d in (a, b, c):
        await d.membership(room_id).join(intent="audio")
    await all_in_call([a, b, c])
    for d in (a, b, c):
        assert d.group is not None
        assert d.group.state is OwnState.JOINED
        assert d.group.delayed_leave is True
        joined = {e[1].device for e in d.events if e[0] == "joined"}
        assert joined == {o.device for o in (a, b, c) if o is not d}
        assert all(m.content.intent == "audio" for m in d.group.members())
    # Past the leave delay, every device is still there: the restarts keep the delayed leaves off.
    await wait_for(
        lambda: all(d.group is not None and d.group.restarts >= 4 for d in (a, b, c)),
        TIMEOUT,
        "restarts past the delay",
    )
    assert not [e for d in (a, b, c) for e in d.events if e[0] != "joined"]
    assert a.group is not None
    assert c.group is not None
    gone = next(m for m in a.group.members() if m.device == c.device)
    await c.group.leave()
    assert c.group.state is OwnState.IDLE
    for d in (a, b):
        await wait_for(lambda d=d: bool(d.about(c.device, "left")), TIMEOUT, "carol's leave")
        assert d.about(c.device, "left") == [("left", gone, LeftReason.LEFT)]
        assert d.member_devices() == {o.device for o in (a, b) if o is not d}
    # The leave was the delayed one, sent now: the server holds no leave of carol's any more.
    assert not [s for s in await c.transport.scheduled_delayed_events() if s.room_id == room_id]


async def test_a_killed_device_is_removed_by_its_delayed_leave(devices: Devices) -> None:
    a, b, c = [await devices.new(n) for n in ("alice", "bob", "carol")]
    room_id = await group_room(a, b, c)
    for d in (a, b, c):
        await d.membership(room_id).join()
    await all_in_call([a, b, c])
    assert c.group is not None
    key = c.group.own.state_key
    # Killed: its tasks and its sync stop, nothing is sent, the delayed leave is not restarted.
    await c.group.close(leave=False)
    await c.transport.stop()
    assert not [s for s in a.states if s.state_key == key and s.content == {}]
    for d in (a, b):
        await wait_for(lambda d=d: bool(d.about(c.device, "left")), TIMEOUT, "carol vanishing")
        # "left", not "expired" (the membership is valid for hours): a leave came.
        assert [e[2] for e in d.about(c.device, "left")] == [LeftReason.LEFT]
        assert d.member_devices() == {o.device for o in (a, b) if o is not d}
    # Carol sent nothing after she was killed: the homeserver sent her scheduled leave.
    leaves = [s for s in a.states if s.state_key == key and s.content == {}]
    assert [s.sender for s in leaves] == [c.user_id]
    current = {s.state_key: s for s in await a.transport.room_state(room_id, CALL_MEMBER)}
    assert current[key].content == {}
    assert not [e for d in (a, b) for e in d.events if e[0] != "joined" and e[1].device != c.device]


async def test_a_restarted_device_rejoins_as_a_new_session(devices: Devices) -> None:
    a, b = [await devices.new(n) for n in ("alice", "bob")]
    room_id = await group_room(a, b)
    await a.membership(room_id).join()
    first = b.membership(room_id)
    await first.join()
    await all_in_call([a, b])
    old = a.group.members()[0] if a.group else None
    # Bob's process dies and comes back before its delayed leave is sent.
    await first.close(leave=False)
    second = b.membership(room_id)
    await second.join()
    await wait_for(lambda: bool(a.about(b.device, "rejoined")), TIMEOUT, "bob's new session")
    [(_, was, new)] = a.about(b.device, "rejoined")
    assert was == old
    assert isinstance(new, Member)
    assert new.member_id != was.member_id
    assert new.member_id == second.own.membership_id
    assert a.group is not None
    assert a.group.members() == [new]
    assert not a.about(b.device, "left")
    # The dead run's delayed leave is cancelled: it would remove the new session when sent.
    scheduled = [
        s for s in await b.transport.scheduled_delayed_events()
        if (s.room_id, s.state_key) == (room_id, second.own.state_key)
    ]  # fmt: skip
    assert len(scheduled) == 1


async def test_a_member_event_for_another_users_device_is_ignored_and_counted(
    devices: Devices,
) -> None:
    a, b, m = [await devices.new(n) for n in ("alice", "bob", "mallory")]
    room_id = await group_room(a, b, m)
    await a.membership(room_id).join()
    await b.membership(room_id).join()
    await all_in_call([a, b])
    assert a.group is not None
    assert b.group is not None
    # Mallory announces a device of bob's, and overwrites bob's real membership with a leave.
    fake = {**b.group.members()[0].content.to_json(), "device_id": "FAKE"}
    send = m.transport.send_state_event
    await send(room_id, CALL_MEMBER, f"_{b.user_id}_FAKE_m.call", fake)
    await send(room_id, CALL_MEMBER, b.group.own.state_key, {})
    await wait_for(lambda: a.group.ignored[Ignored.SPOOFED] == 2, TIMEOUT, "both writes at alice")
    assert a.member_devices() == {b.device}
    assert [e[0] for e in a.events] == ["joined"]
    assert b.group.state is OwnState.JOINED


async def test_joining_an_unencrypted_room_raises_before_anything_is_sent(
    devices: Devices,
) -> None:
    a = await devices.new("alice")
    response = await a.transport.client.room_create(name="plain")
    room_id = response.room_id
    await wait_for(lambda: room_id in a.transport.client.rooms, TIMEOUT, "the room")
    with pytest.raises(UnencryptedRoomError):
        await a.membership(room_id).join()
    assert await a.transport.room_state(room_id, CALL_MEMBER) == []
    assert await a.transport.scheduled_delayed_events() == []


async def test_without_delayed_events_a_killed_device_goes_at_expiry(
    devices: Devices, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = [await devices.new(n) for n in ("alice", "bob")]
    room_id = await group_room(a, b)

    async def unsupported() -> DelayedEventSupport:
        return DelayedEventSupport(False)

    monkeypatch.setattr(b.transport, "delayed_event_support", unsupported)
    await a.membership(room_id).join()
    expiring = b.membership(room_id, expires_ms=4000)
    with caplog.at_level(logging.WARNING, logger="sealcall.session.group_membership"):
        await expiring.join()
    assert expiring.delayed_leave is False
    said = [r for r in caplog.records if "no delayed events" in r.getMessage()]
    assert len(said) == 1
    await all_in_call([a, b])
    assert a.group is not None
    first = a.group.members()[0]
    # Bob refreshes before expiry: alice sees the same session last longer, and no leave.
    await wait_for(
        lambda: a.group is not None and a.group.members()[0].expires_at > first.expires_at,
        TIMEOUT,
        "bob's refresh",
    )
    assert a.group.members()[0].session == first.session
    assert [e[0] for e in a.events] == ["joined"]
    assert await b.transport.scheduled_delayed_events() == []
    await expiring.close(leave=False)
    await b.transport.stop()
    await wait_for(lambda: bool(a.about(b.device, "left")), TIMEOUT, "bob's expiry")
    assert [e[2] for e in a.about(b.device, "left")] == [LeftReason.EXPIRED]

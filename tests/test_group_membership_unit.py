"""GroupMembership's own decisions, over a scripted homeserver (no Synapse): what it does when
its delayed leave was sent while it lived (it stalled past the delay), when a restart finds the
delayed leave gone, and when an application handler raises."""

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest

from sealcall.demo import wait_for
from sealcall.group import MEMBER_EVENT_TYPE, OwnState
from sealcall.session import GroupMembership
from sealcall.session.group_membership import ROOM_MEMBER
from sealcall.transport.matrix import (
    DelayedEventGoneError,
    DelayedEventSupport,
    MatrixTransportError,
    StateEvent,
)

ROOM = "!room:hs"
ME, PEER = "@me:hs", "@peer:hs"


class ScriptedServer:
    """One room's state and our delayed events; state changes reach the listeners at once."""

    def __init__(self) -> None:
        self.state: dict[tuple[str, str], StateEvent] = {}
        self.delayed: dict[str, tuple[str, dict[str, Any]]] = {}
        self.cancelled: list[str] = []
        self.listeners: list[Callable[[StateEvent], None]] = []
        self.user_id, self.device_id = ME, "MYDEV"
        self._ids = itertools.count()
        for user in (ME, PEER):
            self.put(user, ROOM_MEMBER, user, {"membership": "join"})

    def put(self, sender: str, kind: str, key: str, content: dict[str, Any]) -> str:
        now = int(time.time() * 1000)
        event = StateEvent(ROOM, sender, kind, key, content, now, f"$e{next(self._ids)}")
        self.state[(kind, key)] = event
        for listener in list(self.listeners):
            asyncio.get_running_loop().call_soon(listener, event)
        return event.event_id

    def fire(self, delay_id: str) -> None:
        """The delay ran out: the server sends the delayed event as us."""
        key, content = self.delayed.pop(delay_id)
        self.put(ME, MEMBER_EVENT_TYPE, key, content)

    # -- the transport methods GroupMembership uses -------------------------------------------

    def check_group_room(self, room_id: str) -> None:
        assert room_id == ROOM

    def add_state_listener(self, listener: Callable[[StateEvent], None], types: Any) -> None:
        self.listeners.append(listener)

    def remove_state_listener(self, listener: Callable[[StateEvent], None]) -> None:
        self.listeners = [f for f in self.listeners if f != listener]

    async def room_state(self, room_id: str, kind: str) -> list[StateEvent]:
        return [e for (k, _), e in self.state.items() if k == kind]

    async def delayed_event_support(self) -> DelayedEventSupport:
        return DelayedEventSupport(True)

    async def scheduled_delayed_events(self) -> list[Any]:
        return []

    async def send_state_event(
        self,
        room_id: str,
        kind: str,
        key: str,
        content: dict[str, Any],
        delay_ms: int | None = None,
    ) -> str:
        if delay_ms is None:
            return self.put(ME, kind, key, content)
        delay_id = f"d{next(self._ids)}"
        self.delayed[delay_id] = (key, content)
        return delay_id

    async def restart_delayed_event(self, delay_id: str) -> None:
        if delay_id not in self.delayed:
            raise DelayedEventGoneError(delay_id)

    async def send_delayed_event(self, delay_id: str) -> None:
        self.fire(delay_id)

    async def cancel_delayed_event(self, delay_id: str) -> None:
        if self.delayed.pop(delay_id, None) is None:
            raise DelayedEventGoneError(delay_id)
        self.cancelled.append(delay_id)


def membership(server: ScriptedServer, **options: Any) -> GroupMembership:
    return GroupMembership(server, ROOM, leave_delay_ms=3000, restart_ms=20, **options)  # type: ignore[arg-type]


def own_content(server: ScriptedServer, group: GroupMembership) -> dict[str, Any]:
    return server.state[(MEMBER_EVENT_TYPE, group.own.state_key)].content


async def test_after_its_delayed_leave_was_sent_a_live_device_rejoins_with_a_new_one() -> None:
    server = ScriptedServer()
    group = membership(server)
    await group.join()
    await wait_for(lambda: group.state is OwnState.JOINED, 5, "joined")
    [first_delay] = server.delayed
    first_id = group.own.membership_id
    # We stalled past the delay: the server sent our leave.
    server.fire(first_delay)
    await wait_for(
        lambda: own_content(server, group).get("membershipID") not in (None, first_id),
        5,
        "the rejoin",
    )
    await wait_for(lambda: group.state is OwnState.JOINED, 5, "joined again")
    # A new delayed leave guards the new session, and it is the one restarted.
    [second_delay] = server.delayed
    assert second_delay != first_delay
    restarts = group.restarts
    await wait_for(lambda: group.restarts > restarts + 2, 5, "restarts of the new one")
    # Another device of ours clears our membership: the delayed leave we then stop restarting
    # is cancelled, or it would remove the next session when it ran out.
    second_id = group.own.membership_id
    server.put(ME, MEMBER_EVENT_TYPE, group.own.state_key, {})
    await wait_for(
        lambda: own_content(server, group).get("membershipID") not in (None, second_id),
        5,
        "the second rejoin",
    )
    assert server.cancelled[-1:] == [second_delay]
    assert len(server.delayed) == 1
    await group.leave()
    assert own_content(server, group) == {}
    assert server.delayed == {}


async def test_a_leave_found_gone_by_a_restart_is_scheduled_again() -> None:
    server = ScriptedServer()
    group = membership(server)
    await group.join()
    [first] = server.delayed
    del server.delayed[first]  # lost by the server, without a leave being sent
    await wait_for(lambda: bool(server.delayed), 5, "a new delayed leave")
    assert first not in server.delayed
    assert group.state is not OwnState.IDLE
    await group.close(leave=False)
    assert len(server.delayed) == 1  # a crash leaves it to the server


async def test_a_failing_handler_does_not_stop_the_membership() -> None:
    server = ScriptedServer()
    key = f"_{PEER}_PEERDEV_m.call"
    peer = {
        "application": "m.call",
        "call_id": "",
        "device_id": "PEERDEV",
        "membershipID": "p",
        "focus_active": {"type": "mesh"},
        "expires": 3_600_000,
        "created_ts": int(time.time() * 1000),
    }
    server.put(PEER, MEMBER_EVENT_TYPE, key, peer)  # in the call before we join
    group = membership(server)
    seen: list[Any] = []

    def broken(member: Any) -> None:
        raise RuntimeError("the application's bug")

    group.on("member_joined", broken)
    group.on("member_left", lambda member, reason: seen.append(member.device.device_id))
    await group.join()  # the handler fails on the peer: the join goes on
    await wait_for(lambda: group.state is OwnState.JOINED, 5, "joined")
    assert [m.device.device_id for m in group.members()] == ["PEERDEV"]
    server.put(PEER, MEMBER_EVENT_TYPE, key, {})
    await wait_for(lambda: seen == ["PEERDEV"], 5, "the peer's leave")
    await group.leave()
    assert server.listeners == []  # a closed membership is not kept alive by the transport


async def test_a_join_that_fails_takes_back_its_delayed_leave_and_raises() -> None:
    class Refusing(ScriptedServer):
        async def send_state_event(
            self, room_id: str, kind: str, key: str, content: dict[str, Any], delay_ms: Any = None
        ) -> str:
            if delay_ms is None and content:
                raise MatrixTransportError("the server refused the membership")
            return await super().send_state_event(room_id, kind, key, content, delay_ms)

    server = Refusing()
    group = membership(server)
    with pytest.raises(MatrixTransportError):
        await group.join()
    # The leave scheduled before the membership was sent at once; nothing is left running.
    assert server.delayed == {}
    assert own_content(server, group) == {}
    assert group.state is OwnState.IDLE
    assert server.listeners == []

"""The asyncio layer of group-call ringing: :class:`GroupRinger` binds the sans-I/O
:class:`~sealcall.group.RingTable` to the Matrix transport and a real timer.

One worker task takes one input at a time (a notification or decline from a room, a call member
state change, the timer), so a room's call state read for a new ring is applied before the
changes that follow it. The notification and the decline are room events, sent Megolm-encrypted
like every call event (the transport refuses an unencrypted room).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sealcall.group import (
    DECLINE_EVENT_TYPE,
    DEFAULT_RING_LIFETIME_MS,
    MEMBER_EVENT_TYPE,
    NOTIFICATION_EVENT_TYPE,
    CallSnapshot,
    CallStateReceived,
    DeclineReceived,
    FetchCallState,
    GroupRing,
    MembershipStateError,
    MemberStateEvent,
    NotificationReceived,
    OwnState,
    RingDeclined,
    RingEnded,
    RingEvent,
    RingInput,
    RingStarted,
    RingTable,
    decline,
    ring_notification,
)
from sealcall.transport import RoomEvent
from sealcall.transport.matrix import MatrixTransport, StateEvent

from .deadline_timer import DeadlineTimer
from .group_membership import ROOM_MEMBER, GroupMembership, table_input
from .safe_emitter import SafeEventEmitter

logger = logging.getLogger(__name__)


class GroupRinger(SafeEventEmitter):
    """Ringing for group calls on one device: sends the ring when we start a room's call, and
    rings us when someone starts one in a room we are in.

    Events (``ringer.on(name, handler)``): ``ring_started(ring)`` (a
    :class:`~sealcall.group.GroupRing`), ``ring_ended(ring, reason)`` (a
    :class:`~sealcall.group.RingEndReason`: joined, declined, expired, call_ended,
    declined_elsewhere), and ``ring_declined(room_id, user_id, notification_event_id)``:
    someone declined a ring this device sent.
    """

    def __init__(
        self,
        transport: MatrixTransport,
        *,
        clock: Callable[[], float] = time.time,
        ring_lifetime_ms: int = DEFAULT_RING_LIFETIME_MS,
    ) -> None:
        super().__init__()
        self.transport = transport
        self.ring_lifetime_ms = ring_lifetime_ms  # of the rings we send (js-sdk: 30 s)
        self.table = RingTable(transport.user_id)
        self._clock = clock
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._timer = DeadlineTimer(lambda: self._queue.put_nowait(("timer", None)))
        self._closed = False

    # -- queries ---------------------------------------------------------------------------

    def ringing(self) -> list[GroupRing]:
        """The rings going on, oldest first."""
        return self.table.ringing()

    @property
    def ignored(self) -> Counter[str]:
        """Notifications and declines dropped, by :class:`~sealcall.group.RingIgnored` reason."""
        return self.table.ignored

    # -- commands --------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen for notifications, declines and call member state."""
        if self._closed or self._worker is not None:
            return
        self.transport.add_listener(self._on_room_event)
        self.transport.add_state_listener(self._on_state, [MEMBER_EVENT_TYPE, ROOM_MEMBER])
        self._worker = asyncio.ensure_future(self._work())

    async def close(self) -> None:
        """Stop listening; rings going on are dropped without an event."""
        if self._closed:
            return
        self._closed = True
        self.transport.remove_listener(self._on_room_event)
        self.transport.remove_state_listener(self._on_state)
        self._timer.cancel()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def ring_if_first(self, membership: GroupMembership) -> str | None:
        """After our join of ``membership``'s call: if no other member device is in it, ring
        the room (a notification referencing our member event); its event id. None when
        others were there already: their call rang when it started."""
        if membership.state is OwnState.IDLE:
            raise MembershipStateError("ring_if_first() after join()")
        room_id = membership.room_id
        self.joined(room_id)
        if membership.members():
            return None
        member_event_id = await self._own_member_event_id(membership)
        ring = ring_notification(member_event_id, self._now())
        content = replace(ring, lifetime=self.ring_lifetime_ms).to_json()
        event_id = await self.transport.send_room_event(room_id, NOTIFICATION_EVENT_TYPE, content)
        self.table.sent(room_id, event_id)
        return event_id

    async def decline(self, room_id: str) -> None:
        """Decline ``room_id``'s ring: it stops here at once (``ring_ended`` "declined"), then
        an MSC4310 decline referencing it is sent, so the caller and our other devices learn
        of it. :class:`~sealcall.group.NoRingError` if the room does not ring."""
        events = self.table.decline(room_id, self._now())
        self._tell(events)
        self._schedule_timer()
        for event in events:
            if isinstance(event, RingEnded) and event.ring.room_id == room_id:
                content = decline(event.ring.event_id).to_json()
                await self.transport.send_room_event(room_id, DECLINE_EVENT_TYPE, content)

    def joined(self, room_id: str) -> None:
        """We joined ``room_id``'s call on this device: its ring stops (``ring_ended``
        "joined") and it does not ring until :meth:`left`. A join from another device of ours
        is seen in the room's state."""
        self._tell(self.table.joined(room_id, self._now()))
        self._schedule_timer()

    def left(self, room_id: str) -> None:
        """We left ``room_id``'s call on this device: a new call there rings again."""
        self.table.left(room_id)

    # -- inputs ----------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self._clock() * 1000)

    def _on_room_event(self, event: RoomEvent) -> None:
        kind = event.event.get("type")
        if self._closed or kind not in (NOTIFICATION_EVENT_TYPE, DECLINE_EVENT_TYPE):
            return
        content = event.event.get("content")
        item: RingInput
        if kind == NOTIFICATION_EVENT_TYPE:
            item = NotificationReceived(
                event.room_id, event.sender, event.event_id, content, event.origin_server_ts
            )
        else:
            item = DeclineReceived(event.room_id, event.sender, content)
        self._queue.put_nowait(("input", item))

    def _on_state(self, event: StateEvent) -> None:
        if not self._closed:
            self._queue.put_nowait(
                ("input", CallStateReceived(event.room_id, table_input(event, self.transport)))
            )

    async def _work(self) -> None:
        while True:
            kind, item = await self._queue.get()
            try:
                now = self._now()
                events = self.table.tick(now) if kind == "timer" else self.table.handle(item, now)
                self._tell(events)
                for event in events:
                    if isinstance(event, FetchCallState):
                        snapshot = await self._snapshot(event.room_id)
                        self._tell(self.table.handle(snapshot, self._now()))
            except Exception:
                logger.exception("a ringing input failed")
            self._schedule_timer()

    async def _snapshot(self, room_id: str) -> CallSnapshot:
        """The room's call members now (changes from here on wait in the queue)."""
        try:
            calls = await self.transport.room_state(room_id, MEMBER_EVENT_TYPE)
        except Exception as error:  # ring without it: the ring still expires
            logger.warning(
                "reading the call state of a ringing room failed: %s", type(error).__name__
            )
            return CallSnapshot(room_id, None)
        members = tuple(
            MemberStateEvent(e.sender, e.state_key, e.content, e.origin_server_ts, e.event_id)
            for e in calls
        )
        return CallSnapshot(room_id, members, tuple(self.transport.room_members(room_id)))

    async def _own_member_event_id(self, membership: GroupMembership) -> str:
        seen = membership.table.member(membership.own.device)
        if seen is not None and seen.event_id:
            return seen.event_id
        # Our join was sent but its echo has not come in a sync yet: read it from the room.
        for event in await self.transport.room_state(membership.room_id, MEMBER_EVENT_TYPE):
            if event.state_key == membership.own.state_key and event.content and event.event_id:
                return event.event_id
        raise MembershipStateError("our member event is not in the room's state")

    # -- outputs ---------------------------------------------------------------------------

    def _tell(self, events: list[RingEvent]) -> None:
        for event in events:
            if isinstance(event, RingStarted):
                self._emit("ring_started", event.ring)
            elif isinstance(event, RingEnded):
                self._emit("ring_ended", event.ring, event.reason)
            elif isinstance(event, RingDeclined):
                self._emit(
                    "ring_declined", event.room_id, event.user_id, event.notification_event_id
                )

    def _schedule_timer(self) -> None:
        if self._closed:
            self._timer.cancel()
            return
        deadline = self.table.next_deadline()
        seconds = None if deadline is None else deadline / 1000
        self._timer.arm([seconds], self._now() / 1000, slack=0.001)

"""The asyncio layer of MatrixRTC membership: one device's membership of one room's call.

:class:`GroupMembership` binds the sans-I/O :class:`~sealcall.group.MembershipTable` and
:class:`~sealcall.group.OwnMembership` to the Matrix transport and real timers, as
:class:`~sealcall.session.VoIP` binds the call manager: one worker task takes one input at a
time (a state event, a timer, a command) and carries out what the cores answer.

Leave on crash (MSC4140): before our member event goes out, the leave (``{}`` at our state key)
is scheduled on the homeserver with a delay, and restarted every ``restart_ms`` while we live.
A device that dies stops restarting it, so the homeserver sends the leave itself and the others
see the device go within the delay, not at the membership's expiry. A clean leave has the server
send it at once. Without delayed events on the homeserver the membership's expiry is all that
removes a crashed device; that is logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from sealcall.group import (
    DEFAULT_EXPIRES_MS,
    MEMBER_EVENT_TYPE,
    JoinCall,
    LeaveCall,
    Member,
    MemberJoined,
    MemberLeft,
    MemberRejoined,
    MembershipEvent,
    MembershipStateError,
    MembershipTable,
    MemberStateEvent,
    OwnAction,
    OwnMembership,
    OwnState,
    OwnStateChanged,
    RoomMembershipChanged,
    SendMemberState,
)
from sealcall.transport.matrix import (
    DelayedEventGoneError,
    DelayedEventsUnsupportedError,
    MatrixTransport,
    StateEvent,
)

from .deadline_timer import DeadlineTimer
from .safe_emitter import SafeEventEmitter

logger = logging.getLogger(__name__)

ROOM_MEMBER = "m.room.member"
# js-sdk schedules its leave 8 s ahead and restarts it every 5 s.
DEFAULT_LEAVE_DELAY_MS = 8_000
DEFAULT_RESTART_MS = 5_000

_Work = tuple[str, Any, "asyncio.Future[None] | None"]


class GroupMembership(SafeEventEmitter):
    """Our device's membership of one room's call, and who else is in it.

    Events (``membership.on(name, handler)``), about the other member devices:
    ``member_joined(member)``, ``member_left(member, reason)`` (a
    :class:`~sealcall.group.LeftReason`), ``member_rejoined(old, new)`` (a new session: its old
    connections are stale); and about ours: ``state_changed(old, new)``
    (:class:`~sealcall.group.OwnState`: idle, joining, joined). One join per object: after
    :meth:`leave` or :meth:`close`, make a new one to join again.
    """

    def __init__(
        self,
        transport: MatrixTransport,
        room_id: str,
        *,
        expires_ms: int = DEFAULT_EXPIRES_MS,
        leave_delay_ms: int = DEFAULT_LEAVE_DELAY_MS,
        restart_ms: int = DEFAULT_RESTART_MS,
        clock: Callable[[], float] = time.time,
        new_membership_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        sfu_url: str | None = None,
    ) -> None:
        super().__init__()
        if not 0 < restart_ms < leave_delay_ms:
            raise ValueError("the delayed leave must be restarted before its delay runs out")
        self.transport = transport
        self.room_id = room_id
        self.leave_delay_ms = leave_delay_ms
        self.restart_ms = restart_ms
        self.own = OwnMembership(
            user_id=transport.user_id,
            device_id=transport.device_id,
            new_membership_id=new_membership_id,
            expires_ms=expires_ms,
            sfu_url=sfu_url,
        )
        self.table = MembershipTable(own=self.own.device)
        self.delayed_leave: bool | None = None  # None until join() asked the homeserver
        self.restarts = 0  # delayed-leave restarts done
        self._clock = clock
        self._delay_id: str | None = None
        self._stale_delay_id: str | None = None  # a delayed leave we stopped restarting
        self._queue: asyncio.Queue[_Work] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._timer = DeadlineTimer(lambda: self._queue.put_nowait(("timer", None, None)))
        self._closed = False

    # -- queries ---------------------------------------------------------------------------

    @property
    def state(self) -> OwnState:
        """Where our own membership is."""
        return self.own.state

    def members(self) -> list[Member]:
        """The other member devices of the call, ordered by device."""
        return [m for m in self.table.members() if m.device != self.own.device]

    @property
    def ignored(self) -> Counter[str]:
        """Member events not taken, by :class:`~sealcall.group.Ignored` reason."""
        return self.table.ignored

    # -- commands --------------------------------------------------------------------------

    async def join(self, *, intent: str | None = None) -> None:
        """Join the room's call; return once our member event is sent.

        Raises :class:`~sealcall.transport.matrix.UnencryptedRoomError` for a room without
        end-to-end encryption (and the transport's error for one where we may not announce
        ourselves), before anything is sent.
        """
        if self._closed or self._worker is not None:
            raise MembershipStateError("join() once per GroupMembership")
        self.transport.check_group_room(self.room_id)
        self.transport.add_state_listener(self._on_state, [MEMBER_EVENT_TYPE, ROOM_MEMBER])
        self._worker = asyncio.ensure_future(self._work())
        try:
            await self._submit("join", intent)
        except Exception:
            await self.close(leave=True)  # whatever went out is taken back
            raise

    async def leave(self) -> None:
        """Leave the call (the homeserver sends our scheduled leave now) and stop."""
        await self.close(leave=True)

    async def close(self, *, leave: bool = True) -> None:
        """Stop. With ``leave`` (the default) leave the call first; without it, stop as a crashed
        device does: nothing is sent and the delayed leave is no longer restarted."""
        if self._closed:
            return
        if self._worker is not None and not self._worker.done():
            if leave:
                with contextlib.suppress(Exception):
                    await self._submit("leave", None)
            await self._queue.put(("stop", None, None))
            await self._worker
        self._closed = True
        self.transport.remove_state_listener(self._on_state)
        await self._stop_keepalive()
        self._timer.cancel()

    async def _submit(self, kind: str, subject: Any) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((kind, subject, done))
        await done

    # -- inputs ----------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self._clock() * 1000)

    def _on_state(self, event: StateEvent) -> None:
        if not self._closed and event.room_id == self.room_id:
            self._queue.put_nowait(("state", event, None))

    async def _work(self) -> None:
        while True:
            kind, subject, done = await self._queue.get()
            if kind == "stop":
                if done is not None:
                    done.set_result(None)
                return
            try:
                await self._take(kind, subject)
            except Exception as error:
                if done is not None:
                    done.set_exception(error)
                else:
                    logger.exception("group membership input %s failed", kind)
            else:
                if done is not None:
                    done.set_result(None)
            self._schedule_timer()

    async def _take(self, kind: str, subject: Any) -> None:
        now = self._now()
        if kind == "state":
            await self._run(
                self._observe(self.table.handle(table_input(subject, self.transport), now), now)
            )
        elif kind == "timer":
            actions = self._observe(self.table.tick(now), now)
            await self._run(actions + self.own.tick(now))
        elif kind == "rearm":
            if (
                self._delay_id is None
                and self.delayed_leave
                and self.own.state is not OwnState.IDLE
            ):
                await self._schedule_leave()
        elif kind == "join":
            await self._join(subject)
        elif kind == "leave":
            await self._leave()

    async def _join(self, intent: str | None) -> None:
        # The listener was added before this read: changes from here on wait in the queue and
        # are applied after the snapshot, in the order the syncs brought them.
        members = await self.transport.room_state(self.room_id, ROOM_MEMBER)
        calls = await self.transport.room_state(self.room_id, MEMBER_EVENT_TYPE)
        support = await self.transport.delayed_event_support()
        self.delayed_leave = support.allows(self.leave_delay_ms)
        if self.delayed_leave:
            await self._cancel_leftover_leaves()
        else:
            self._no_delayed_leave()
        # Joining before the room's state is read: a membership of this device from a crashed
        # run is then one our join replaces (the others see the device rejoin), not one to clear.
        actions = self.own.handle(JoinCall(intent), self._now())
        now = self._now()
        joined = [m.state_key for m in members if m.content.get("membership") == "join"]
        events = self.table.set_joined_users(joined, now)
        for event in calls:
            events += self.table.handle(table_input(event, self.transport), now)
        await self._run(actions + self._observe(events, now))
        if self.delayed_leave:
            self._keepalive = asyncio.ensure_future(self._restart_loop())

    async def _leave(self) -> None:
        await self._stop_keepalive()
        if self.own.state is OwnState.IDLE:
            return
        for action in self.own.handle(LeaveCall(), self._now()):
            if isinstance(action, SendMemberState) and action.state_key == self.own.state_key:
                await self._send_leave(action)
            else:
                await self._act(action)

    # -- outputs ---------------------------------------------------------------------------

    def _observe(self, events: list[MembershipEvent], now: int) -> list[OwnAction]:
        """Tell the application of the table's events, then our own membership."""
        for event in events:
            self._tell(event)
        return self.own.observe(events, now)

    async def _run(self, actions: list[OwnAction]) -> None:
        for action in actions:
            await self._act(action)

    def _tell(self, event: MembershipEvent) -> None:
        own = self.own.device
        if isinstance(event, MemberJoined) and event.member.device != own:
            self._emit("member_joined", event.member)
        elif isinstance(event, MemberLeft):
            if event.member.device != own:
                self._emit("member_left", event.member, event.reason)
            elif self.own.state is OwnState.JOINED:
                # Our membership vanished while we are in: most likely our delayed leave was
                # sent (we stalled past its delay). The join that follows needs a new one; the
                # old one, if it is still scheduled, would remove that join: it is cancelled.
                self._stale_delay_id, self._delay_id = self._delay_id, None
        elif isinstance(event, MemberRejoined) and event.new.device != own:
            self._emit("member_rejoined", event.old, event.new)

    async def _act(self, action: OwnAction) -> None:
        if isinstance(action, OwnStateChanged):
            self._emit("state_changed", action.old, action.new)
            return
        ours = bool(action.content) and action.state_key == self.own.state_key
        try:
            if ours and self.delayed_leave and self._delay_id is None:
                # Scheduled before the membership goes out: a crash right after it must not
                # leave a member behind.
                await self._schedule_leave()
            await self.transport.send_state_event(
                self.room_id, MEMBER_EVENT_TYPE, action.state_key, action.content
            )
        except Exception as error:
            if ours and self.own.state is OwnState.JOINING:
                raise  # the join itself failed: join() says so
            # A refresh that fails is made good by the next one, or by a rejoin after expiry;
            # a leave not scheduled, by the restart loop.
            logger.warning("sending our call membership failed: %s", type(error).__name__)

    async def _schedule_leave(self) -> None:
        stale, self._stale_delay_id = self._stale_delay_id, None
        if stale is not None:
            with contextlib.suppress(Exception):  # most likely sent already
                await self.transport.cancel_delayed_event(stale)
        try:
            self._delay_id = await self.transport.send_state_event(
                self.room_id,
                MEMBER_EVENT_TYPE,
                self.own.state_key,
                {},
                delay_ms=self.leave_delay_ms,
            )
        except DelayedEventsUnsupportedError:
            self.delayed_leave = False
            self._no_delayed_leave()

    def _no_delayed_leave(self) -> None:
        logger.warning(
            "the homeserver has no delayed events: if this device crashes, the others see it "
            "leave only when its membership expires (%d s)",
            self.own.expires_ms // 1000,
        )

    async def _send_leave(self, action: SendMemberState) -> None:
        delay_id, self._delay_id = self._delay_id, None
        if delay_id is not None:
            try:
                await self.transport.send_delayed_event(delay_id)
                return
            except Exception as error:  # gone, or the server failed: send the leave ourselves
                logger.info("sending the delayed leave failed: %s", type(error).__name__)
                with contextlib.suppress(Exception):
                    await self.transport.cancel_delayed_event(delay_id)
        await self.transport.send_state_event(
            self.room_id, MEMBER_EVENT_TYPE, action.state_key, action.content
        )

    async def _cancel_leftover_leaves(self) -> None:
        """Cancel the delayed leaves a crashed earlier run of this device left scheduled: once
        sent, they would remove the membership we are about to announce."""
        try:
            scheduled = await self.transport.scheduled_delayed_events()
        except Exception as error:
            logger.info("listing our delayed events failed: %s", type(error).__name__)
            return
        for item in scheduled:
            if (item.room_id, item.type, item.state_key) == (
                self.room_id,
                MEMBER_EVENT_TYPE,
                self.own.state_key,
            ):
                with contextlib.suppress(DelayedEventGoneError):
                    await self.transport.cancel_delayed_event(item.delay_id)

    async def _restart_loop(self) -> None:
        """Restart the delayed leave every ``restart_ms`` (the proof of life)."""
        while True:
            await asyncio.sleep(self.restart_ms / 1000)
            delay_id = self._delay_id
            if delay_id is None:
                self._queue.put_nowait(("rearm", None, None))
                continue
            try:
                await self.transport.restart_delayed_event(delay_id)
                self.restarts += 1
            except DelayedEventGoneError:
                # It was sent (we stalled past the delay) or cancelled: schedule a new one.
                if self._delay_id == delay_id:
                    self._delay_id = None
                    self._queue.put_nowait(("rearm", None, None))
            except Exception as error:  # the next restart may get through in time
                logger.warning("restarting our delayed leave failed: %s", type(error).__name__)

    async def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
            self._keepalive = None

    def _schedule_timer(self) -> None:
        if self._closed:
            self._timer.cancel()
            return
        # The cores count Unix milliseconds; fire 1 ms late so the deadline counts as reached.
        deadlines = (self.table.next_deadline(), self.own.next_deadline())
        seconds = [None if d is None else d / 1000 for d in deadlines]
        self._timer.arm(seconds, self._now() / 1000, slack=0.001)


def table_input(
    event: StateEvent, transport: MatrixTransport | None = None
) -> MemberStateEvent | RoomMembershipChanged:
    """What the membership table is told of a state event of either watched type.

    For a room membership event, whether the user is joined is read from the client's view of
    the room when there is one, not from the event: events reach the table through a queue
    (and after a ``/state`` snapshot, see :meth:`GroupMembership.join`), so an older event, such
    as the invite before a join, may be applied after a newer state; the client's view is
    always the newest, and a user who is in the room is never taken out by a stale event.
    """
    if event.type == ROOM_MEMBER:
        room = None if transport is None else transport.client.rooms.get(event.room_id)
        if room is not None:
            user = event.state_key
            joined = user in room.users and user not in room.invited_users
        else:
            joined = event.content.get("membership") == "join"
        return RoomMembershipChanged(event.state_key, joined)
    return MemberStateEvent(
        event.sender, event.state_key, event.content, event.origin_server_ts, event.event_id
    )

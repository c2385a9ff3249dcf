"""Ringing for group calls on one device, without I/O: which rooms ring us, until when, and
why each ring stops.

Feed :class:`RingTable` the notifications and declines that arrive
(:class:`NotificationReceived`, :class:`DeclineReceived`) and the call member state of rooms
that ring (:class:`CallStateReceived`), with ``now_ms`` (Unix milliseconds, the clock of
``origin_server_ts``); it answers :class:`RingStarted`, :class:`RingEnded` (with a
:class:`RingEndReason`) and :class:`RingDeclined` (someone declined a ring we sent). Arm a
timer for :meth:`RingTable.next_deadline` and call :meth:`RingTable.tick` when it fires.

A notification rings only if it is a ``ring`` whose ``m.mentions`` name the room or us (none:
the room), from another user (a user's own ring does not
ring their other devices, as in Element Call), not past its lifetime (capped at 90 s, so a
notification from an initial sync or a restart rings only while it is fresh), for a room whose
call we are not in (from any of our devices). Whether we are in a room's call, and whether the
call is still on, comes from its member state: the first notification of a room asks for a
snapshot of it (:class:`FetchCallState`, answered with :class:`CallSnapshot`), later changes
arrive as :class:`CallStateReceived`; the room's call state is kept only while the room rings.
Everything else is dropped and counted in :attr:`RingTable.ignored` (the first of each reason
is logged, without content). State is bounded: rings per room, rings in all, remembered ids.
"""

import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sealcall.signaling import SignalingError
from sealcall.signaling.fields import MAX_INTEGER

from .member_event import short_text
from .membership import (
    MembershipInput,
    MembershipTable,
    MemberStateEvent,
)
from .notification import MAX_RING_LIFETIME_MS, RtcNotification, parse_decline, parse_notification

logger = logging.getLogger(__name__)

MAX_RINGS_PER_ROOM = 4  # two members starting a call at once each ring; more is a flood
MAX_RINGS = 64
MAX_REMEMBERED = 512  # notification ids already handled: a late copy does not ring again
MAX_SENT = 64  # our own rings whose declines we report


class RingEndReason(StrEnum):
    """Why a ring stopped."""

    JOINED = "joined"  # we joined the call, from this device or another
    DECLINED = "declined"  # we declined it on this device
    EXPIRED = "expired"  # its (capped) lifetime ran out
    CALL_ENDED = "call_ended"  # every member left the call
    DECLINED_ELSEWHERE = "declined_elsewhere"  # another device of ours declined it


class RingIgnored(StrEnum):
    """Why a notification or decline did not change any ring."""

    MALFORMED = "malformed"
    OWN = "own"  # our own ring (this device or another of ours)
    NOT_A_RING = "not_a_ring"  # notification_type "notification": nothing to ring
    NOT_FOR_US = "not_for_us"  # m.mentions names neither the room nor us
    STALE = "stale"  # past its lifetime when it arrived
    IN_CALL = "in_call"  # we are in that room's call already
    CALL_ENDED = "call_ended"  # nobody is in the call any more
    DUPLICATE = "duplicate"
    OVER_CAPACITY = "over_capacity"
    UNKNOWN_RING = "unknown_ring"  # a decline of no ring we know


@dataclass(frozen=True)
class GroupRing:
    """A room's call ringing us."""

    room_id: str
    sender: str  # who started the call
    event_id: str  # the notification's: a decline references it
    ring_until: int  # Unix ms: the capped lifetime
    member_event_id: str | None  # the sender's member event the notification references
    intent: str | None  # m.call.intent ("audio", "video"), if given
    notification: RtcNotification = field(compare=False, repr=False)


@dataclass(frozen=True)
class NotificationReceived:
    """An ``org.matrix.msc4075.rtc.notification`` room event, decrypted."""

    room_id: str
    sender: str
    event_id: str
    content: Any
    origin_server_ts: int


@dataclass(frozen=True)
class DeclineReceived:
    """An ``org.matrix.msc4310.rtc.decline`` room event, decrypted."""

    room_id: str
    sender: str
    content: Any


@dataclass(frozen=True)
class CallStateReceived:
    """A change of a room's call member state or of its room membership, in sync order."""

    room_id: str
    item: MembershipInput


@dataclass(frozen=True)
class CallSnapshot:
    """A room's current call member events and joined users, as :class:`FetchCallState` asked
    (``None``: they could not be read; the room then rings without them)."""

    room_id: str
    members: tuple[MemberStateEvent, ...] | None
    joined_users: tuple[str, ...] = ()


RingInput = NotificationReceived | DeclineReceived | CallStateReceived | CallSnapshot


@dataclass(frozen=True)
class RingStarted:
    """A room's call rings us."""

    ring: GroupRing


@dataclass(frozen=True)
class RingEnded:
    """A ring stopped."""

    ring: GroupRing
    reason: RingEndReason


@dataclass(frozen=True)
class RingDeclined:
    """``user_id`` declined a ring we sent (the notification ``notification_event_id``)."""

    room_id: str
    user_id: str
    notification_event_id: str


@dataclass(frozen=True)
class FetchCallState:
    """Read the room's call member state and answer with :class:`CallSnapshot`."""

    room_id: str


RingEvent = RingStarted | RingEnded | RingDeclined | FetchCallState


class NoRingError(LookupError):
    """There is no ring to decline in that room."""


class RingTable:
    """The rings of one device (user ``own_user``)."""

    def __init__(
        self,
        own_user: str,
        *,
        max_rings: int = MAX_RINGS,
        max_rings_per_room: int = MAX_RINGS_PER_ROOM,
    ) -> None:
        self.own_user = own_user
        self.max_rings = max_rings
        self.max_rings_per_room = max_rings_per_room
        self.ignored: Counter[str] = Counter()
        # By (room id, notification event id), oldest first.
        self._rings: dict[tuple[str, str], GroupRing] = {}
        self._pending: dict[tuple[str, str], GroupRing] = {}  # waiting for their room's state
        self._calls: dict[str, MembershipTable] = {}  # rooms that ring or are being read
        self._in_call: set[str] = set()  # rooms whose call this device joined
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._sent: OrderedDict[tuple[str, str], None] = OrderedDict()

    # -- queries --------------------------------------------------------------------------

    def ringing(self) -> list[GroupRing]:
        """The rings going on, oldest first."""
        return list(self._rings.values())

    def next_deadline(self) -> int | None:
        """The earliest time (Unix ms) a ring or a ringing room's membership runs out."""
        times = [r.ring_until for r in (*self._rings.values(), *self._pending.values())]
        times += [d for t in self._calls.values() if (d := t.next_deadline()) is not None]
        return min(times) if times else None

    # -- commands -------------------------------------------------------------------------

    def joined(self, room_id: str, now_ms: int) -> list[RingEvent]:
        """We joined ``room_id``'s call on this device: its rings stop, and it rings no more
        until :meth:`left`."""
        self._in_call.add(room_id)
        self._pending = {k: r for k, r in self._pending.items() if r.room_id != room_id}
        return self._end_room(room_id, RingEndReason.JOINED) + self.tick(now_ms)

    def left(self, room_id: str) -> None:
        """We left ``room_id``'s call on this device: a new call there may ring again."""
        self._in_call.discard(room_id)

    def sent(self, room_id: str, event_id: str) -> None:
        """We sent the ring ``event_id``: declines of it are reported (:class:`RingDeclined`)."""
        self._remember(self._sent, (room_id, event_id), MAX_SENT)

    def decline(self, room_id: str, now_ms: int) -> list[RingEvent]:
        """Decline ``room_id``'s rings: they end; send a decline for each :class:`RingEnded`
        returned for the room. :class:`NoRingError` if the room does not ring."""
        out = self.tick(now_ms)
        if not any(r.room_id == room_id for r in self._rings.values()):
            raise NoRingError(room_id)
        return out + self._end_room(room_id, RingEndReason.DECLINED)

    # -- inputs ---------------------------------------------------------------------------

    def tick(self, now_ms: int) -> list[RingEvent]:
        """End the rings due at ``now_ms``, and those whose call ended by expiry."""
        out: list[RingEvent] = []
        for key, ring in list(self._rings.items()):
            if ring.ring_until <= now_ms:
                del self._rings[key]
                out.append(RingEnded(ring, RingEndReason.EXPIRED))
        self._pending = {k: r for k, r in self._pending.items() if r.ring_until > now_ms}
        for room_id, table in list(self._calls.items()):
            if table.tick(now_ms):
                out += self._check_call(room_id)
        self._forget_idle_rooms()
        return out

    def handle(self, item: RingInput, now_ms: int) -> list[RingEvent]:
        """Take one input; rings due are ended first."""
        out = self.tick(now_ms)
        if isinstance(item, NotificationReceived):
            out += self._notification(item, now_ms)
        elif isinstance(item, DeclineReceived):
            out += self._decline(item)
        elif isinstance(item, CallSnapshot):
            out += self._snapshot(item, now_ms)
        else:
            table = self._calls.get(item.room_id)
            if table is not None and table.handle(item.item, now_ms):
                out += self._check_call(item.room_id)
        self._forget_idle_rooms()
        return out

    # -- internals ------------------------------------------------------------------------

    def _ignore(self, reason: RingIgnored) -> None:
        if not self.ignored[reason]:  # the first of each kind is logged, the rest counted
            logger.info("group call notification ignored: %s", reason.value)
        self.ignored[reason] += 1

    @staticmethod
    def _remember(seen: OrderedDict[tuple[str, str], None], key: tuple[str, str], cap: int) -> None:
        seen[key] = None
        seen.move_to_end(key)
        while len(seen) > cap:
            seen.popitem(last=False)

    def _notification(self, item: NotificationReceived, now_ms: int) -> list[RingEvent]:
        ts = item.origin_server_ts
        if (
            not (short_text(item.room_id) and short_text(item.sender))
            or not short_text(item.event_id)
            or not item.event_id
            or isinstance(ts, bool)
            or not isinstance(ts, int)
            or not 0 <= ts <= MAX_INTEGER
        ):
            self._ignore(RingIgnored.MALFORMED)
            return []
        try:
            notification = parse_notification(item.content)
        except SignalingError:
            self._ignore(RingIgnored.MALFORMED)
            return []
        key = (item.room_id, item.event_id)
        reason: RingIgnored | None = None
        if item.sender == self.own_user:
            reason = RingIgnored.OWN
        elif not notification.rings:
            reason = RingIgnored.NOT_A_RING
        elif not self._mentions_us(notification):
            reason = RingIgnored.NOT_FOR_US
        elif key in self._seen:
            reason = RingIgnored.DUPLICATE
        elif item.room_id in self._in_call:
            reason = RingIgnored.IN_CALL
        if reason is not None:
            self._ignore(reason)
            return []
        self._remember(self._seen, key, MAX_REMEMBERED)
        # A forged origin_server_ts in the future must not stretch the ring either.
        ring_until = min(notification.ring_until(ts), now_ms + MAX_RING_LIFETIME_MS)
        if ring_until <= now_ms:
            self._ignore(RingIgnored.STALE)
            return []
        in_room = sum(
            r.room_id == item.room_id for r in (*self._rings.values(), *self._pending.values())
        )
        if (
            in_room >= self.max_rings_per_room
            or len(self._rings) + len(self._pending) >= self.max_rings
        ):
            self._ignore(RingIgnored.OVER_CAPACITY)
            return []
        ring = GroupRing(
            room_id=item.room_id,
            sender=item.sender,
            event_id=item.event_id,
            ring_until=ring_until,
            member_event_id=notification.relates_to.event_id if notification.relates_to else None,
            intent=notification.intent,
            notification=notification,
        )
        if item.room_id in self._calls:
            return self._start(ring)
        fetch = not any(r.room_id == item.room_id for r in self._pending.values())
        self._pending[key] = ring
        return [FetchCallState(item.room_id)] if fetch else []

    def _mentions_us(self, notification: RtcNotification) -> bool:
        """MSC4075: ring only users the mentions name (the room, or us). Without
        ``m.mentions`` the notification is taken as the room's (js-sdk always names the room)."""
        mentions = notification.mentions
        if mentions is None:
            return True
        return mentions.get("room") is True or self.own_user in mentions.get("user_ids", [])

    def _start(self, ring: GroupRing) -> list[RingEvent]:
        """Start ``ring`` unless its room's call state says it should not."""
        table = self._calls.get(ring.room_id)
        if table is not None:
            members = table.members()
            if any(m.device.user_id == self.own_user for m in members):
                self._ignore(RingIgnored.IN_CALL)
                return []
            if not members:
                self._ignore(RingIgnored.CALL_ENDED)
                return []
        self._rings[(ring.room_id, ring.event_id)] = ring
        return [RingStarted(ring)]

    def _snapshot(self, item: CallSnapshot, now_ms: int) -> list[RingEvent]:
        waiting = [r for r in self._pending.values() if r.room_id == item.room_id]
        if not waiting:
            return []  # answered too late: the rings it was for are over
        for ring in waiting:
            del self._pending[(ring.room_id, ring.event_id)]
        if item.members is not None:
            table = MembershipTable()
            table.set_joined_users(list(item.joined_users), now_ms)
            for event in item.members:
                table.handle(event, now_ms)
            self._calls[item.room_id] = table
        out: list[RingEvent] = []
        for ring in waiting:
            out += self._start(ring)
        return out

    def _decline(self, item: DeclineReceived) -> list[RingEvent]:
        if not (short_text(item.room_id) and short_text(item.sender)):
            self._ignore(RingIgnored.MALFORMED)
            return []
        try:
            declined = parse_decline(item.content).relates_to.event_id
        except SignalingError:
            self._ignore(RingIgnored.MALFORMED)
            return []
        key = (item.room_id, declined)
        ring = self._rings.pop(key, None) if item.sender == self.own_user else None
        if item.sender == self.own_user:
            self._pending.pop(key, None)
            if ring is not None:
                return [RingEnded(ring, RingEndReason.DECLINED_ELSEWHERE)]
            return []  # the echo of our own decline, or of one for a ring we never had
        if key in self._sent:
            return [RingDeclined(item.room_id, item.sender, declined)]
        self._ignore(RingIgnored.UNKNOWN_RING)  # a decline of someone else's ring
        return []

    def _check_call(self, room_id: str) -> list[RingEvent]:
        """End ``room_id``'s rings if we are now in its call, or nobody is."""
        members = self._calls[room_id].members()
        if any(m.device.user_id == self.own_user for m in members):
            return self._end_room(room_id, RingEndReason.JOINED)
        if not members:
            return self._end_room(room_id, RingEndReason.CALL_ENDED)
        return []

    def _end_room(self, room_id: str, reason: RingEndReason) -> list[RingEvent]:
        ended = [r for r in self._rings.values() if r.room_id == room_id]
        for ring in ended:
            del self._rings[(ring.room_id, ring.event_id)]
        return [RingEnded(ring, reason) for ring in ended]

    def _forget_idle_rooms(self) -> None:
        """Keep a room's call state only while it rings (bounded by the rings)."""
        busy = {r.room_id for r in (*self._rings.values(), *self._pending.values())}
        for room_id in [r for r in self._calls if r not in busy]:
            del self._calls[room_id]

"""The room's call membership table, without I/O.

Feed it member state events (:class:`MemberStateEvent`) and room joins and leaves
(:class:`RoomMembershipChanged`) with ``now_ms``; it returns what changed:
:class:`MemberJoined`, :class:`MemberLeft` (with a :class:`LeftReason`) and
:class:`MemberRejoined` (the device came back as a new session: tear down its connections and
connect afresh). Arm a timer for :meth:`MembershipTable.next_deadline` and call
:meth:`MembershipTable.tick` when it fires, so expired memberships leave.

A device's membership counts only while ``created_ts + expires > now``, while its sender is
joined to the room, and only if the state key's user is the event's sender: anyone else's
write is ignored and counted (a spoofed member is never listed, and a spoofer cannot remove a
real one either). Times are Unix milliseconds, the clock of ``origin_server_ts``.
"""

import logging
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sealcall.signaling import SignalingError
from sealcall.signaling.fields import MAX_INTEGER, valid_text

from .errors import LegacyMembershipError, StateKeyError
from .member_event import CallMember, MemberLeave, parse_member_content, state_key_user

logger = logging.getLogger(__name__)

# A full mesh is unusable long before this (each sender uploads one copy of its media per peer),
# but the table also lists the devices of an SFU call in the same room. Matrix caps an event at
# 64 KiB, so even hostile maximum-size contents keep the table under 8 MiB.
MAX_MEMBERS = 128
# Room members whose joins we remember (ids of at most 255 bytes: under 3 MiB). A room this big
# is no place for a mesh call; joins beyond it are dropped and counted.
MAX_JOINED_USERS = 10_000


@dataclass(frozen=True, order=True)
class MemberDevice:
    """A member device: the user and the device id its membership content names."""

    user_id: str
    device_id: str


def places_call(own: MemberDevice, peer: MemberDevice) -> bool:
    """The mesh rule: the device with the lower ``(user_id, device_id)`` places the call.

    Strings compare by code point (the same order as their UTF-8 bytes), so both ends agree.
    """
    if own == peer:
        raise ValueError("a device does not call itself")
    return (own.user_id, own.device_id) < (peer.user_id, peer.device_id)


@dataclass(frozen=True)
class Member:
    """A counted membership: which device, which session of it, until when."""

    device: MemberDevice
    member_id: str  # membershipID, or js-sdk's default "@user:server:DEVICE"
    created: int  # created_ts, or the first event's origin_server_ts
    expires_at: int
    state_key: str
    content: CallMember = field(compare=False)  # holds JSON: not hashed, nor compared
    event_id: str | None = None

    @property
    def session(self) -> tuple[str, int]:
        """What identifies one join of the device: a change means it rejoined.

        js-sdk writes a constant membershipID and omits ``created_ts`` on a fresh join (so it
        is the new event's timestamp) while keeping it on refreshes; both are compared.
        """
        return self.member_id, self.created


class LeftReason(StrEnum):
    """Why a membership stopped counting."""

    LEFT = "left"  # the device wrote a leave (or anything that is not a membership)
    EXPIRED = "expired"  # created_ts + expires passed without a refresh
    USER_LEFT_ROOM = "user_left_room"


class Ignored(StrEnum):
    """Why a member event was not taken (counted in :attr:`MembershipTable.ignored`)."""

    MALFORMED = "malformed"
    LEGACY = "legacy"
    SPOOFED = "spoofed"  # the state key names another user than the sender
    BAD_STATE_KEY = "bad_state_key"
    STALE = "stale"  # already expired when it arrived
    OTHER_CALL = "other_call"  # another application or call id
    NOT_JOINED = "sender_not_joined"  # kept, but counts only once the sender joins
    OVER_CAPACITY = "over_capacity"
    USERS_OVER_CAPACITY = "users_over_capacity"


@dataclass(frozen=True)
class MemberStateEvent:
    """An ``org.matrix.msc3401.call.member`` state event as the transport delivered it."""

    sender: str
    state_key: str
    content: Any
    origin_server_ts: int
    event_id: str | None = None


@dataclass(frozen=True)
class RoomMembershipChanged:
    """A user joined the room (``joined``) or left, was kicked or banned."""

    user_id: str
    joined: bool


@dataclass(frozen=True)
class MemberJoined:
    """A device's membership began to count."""

    member: Member


@dataclass(frozen=True)
class MemberLeft:
    """A device's membership stopped counting."""

    member: Member
    reason: LeftReason


@dataclass(frozen=True)
class MemberRejoined:
    """The device is a member again under a new session: its old connections are stale."""

    old: Member
    new: Member


MembershipEvent = MemberJoined | MemberLeft | MemberRejoined
MembershipInput = MemberStateEvent | RoomMembershipChanged


@dataclass
class _Record:
    member: Member
    seq: int


class MembershipTable:
    """The call members of one room, as this device sees them."""

    def __init__(self, *, own: MemberDevice | None = None, max_members: int = MAX_MEMBERS) -> None:
        self.own = own
        self.max_members = max_members
        self.ignored: Counter[str] = Counter()
        self._records: dict[str, _Record] = {}  # by state key: the latest valid membership
        self._announced: dict[MemberDevice, Member] = {}
        self._joined: set[str] = set()
        self._seq = 0

    # -- queries --------------------------------------------------------------------------

    def members(self) -> list[Member]:
        """The counted memberships (our own device included), ordered by device."""
        return [self._announced[d] for d in sorted(self._announced)]

    def member(self, device: MemberDevice) -> Member | None:
        """The counted membership of ``device``, if any."""
        return self._announced.get(device)

    def is_joined(self, user_id: str) -> bool:
        """Whether ``user_id`` is joined to the room, as far as the table was told."""
        return user_id in self._joined

    def next_deadline(self) -> int | None:
        """The earliest time (Unix ms) a membership expires; call :meth:`tick` then."""
        times = [r.member.expires_at for r in self._records.values()]
        return min(times) if times else None

    # -- inputs ---------------------------------------------------------------------------

    def tick(self, now_ms: int) -> list[MembershipEvent]:
        """Expire what is due at ``now_ms``."""
        due = [k for k, r in self._records.items() if r.member.expires_at <= now_ms]
        devices = {self._records[k].member.device for k in due}
        for key in due:
            del self._records[key]
        return self._sync(devices, LeftReason.EXPIRED, now_ms)

    def handle(self, item: MembershipInput, now_ms: int) -> list[MembershipEvent]:
        """Apply a state event or a room membership change; expiries due are applied first."""
        out = self.tick(now_ms)
        if isinstance(item, RoomMembershipChanged):
            out += self._room_membership(item, now_ms)
        else:
            out += self._state_event(item, now_ms)
        return out

    def set_joined_users(self, user_ids: list[str], now_ms: int) -> list[MembershipEvent]:
        """Replace the set of joined users (e.g. after an initial sync)."""
        out = self.tick(now_ms)
        for user in self._joined - set(user_ids):
            out += self._room_membership(RoomMembershipChanged(user, False), now_ms)
        for user in dict.fromkeys(user_ids):
            if user not in self._joined:
                out += self._room_membership(RoomMembershipChanged(user, True), now_ms)
        return out

    # -- internals ------------------------------------------------------------------------

    def _ignore(self, reason: Ignored, sender: object) -> None:
        if not self.ignored[reason]:  # the first of each kind is logged, the rest counted
            logger.info("call member event ignored (%s) from %.80r", reason.value, sender)
        self.ignored[reason] += 1

    def _room_membership(self, item: RoomMembershipChanged, now_ms: int) -> list[MembershipEvent]:
        user = item.user_id
        if not valid_text(user):
            self._ignore(Ignored.MALFORMED, "?")
            return []
        if item.joined:
            if user not in self._joined and len(self._joined) >= MAX_JOINED_USERS:
                self._ignore(Ignored.USERS_OVER_CAPACITY, user)
                return []
            self._joined.add(user)
            devices = {
                r.member.device for r in self._records.values() if r.member.device.user_id == user
            }
            return self._sync(devices, LeftReason.LEFT, now_ms)
        self._joined.discard(user)
        # Forgotten, not kept dormant: after rejoining the room only a new member event counts.
        gone = [k for k, r in self._records.items() if r.member.device.user_id == user]
        devices = {self._records[k].member.device for k in gone}
        for key in gone:
            del self._records[key]
        return self._sync(devices, LeftReason.USER_LEFT_ROOM, now_ms)

    def _state_event(self, event: MemberStateEvent, now_ms: int) -> list[MembershipEvent]:
        sender, key, ts = event.sender, event.state_key, event.origin_server_ts
        if (
            not valid_text(sender)
            or isinstance(ts, bool)
            or not isinstance(ts, int)
            or not 0 <= ts <= MAX_INTEGER
            or (event.event_id is not None and not valid_text(event.event_id))
        ):
            self._ignore(Ignored.MALFORMED, "?")
            return []
        try:
            user, names_device = state_key_user(key)
        except StateKeyError:
            self._ignore(Ignored.BAD_STATE_KEY, sender)
            return []
        if user != sender:
            self._ignore(Ignored.SPOOFED, sender)
            return []
        if not names_device:
            self._ignore(Ignored.LEGACY, sender)  # the per-user key of the legacy form
            return []
        try:
            content = parse_member_content(event.content)
        except LegacyMembershipError:
            self._ignore(Ignored.LEGACY, sender)
            content = None
        except SignalingError:
            self._ignore(Ignored.MALFORMED, sender)
            content = None
        # The sender's new state replaces what was at this key, whatever it is.
        old = self._records.pop(key, None)
        devices = {old.member.device} if old else set()
        member = self._member(event, content, now_ms)
        if member is not None:
            if old is None and len(self._records) >= self.max_members and member.device != self.own:
                self._ignore(Ignored.OVER_CAPACITY, sender)
            else:
                self._seq += 1
                self._records[key] = _Record(member, self._seq)
                devices.add(member.device)
                if sender not in self._joined:
                    self._ignore(Ignored.NOT_JOINED, sender)
        return self._sync(devices, LeftReason.LEFT, now_ms)

    def _member(
        self, event: MemberStateEvent, content: CallMember | MemberLeave | None, now_ms: int
    ) -> Member | None:
        """The membership ``event`` announces, or None (a leave, or not one to count)."""
        if not isinstance(content, CallMember):
            return None
        if not content.is_room_call:
            self._ignore(Ignored.OTHER_CALL, event.sender)
            return None
        expires_at = content.expires_at(event.origin_server_ts)
        if expires_at <= now_ms:
            self._ignore(Ignored.STALE, event.sender)
            return None
        return Member(
            device=MemberDevice(event.sender, content.device_id),
            member_id=content.member_id(event.sender),
            created=content.created(event.origin_server_ts),
            expires_at=expires_at,
            state_key=event.state_key,
            content=content,
            event_id=event.event_id,
        )

    def _current(self, device: MemberDevice, now_ms: int) -> Member | None:
        """The counted membership of ``device``: its newest unexpired record, sender joined."""
        if device.user_id not in self._joined:
            return None
        best: _Record | None = None
        for record in self._records.values():
            live = record.member.device == device and record.member.expires_at > now_ms
            if live and (best is None or record.seq > best.seq):
                best = record
        return best.member if best else None

    def _sync(
        self, devices: set[MemberDevice], reason: LeftReason, now_ms: int
    ) -> list[MembershipEvent]:
        """Announce what changed for ``devices`` since they were last announced."""
        out: list[MembershipEvent] = []
        for device in sorted(devices):
            old = self._announced.get(device)
            new = self._current(device, now_ms)
            if new is None:
                if old is not None:
                    del self._announced[device]
                    out.append(MemberLeft(old, reason))
                continue
            self._announced[device] = new
            if old is None:
                out.append(MemberJoined(new))
            elif old.session != new.session:
                out.append(MemberRejoined(old, new))
        return out

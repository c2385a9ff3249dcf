"""Incoming pair signaling, checked and put in order, without I/O.

:class:`MeshInbox` takes the to-device messages the transport delivered (sending device verified
by Olm) and the membership table's events, with ``now`` (seconds, any monotonic clock), and
returns each peer's 1:1 call events as :class:`PeerSignal`, in the order the peer sent them.

A message is dropped and counted (:attr:`MeshInbox.dropped`, by :class:`Dropped` reason; the
first of each reason is logged) when it is malformed, too large, for another call or room, for
another session of ours (``dest_session_id``), names another device than the one Olm verified
(``device_id``), carries a call id that is not its pair's, or comes from a session of the
sender that is over (stale). A message from a session we do not know yet waits until that
membership appears (it may arrive before the member event), bounded and for at most
``early_ttl``; then it is dropped.

Ordering: each peer session numbers its messages to us from 0 (``seq``); a new membership of
the device starts a new stream. Session ids are made fresh for each join (ours are random
membership ids): a client that reused one after leaving could have its old messages taken for
the new session's. A duplicate is dropped; a message ahead of a gap is held until the gap
fills, or for ``gap_timeout`` (2 s), after which the missing ones are skipped. The transport
delivers each device's messages in the order it sent them, so a gap is almost always a message
that will never come (a failed Olm decryption, a send that failed): waiting longer only stalls
the pair's setup, and ICE candidates held behind a lost one are still useful once released.
"""

import json
import logging
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from sealcall.signaling import CallEvent, SignalingError, UnknownEventTypeError

from .membership import MAX_MEMBERS, MemberDevice, MemberJoined, MemberLeft, MembershipEvent
from .mesh_signaling import (
    SignalEnvelope,
    conf_id_for_room,
    pair_attempt,
    pair_call_prefix,
    unwrap_signal,
)

logger = logging.getLogger(__name__)

GAP_TIMEOUT = 2.0
MAX_HELD_PER_PEER = 64  # out-of-order messages per peer session; a call's setup sends ~20
EARLY_TTL = 30.0  # a member event normally follows within a sync or two
MAX_EARLY_PER_DEVICE = 32
MAX_EARLY = 256
MAX_SIGNAL_BYTES = 64 * 1024  # a video SDP is a few KiB
MAX_BUFFERED_BYTES = 4 * 1024 * 1024  # held and early messages together
MAX_PAST_SESSIONS = 4  # per device: enough to call a late message stale, not to remember all
MAX_PAST_DEVICES = 4 * MAX_MEMBERS


class Dropped(StrEnum):
    """Why a pair signaling message was not applied."""

    MALFORMED = "malformed"
    NOT_SIGNALING = "not_signaling"  # not a call event type
    TOO_LARGE = "too_large"
    OTHER_CALL = "other_call"  # conf_id or room_id is not this call's
    WRONG_DEST_SESSION = "wrong_dest_session"
    SPOOFED_DEVICE = "spoofed_device"  # device_id is not the Olm-verified sending device
    FOREIGN_CALL_ID = "foreign_call_id"  # not a call id of this pair
    STALE_SESSION = "stale_session"  # the sender's session is over (it rejoined or left)
    DUPLICATE = "duplicate"
    NEVER_MEMBER = "never_member"  # waited early_ttl for a membership that did not come
    EARLY_OVERFLOW = "early_overflow"


class IncomingMessage(Protocol):
    """What the transport's ``DeviceMessage`` offers (``sender_device`` verified by Olm)."""

    @property
    def sender(self) -> str: ...
    @property
    def sender_device(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def content(self) -> Any: ...


@dataclass(frozen=True)
class PeerSignal:
    """One of a peer's call events, in its order: feed it to that pair's 1:1 call."""

    peer: MemberDevice
    session: str  # the peer's membership session that sent it
    seq: int
    attempt: int  # which attempt of the pair's call (see ``pair_call_id``)
    event: CallEvent


@dataclass
class _Item:
    signal: PeerSignal
    size: int
    expires_at: float = 0.0  # early messages only


@dataclass
class _Stream:
    session: str
    next_seq: int = 0
    held: dict[int, _Item] = field(default_factory=dict)
    gap_deadline: float | None = None


class MeshInbox:
    """The pair signaling addressed to one membership session of ours, checked and in order.

    One per own membership session: when we rejoin, make a new one with the new session id.
    Feed it every :class:`~sealcall.group.MembershipEvent` the table returns
    (:meth:`on_membership`), each to-device message of a call event type (:meth:`receive`), and
    call :meth:`tick` at :meth:`next_deadline`. Nothing raises on hostile input.
    """

    def __init__(
        self,
        room_id: str,
        own: MemberDevice,
        own_session: str,
        *,
        gap_timeout: float = GAP_TIMEOUT,
        max_held_per_peer: int = MAX_HELD_PER_PEER,
        early_ttl: float = EARLY_TTL,
        max_early_per_device: int = MAX_EARLY_PER_DEVICE,
        max_early: int = MAX_EARLY,
        max_buffered_bytes: int = MAX_BUFFERED_BYTES,
    ) -> None:
        self.room_id = room_id
        self.conf_id = conf_id_for_room(room_id)
        self.own = own
        self.own_session = own_session
        self.gap_timeout = gap_timeout
        self.max_held_per_peer = max_held_per_peer
        self.early_ttl = early_ttl
        self.max_early_per_device = max_early_per_device
        self.max_early = max_early
        self.max_buffered_bytes = max_buffered_bytes
        self.dropped: Counter[str] = Counter()
        self.gaps_skipped = 0  # missing messages given up on
        self._sessions: dict[MemberDevice, str] = {}  # current member devices' sessions
        self._past: OrderedDict[MemberDevice, deque[str]] = OrderedDict()
        self._streams: dict[MemberDevice, _Stream] = {}
        self._early: dict[MemberDevice, deque[_Item]] = {}
        self._early_count = 0
        self._bytes = 0  # held + early

    # -- queries --------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Messages held (out of order) or waiting (early), in all."""
        return self._early_count + sum(len(s.held) for s in self._streams.values())

    @property
    def buffered_bytes(self) -> int:
        """Their size (content JSON), as counted against ``max_buffered_bytes``."""
        return self._bytes

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has work: an early message expires or a gap times out."""
        times = [s.gap_deadline for s in self._streams.values() if s.gap_deadline is not None]
        times += [q[0].expires_at for q in self._early.values() if q]
        return min(times) if times else None

    # -- inputs ---------------------------------------------------------------------------

    def receive(self, message: IncomingMessage, now: float) -> list[PeerSignal]:
        """A to-device message arrived: what it (and what it unblocks) delivers, in order."""
        out = self.tick(now)
        item = self._check(message)
        if item is None:
            return out
        peer, session = item.signal.peer, item.signal.session
        if self._sessions.get(peer) == session:
            return out + self._apply(item, now)
        past = self._past.get(peer)
        if past is not None and session in past:
            self._drop(Dropped.STALE_SESSION)
            return out
        self._wait(item, now)
        return out

    def on_membership(self, events: list[MembershipEvent], now: float) -> list[PeerSignal]:
        """The membership changed: start, restart or end peers' streams; release early ones."""
        out = self.tick(now)
        for event in events:
            if isinstance(event, MemberJoined):
                device, new = event.member.device, event.member
            elif isinstance(event, MemberLeft):
                device, new = event.member.device, None
            else:
                device, new = event.new.device, event.new
            if device == self.own:
                continue
            self._end_session(device)
            if new is not None:
                self._sessions[device] = new.member_id
                self._streams[device] = _Stream(new.member_id)
            out += self._release(device, now)
        return out

    def tick(self, now: float) -> list[PeerSignal]:
        """Expire early messages and skip gaps that timed out."""
        for device in list(self._early):
            queue = self._early[device]
            while queue and queue[0].expires_at <= now:  # arrival order is expiry order
                self._forget_early(queue.popleft())
                self._drop(Dropped.NEVER_MEMBER)
            if not queue:
                del self._early[device]
        out: list[PeerSignal] = []
        for stream in self._streams.values():
            if stream.gap_deadline is not None and stream.gap_deadline <= now:
                out += self._skip_gap(stream, now)
        return out

    # -- internals ------------------------------------------------------------------------

    def _drop(self, reason: Dropped) -> None:
        if not self.dropped[reason]:  # the first of each kind is logged, the rest counted
            logger.info("pair signaling message dropped (%s)", reason.value)
        self.dropped[reason] += 1

    def _check(self, message: IncomingMessage) -> _Item | None:
        """The message as an item to order, or None (dropped and counted)."""
        try:
            sender, device_id = message.sender, message.sender_device
            if not isinstance(sender, str) or not isinstance(device_id, str):
                raise TypeError
            size = len(json.dumps(message.content))
        except (TypeError, ValueError, RecursionError):
            self._drop(Dropped.MALFORMED)
            return None
        if size > MAX_SIGNAL_BYTES:
            self._drop(Dropped.TOO_LARGE)
            return None
        try:
            envelope, event = unwrap_signal(message.type, message.content)
        except UnknownEventTypeError:
            self._drop(Dropped.NOT_SIGNALING)
            return None
        except SignalingError:
            self._drop(Dropped.MALFORMED)
            return None
        reason = self._refusal(envelope, sender, device_id)
        if reason is not None:
            self._drop(reason)
            return None
        peer = MemberDevice(sender, device_id)
        prefix = pair_call_prefix(
            self.conf_id, (self.own, self.own_session), (peer, envelope.sender_session_id)
        )
        attempt = pair_attempt(event.call_id, prefix)
        if attempt is None:
            self._drop(Dropped.FOREIGN_CALL_ID)
            return None
        signal = PeerSignal(peer, envelope.sender_session_id, envelope.seq, attempt, event)
        return _Item(signal, size)

    def _refusal(self, envelope: SignalEnvelope, sender: str, device_id: str) -> Dropped | None:
        if envelope.conf_id != self.conf_id or envelope.room_id != self.room_id:
            return Dropped.OTHER_CALL
        if envelope.dest_session_id != self.own_session:
            return Dropped.WRONG_DEST_SESSION
        if envelope.device_id != device_id or MemberDevice(sender, device_id) == self.own:
            return Dropped.SPOOFED_DEVICE
        return None

    def _apply(self, item: _Item, now: float) -> list[PeerSignal]:
        """Order ``item`` into its peer's current stream."""
        stream = self._streams[item.signal.peer]
        seq = item.signal.seq
        if seq < stream.next_seq or seq in stream.held:
            self._drop(Dropped.DUPLICATE)
            return []
        if seq > stream.next_seq:
            stream.held[seq] = item
            self._bytes += item.size
            if stream.gap_deadline is None:
                stream.gap_deadline = now + self.gap_timeout
            out: list[PeerSignal] = []
            # Too many held, or too many bytes: the gap is given up on at once.
            while stream.held and (
                len(stream.held) > self.max_held_per_peer or self._bytes > self.max_buffered_bytes
            ):
                out += self._skip_gap(stream, now)
            return out
        stream.next_seq = seq + 1
        return [item.signal, *self._drain(stream, now)]

    def _drain(self, stream: _Stream, now: float) -> list[PeerSignal]:
        out: list[PeerSignal] = []
        while stream.next_seq in stream.held:
            item = stream.held.pop(stream.next_seq)
            self._bytes -= item.size
            out.append(item.signal)
            stream.next_seq += 1
        stream.gap_deadline = now + self.gap_timeout if stream.held else None
        return out

    def _skip_gap(self, stream: _Stream, now: float) -> list[PeerSignal]:
        first = min(stream.held)
        if not self.gaps_skipped:  # the first is logged, the rest counted
            logger.info("pair signaling: skipped %d missing message(s)", first - stream.next_seq)
        self.gaps_skipped += first - stream.next_seq
        stream.next_seq = first
        return self._drain(stream, now)

    def _wait(self, item: _Item, now: float) -> None:
        """Keep a message from a session we do not know yet (bounded, expiring)."""
        queue = self._early.setdefault(item.signal.peer, deque())
        if len(queue) >= self.max_early_per_device:
            self._drop(Dropped.EARLY_OVERFLOW)
            return
        item.expires_at = now + self.early_ttl
        queue.append(item)
        self._early_count += 1
        self._bytes += item.size
        # Over the totals: the oldest early messages go first (the newest may be this one).
        while self._early_count > self.max_early or self._bytes > self.max_buffered_bytes:
            if not self._early:
                break
            device = min(self._early, key=lambda d: self._early[d][0].expires_at)
            self._forget_early(self._early[device].popleft())
            self._drop(Dropped.EARLY_OVERFLOW)
            if not self._early[device]:
                del self._early[device]

    def _forget_early(self, item: _Item) -> None:
        self._early_count -= 1
        self._bytes -= item.size

    def _release(self, device: MemberDevice, now: float) -> list[PeerSignal]:
        """Apply the early messages of ``device``'s current session; drop those of past ones."""
        queue = self._early.pop(device, None)
        if not queue:
            return []
        session = self._sessions.get(device)
        past = self._past.get(device, deque())
        out: list[PeerSignal] = []
        keep: deque[_Item] = deque()
        for item in queue:
            if item.signal.session == session:
                self._forget_early(item)
                out += self._apply(item, now)
            elif item.signal.session in past:
                self._forget_early(item)
                self._drop(Dropped.STALE_SESSION)
            else:
                keep.append(item)  # perhaps a session still to come
        if keep:
            self._early[device] = keep
        return out

    def _end_session(self, device: MemberDevice) -> None:
        """``device``'s current session is over: its held messages go, it becomes past."""
        session = self._sessions.pop(device, None)
        stream = self._streams.pop(device, None)
        if stream is not None:
            for item in stream.held.values():
                self._bytes -= item.size
                self._drop(Dropped.STALE_SESSION)
        if session is None:
            return
        past = self._past.pop(device, None) or deque(maxlen=MAX_PAST_SESSIONS)
        past.append(session)
        self._past[device] = past  # most recent last
        while len(self._past) > MAX_PAST_DEVICES:
            self._past.popitem(last=False)

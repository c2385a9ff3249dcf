"""The asyncio layer of group media keys: one device's keys in one room's call.

:class:`GroupKeys` binds the sans-I/O :class:`~sealcall.e2ee.GroupKeySender` (our key) and
:class:`~sealcall.e2ee.GroupKeyRing` (everyone else's) to the Matrix transport's Olm to-device
messages, a :class:`~sealcall.session.GroupMembership` and real timers, as
:class:`~sealcall.session.VoIP` binds the call manager: one worker task takes one input at a time
(a membership change, a to-device message, a timer) and carries out what the cores answer.
Messages go out in order on a second task, so a slow Olm session set-up never holds up intake.

A key or key request from a device that is not (yet) a member waits, bounded, for the membership
change that usually follows it within the same sync; if none comes within ``early_ttl`` it is
handed to the cores, which refuse and count it. A key that arrived in plaintext never reaches the
transport's listeners; it is seen here only to be counted (``plaintext``).

Thread safety: the key ring is not thread-safe, and frames are decrypted on aiortc's decoder
thread. Decrypt with :meth:`GroupKeys.unprotect` (it holds :attr:`GroupKeys.lock`), or hold
``lock`` around any use of :meth:`GroupKeys.receiver`'s receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from nio import UnknownToDeviceEvent

from sealcall.e2ee import (
    Codec,
    GroupKey,
    GroupKeyRing,
    GroupKeySender,
    MemberDevice,
    RequestKey,
    SendKey,
    ToDeviceSender,
    UseKey,
    unprotect_frame,
)
from sealcall.e2ee.group_key_ring import DEFAULT_GRACE_PERIOD, DEFAULT_REQUEST_DELAY
from sealcall.e2ee.group_keys import DEFAULT_USE_DELAY, DEFAULT_YOUNG_KEY_AGE
from sealcall.sframe import SFrameReceiver
from sealcall.sframe.errors import SFrameError, UnknownKeyError
from sealcall.signaling.errors import InvalidEventError
from sealcall.signaling.key_events import (
    ENCRYPTION_KEY_EVENT,
    ENCRYPTION_KEY_REQUEST_EVENT,
    JSSDK_ENCRYPTION_KEY_EVENT,
    EncryptionKeyContent,
    EncryptionKeyRequest,
)
from sealcall.transport.matrix import DeviceMessage, MatrixTransport

from .deadline_timer import DeadlineTimer
from .group_membership import GroupMembership
from .safe_emitter import SafeEventEmitter

logger = logging.getLogger(__name__)

KEY_TYPES = (ENCRYPTION_KEY_EVENT, JSSDK_ENCRYPTION_KEY_EVENT)
DEFAULT_EARLY_TTL = 5.0  # a membership follows its key within one sync: seconds are plenty
MAX_EARLY = 64

SendKeyListener = Callable[[GroupKey], None]


class UnknownSenderError(SFrameError):
    """A frame attributed to a device that is not a member of the call: no key can open it."""


@dataclass
class _Early:
    """A key or request from a device that was not a member when it arrived."""

    origin: ToDeviceSender
    parsed: EncryptionKeyContent | EncryptionKeyRequest
    until: float


class GroupKeys(SafeEventEmitter):
    """Our media key and every other member device's, for one room's call.

    Driven by ``membership`` (a joined :class:`GroupMembership`, or None: then call
    :meth:`set_members` with each change). Events: ``send_key_changed(key)`` (a
    :class:`~sealcall.e2ee.GroupKey`: encrypt our frames with it from now on) and
    ``key_received(user_id, device_id, index)``. ``on_use_key`` is called like
    ``send_key_changed``, before it. ``counters`` counts what was refused, dropped and done.

    ``use_delay`` and ``young_key_age`` go to the :class:`~sealcall.e2ee.GroupKeySender`,
    ``grace_period`` and ``request_delay`` to the :class:`~sealcall.e2ee.GroupKeyRing`;
    ``early_ttl`` is how long a message from a device not yet a member waits for its
    membership. ``clock`` (seconds, monotonic) exists for tests; timers run on the event loop.
    """

    def __init__(
        self,
        transport: MatrixTransport,
        room_id: str,
        membership: GroupMembership | None = None,
        *,
        member_id: str | None = None,
        on_use_key: SendKeyListener | None = None,
        use_delay: float = DEFAULT_USE_DELAY,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        request_delay: float = DEFAULT_REQUEST_DELAY,
        early_ttl: float = DEFAULT_EARLY_TTL,
        young_key_age: float = DEFAULT_YOUNG_KEY_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if membership is None and member_id is None:
            raise ValueError("without a GroupMembership, member_id (our membershipID) is needed")
        self.transport = transport
        self.room_id = room_id
        self.membership = membership
        self._member_id = member_id
        self._on_use_key = on_use_key
        own = (transport.user_id, transport.device_id)
        self.sender = GroupKeySender(room_id, own, use_delay=use_delay, young_key_age=young_key_age)
        self.ring = GroupKeyRing(
            room_id, own, grace_period=grace_period, request_delay=request_delay
        )
        self.lock = threading.Lock()
        """Held around every use of the ring (and its receivers): decrypt under it."""
        self.send_key: GroupKey | None = None
        self._early_ttl = early_ttl
        self._early: deque[_Early] = deque()
        self._unknown: set[tuple[str, str]] = set()  # senders whose frames named a missing key
        self._clock = clock
        self._counters: Counter[str] = Counter()
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._outbox: asyncio.Queue[tuple[list[tuple[str, str]], str, dict[str, Any]] | None] = (
            asyncio.Queue()
        )
        self._worker: asyncio.Task[None] | None = None
        self._sending: asyncio.Task[None] | None = None
        self._timer = DeadlineTimer(lambda: self._queue.put_nowait(("timer", None)))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._own_session: str | None = None  # our membershipID our keys last went out under
        self._closed = False

    # -- queries ---------------------------------------------------------------------------

    @property
    def member_id(self) -> str:
        """Our membershipID, as the other devices see it in our member event."""
        if self.membership is not None and self.membership.own.membership_id is not None:
            return self.membership.own.membership_id
        if self._member_id is None:
            raise RuntimeError("not joined: no membershipID yet")
        return self._member_id

    @property
    def counters(self) -> Counter[str]:
        """Refusals and drops by reason, and what was done: the ring's (``plaintext``,
        ``not_member``, ``accepted``, ...), the sender's (``rotations``, ``request_not_member``,
        ...) and this layer's (``malformed``, ``send_failed``, ``keys_sent``, ...)."""
        return self.ring.counters + self.sender.counters + self._counters

    @property
    def waiting(self) -> int:
        """Keys and requests from devices not (yet) members, waiting for their membership."""
        return len(self._early)

    def receiver(self, user_id: str, device_id: str) -> SFrameReceiver | None:
        """The SFrame receiver for this member device's frames; use it only under :attr:`lock`."""
        with self.lock:
            return self.ring.receiver(user_id, device_id)

    def kids(self, user_id: str, device_id: str) -> list[int]:
        """The key indices this member device's frames may carry now."""
        with self.lock:
            return self.ring.kids(user_id, device_id)

    def receive_key(self, user_id: str, device_id: str, index: int) -> bytes | None:
        """A member device's key under ``index`` (None: not a member, or not held), for a
        receiver elsewhere (:meth:`GroupKeyRing.key`). Never log it."""
        with self.lock:
            return self.ring.key(user_id, device_id, index)

    def unprotect(self, user_id: str, device_id: str, codec: Codec, data: bytes) -> bytes:
        """Decrypt a frame from this member device; safe from any thread.

        Raises :class:`UnknownSenderError` for a non-member, :class:`UnknownKeyError` for a key
        we lack (it is then asked for), and the other SFrame errors as
        :func:`~sealcall.e2ee.unprotect_frame` does.
        """
        with self.lock:
            receiver = self.ring.receiver(user_id, device_id)
            if receiver is None:
                raise UnknownSenderError(f"{user_id} {device_id} is not a member of the call")
            try:
                return unprotect_frame(codec, receiver, data)
            except UnknownKeyError:
                # One queued input per sender, however many frames fail before it is taken.
                pending = (user_id, device_id) in self._unknown
                if not pending and self._loop is not None and not self._closed:
                    self._unknown.add((user_id, device_id))
                    self._loop.call_soon_threadsafe(
                        self._queue.put_nowait, ("unknown", (user_id, device_id))
                    )
                raise

    # -- commands --------------------------------------------------------------------------

    async def start(self, members: Iterable[MemberDevice] | None = None) -> None:
        """Make our first key, send it to the members and start taking keys.

        With a ``membership`` its current members are used (it must have joined) and followed;
        otherwise ``members``.
        """
        if self._worker is not None or self._closed:
            raise RuntimeError("start() once per GroupKeys")
        if self.membership is not None:
            if self.membership.own.membership_id is None:
                raise RuntimeError("start() after the GroupMembership has joined")
            for name in ("member_joined", "member_left", "member_rejoined"):
                self.membership.on(name, self._on_membership_change)
            self.membership.on("state_changed", self._on_own_state)
            self._own_session = self.membership.own.membership_id
            members = self._members_of(self.membership)
        self._loop = asyncio.get_running_loop()
        self.transport.add_to_device_listener(self._on_message)
        self.transport.client.add_to_device_callback(self._on_plaintext, UnknownToDeviceEvent)
        self._sending = asyncio.ensure_future(self._send_loop())
        self._worker = asyncio.ensure_future(self._work())
        await self._submit("start", list(members or ()))

    def set_members(self, members: Iterable[MemberDevice]) -> None:
        """The call's other member devices changed (without a ``membership``)."""
        if not self._closed:
            self._queue.put_nowait(("members", list(members)))

    async def close(self) -> None:
        """Stop: take nothing more, send what is queued, forget nothing already held."""
        if self._closed:
            return
        self._closed = True
        if self.membership is not None:
            for name in ("member_joined", "member_left", "member_rejoined"):
                with contextlib.suppress(KeyError):
                    self.membership.remove_listener(name, self._on_membership_change)
            with contextlib.suppress(KeyError):
                self.membership.remove_listener("state_changed", self._on_own_state)
        self.transport.remove_to_device_listener(self._on_message)
        client = self.transport.client
        client.to_device_callbacks = [
            c for c in client.to_device_callbacks if c.func != self._on_plaintext
        ]
        self._timer.cancel()
        if self._worker is not None:
            await self._queue.put(("stop", None))
            await self._worker
        if self._sending is not None:
            await self._outbox.put(None)
            await self._sending

    async def _submit(self, kind: str, subject: Any) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((kind, (subject, done)))
        await done

    # -- inputs ----------------------------------------------------------------------------

    @staticmethod
    def _members_of(membership: GroupMembership) -> list[MemberDevice]:
        return [
            MemberDevice(m.device.user_id, m.device.device_id, m.member_id)
            for m in membership.members()
        ]

    def _on_membership_change(self, *_: Any) -> None:
        if not self._closed and self.membership is not None:
            self._queue.put_nowait(("members", self._members_of(self.membership)))

    def _on_own_state(self, *_: Any) -> None:
        # Our membership was sent again under a new membershipID (it had vanished): the
        # members reset our keys when they see it.
        if self._closed or self.membership is None:
            return
        session = self.membership.own.membership_id
        if session is not None and session != self._own_session:
            self._own_session = session
            self._queue.put_nowait(("own_session", None))

    def _on_message(self, message: DeviceMessage) -> None:
        if self._closed:
            return
        if message.type not in (*KEY_TYPES, ENCRYPTION_KEY_REQUEST_EVENT):
            return
        # The transport calls its listeners only for Olm-decrypted messages from the device
        # the Olm session belongs to.
        origin = ToDeviceSender(message.sender, message.sender_device, olm_encrypted=True)
        self._queue.put_nowait(("message", (origin, message.type, message.content)))

    def _on_plaintext(self, event: UnknownToDeviceEvent) -> None:
        # Dropped (and counted) by the transport too; seen here to count it against this call.
        if self._closed or event.type not in (*KEY_TYPES, ENCRYPTION_KEY_REQUEST_EVENT):
            return
        content = event.source.get("content")
        origin = ToDeviceSender(str(event.sender), None, olm_encrypted=False)
        self._queue.put_nowait(("message", (origin, str(event.type), content)))

    async def _work(self) -> None:
        while True:
            kind, subject = await self._queue.get()
            if kind == "stop":
                return
            done: asyncio.Future[None] | None = None
            if kind == "start":
                subject, done = subject
            try:
                self._take(kind, subject)
            except Exception as error:
                if done is not None:
                    done.set_exception(error)
                else:
                    logger.exception("group keys input %s failed", kind)
            else:
                if done is not None:
                    done.set_result(None)
            self._schedule_timer()

    def _take(self, kind: str, subject: Any) -> None:
        now = self._clock()
        if kind == "start":
            with self.lock:
                self.ring.set_members(subject, now)
            self._run(self.sender.start(subject, now))
        elif kind == "members":
            with self.lock:
                self.ring.set_members(subject, now)
            self._run(self.sender.update_members(subject, now))
            early, self._early = self._early, deque()
            for item in early:  # those still not members wait on
                self._offer(item.origin, item.parsed, now, until=item.until)
        elif kind == "own_session":
            self._run(self.sender.share_again())
        elif kind == "message":
            origin, event_type, content = subject
            self._on_content(origin, event_type, content, now)
        elif kind == "unknown":
            with self.lock:
                self._unknown.discard(subject)
                user_id, device_id = subject
                requests = self.ring.on_unknown_key(user_id, device_id, now)
            self._run(requests)
        elif kind == "timer":
            while self._early and self._early[0].until <= now:
                item = self._early.popleft()
                self._offer(item.origin, item.parsed, now, until=None)
            self._run(self.sender.handle_timer(now))
            with self.lock:
                requests = self.ring.handle_timer(now)
            self._run(requests)

    def _on_content(
        self, origin: ToDeviceSender, event_type: str, content: Any, now: float
    ) -> None:
        parsed: EncryptionKeyContent | EncryptionKeyRequest
        try:
            if event_type == ENCRYPTION_KEY_REQUEST_EVENT:
                parsed = EncryptionKeyRequest.parse(content)
            else:
                parsed = EncryptionKeyContent.parse(content)
        except InvalidEventError as error:
            self._counters["malformed"] += 1
            logger.info("group keys: malformed %s dropped (%s)", event_type, error.args[0])
            return
        if parsed.room_id != self.room_id:
            return  # another call's (each room's GroupKeys hears every device message)
        self._offer(origin, parsed, now, until=now + self._early_ttl)

    def _offer(
        self,
        origin: ToDeviceSender,
        parsed: EncryptionKeyContent | EncryptionKeyRequest,
        now: float,
        *,
        until: float | None,
    ) -> None:
        """Hand a message to the cores, or keep it while its sender may be a member soon."""
        device = origin.device
        if until is not None and device is not None and not self._is_member(device, parsed):
            self._early.append(_Early(origin, parsed, until))
            if len(self._early) > MAX_EARLY:
                dropped = self._early.popleft()
                self._offer(dropped.origin, dropped.parsed, now, until=None)
            return
        if isinstance(parsed, EncryptionKeyRequest):
            self._run(
                self.sender.on_key_request(
                    origin,
                    room_id=parsed.room_id,
                    key_owner=parsed.key_owner,
                    member_id=parsed.member_id,
                    now=now,
                )
            )
            return
        with self.lock:
            verdict = self.ring.on_key(
                origin,
                room_id=parsed.room_id,
                member_id=parsed.member_id,
                claimed_device_id=parsed.claimed_device_id,
                key=parsed.key,
                now=now,
            )
        if verdict.value == "accepted" and device is not None:
            self._emit("key_received", device[0], device[1], parsed.key.index)

    def _is_member(
        self, device: tuple[str, str], parsed: EncryptionKeyContent | EncryptionKeyRequest
    ) -> bool:
        members = {m.device: m for m in self.sender.members}
        member = members.get(device)
        if member is None:
            return False
        return parsed.member_id is None or parsed.member_id == member.membership_id

    # -- outputs ---------------------------------------------------------------------------

    def _run(self, actions: Iterable[SendKey | UseKey | RequestKey]) -> None:
        for action in actions:
            if isinstance(action, UseKey):
                self.send_key = action.key
                if self._on_use_key is not None:
                    try:
                        self._on_use_key(action.key)
                    except Exception:
                        logger.exception("the on_use_key callback failed")
                self._emit("send_key_changed", action.key)
                self._counters["keys_used"] += 1
            elif isinstance(action, SendKey):
                content = EncryptionKeyContent(self.room_id, self.member_id, action.key).to_dict()
                targets = [(m.user_id, m.device_id) for m in action.targets]
                self._outbox.put_nowait((targets, ENCRYPTION_KEY_EVENT, content))
            else:
                owner = (action.sender.user_id, action.sender.device_id)
                request = EncryptionKeyRequest(self.room_id, self.member_id, owner)
                self._outbox.put_nowait(([owner], ENCRYPTION_KEY_REQUEST_EVENT, request.to_dict()))

    async def _send_loop(self) -> None:
        while True:
            item = await self._outbox.get()
            if item is None:
                return
            targets, event_type, content = item
            try:
                sent = await self.transport.send_to_devices(targets, event_type, content)
            except Exception as error:
                # A lost key is asked for again by its receiver (GroupKeyRing's requests).
                self._counters["send_failed"] += 1
                logger.warning("sending %s failed: %s", event_type, type(error).__name__)
                sent = getattr(error, "sent", 0)
            kind = "keys_sent" if event_type != ENCRYPTION_KEY_REQUEST_EVENT else "requests_made"
            self._counters[kind] += sent

    def _schedule_timer(self) -> None:
        if self._closed:
            self._timer.cancel()
            return
        with self.lock:
            ring_deadline = self.ring.next_deadline()
        deadlines = [self.sender.next_deadline(), ring_deadline]
        if self._early:
            deadlines.append(self._early[0].until)
        self._timer.arm(deadlines, self._clock(), slack=0.001)

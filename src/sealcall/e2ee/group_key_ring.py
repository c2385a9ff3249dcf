"""Group media keys, the receiving side: one key ring, one ``SFrameReceiver``, per sender device.

A key is accepted only when the transport says it came in an Olm-encrypted to-device message
whose sending device is the current member device the key claims to be from; everything else
is refused and counted in :attr:`GroupKeyRing.counters` (one log line, never the key).

Each sender has its own :class:`~sealcall.sframe.SFrameReceiver`, so a KID means "that
sender's key number KID" and one sender's keys can never decrypt another's frames: the media
layer decrypts a frame from a connection (mesh) or a track (SFU) with
:meth:`GroupKeyRing.receiver` of the device that connection or track belongs to.

When a newer key arrives, the sender's older keys stay usable for ``grace_period`` seconds
(frames in flight, the sender's switch delay), then disappear. A sender whose key is missing
(none after ``request_delay``, or a frame under an unknown KID) produces a :class:`RequestKey`,
with backoff and at most ``max_requests`` per sender until a key arrives.

Not thread-safe, like every pure core: the binding serialises calls and decryptions.
"""

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from sealcall.sframe import CipherSuite, SFrameReceiver
from sealcall.sframe.replay import DEFAULT_REPLAY_WINDOW

from .group_keys import (
    DEFAULT_MAX_MEMBERS,
    KEY_INDEX_COUNT,
    DeviceKey,
    GroupKey,
    MemberDevice,
    RequestKey,
    ToDeviceSender,
    members_by_device,
)

DEFAULT_GRACE_PERIOD = 5.0  # longer than the sender's use delay (1 s) plus delivery
DEFAULT_REQUEST_DELAY = 2.0
DEFAULT_MAX_REQUESTS = 5
DEFAULT_MAX_KEYS_PER_SENDER = 4

logger = logging.getLogger(__name__)


class KeyVerdict(StrEnum):
    """What :meth:`GroupKeyRing.on_key` did with a key; every value but two is a refusal."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    PLAINTEXT = "plaintext"
    WRONG_ROOM = "wrong_room"
    NOT_MEMBER = "not_member"
    WRONG_DEVICE = "wrong_device"
    STALE_MEMBER = "stale_member"


@dataclass
class _SenderRing:
    member: MemberDevice
    receiver: SFrameReceiver
    keys: dict[int, bytes] = field(default_factory=dict, repr=False)
    expires: dict[int, float] = field(default_factory=dict)  # retired keys only
    newest: int | None = None
    next_request_at: float | None = None
    requests: int = 0


def _is_newer(index: int, than: int) -> bool:
    """True if ``index`` follows ``than`` in the sender's mod-256 sequence (or replaces it)."""
    return 0 <= (index - than) % KEY_INDEX_COUNT < KEY_INDEX_COUNT // 2


class GroupKeyRing:
    """The media keys of every other member device of one call, by sender.

    ``own`` is our ``(user_id, device_id)`` (never a sender here). ``grace_period`` must exceed
    the senders' use delay (ours: 1 s) plus delivery time, or frames under the old key would be
    refused before the sender switches. Call :meth:`set_members` on
    every membership change, :meth:`on_key` for each received key, :meth:`on_unknown_key` when a
    frame names a KID we lack, and :meth:`handle_timer` at :meth:`next_deadline`.
    """

    def __init__(
        self,
        room_id: str,
        own: DeviceKey,
        *,
        suite: int = CipherSuite.AES_128_GCM_SHA256_128,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        request_delay: float = DEFAULT_REQUEST_DELAY,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        max_senders: int = DEFAULT_MAX_MEMBERS,
        max_keys_per_sender: int = DEFAULT_MAX_KEYS_PER_SENDER,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
    ) -> None:
        if grace_period < 0 or request_delay <= 0 or max_requests < 0:
            raise ValueError("grace_period >= 0, request_delay > 0 and max_requests >= 0")
        if max_senders < 1 or max_keys_per_sender < 1:
            raise ValueError("max_senders and max_keys_per_sender must be >= 1")
        self._room_id = room_id
        self._own = own
        self._suite = suite
        self._grace = grace_period
        self._request_delay = request_delay
        self._max_requests = max_requests
        self._max_senders = max_senders
        self._max_keys = max_keys_per_sender
        self._replay_window = replay_window
        self._rings: dict[DeviceKey, _SenderRing] = {}
        self.counters: Counter[str] = Counter()
        """Refusals and drops by reason (``plaintext``, ``not_member``, ...), and acceptances."""

    def __repr__(self) -> str:
        return f"GroupKeyRing(senders={len(self._rings)})"

    @property
    def senders(self) -> list[MemberDevice]:
        """The member devices whose keys this ring holds or waits for."""
        return sorted(r.member for r in self._rings.values())

    def receiver(self, user_id: str, device_id: str) -> SFrameReceiver | None:
        """The SFrame receiver for frames from this device, or None for a non-member."""
        ring = self._rings.get((user_id, device_id))
        return None if ring is None else ring.receiver

    def kids(self, user_id: str, device_id: str) -> list[int]:
        """The key indices (KIDs) this device's frames may carry now."""
        ring = self._rings.get((user_id, device_id))
        return [] if ring is None else ring.receiver.kids()

    @property
    def suite(self) -> int:
        """The SFrame cipher suite of every key here."""
        return self._suite

    def key(self, user_id: str, device_id: str, index: int) -> bytes | None:
        """The base key a member device sends with under ``index`` (None: a non-member, or no
        such key held), for a receiver elsewhere (the web page's worker). Never log it."""
        ring = self._rings.get((user_id, device_id))
        return None if ring is None else ring.keys.get(index)

    def set_members(self, members: Iterable[MemberDevice], now: float) -> None:
        """Apply the current membership: new senders get an empty ring, departed ones lose theirs.

        A device with a new ``membership_id`` rejoined: its old keys go at once.
        """
        current = members_by_device(members, self._own, self._max_senders, self.counters)
        for device in list(self._rings):
            if current.get(device) != self._rings[device].member:
                del self._rings[device]
        for device, member in current.items():
            if device not in self._rings:
                self._rings[device] = _SenderRing(
                    member,
                    SFrameReceiver(self._suite, replay_window=self._replay_window),
                    next_request_at=now + self._request_delay,
                )

    def on_key(
        self,
        origin: ToDeviceSender,
        *,
        room_id: str,
        member_id: str | None,
        claimed_device_id: str | None,
        key: GroupKey,
        now: float,
    ) -> KeyVerdict:
        """Take a key from a to-device message; return what became of it.

        ``origin`` comes from the transport's Olm decryption, never from the content.
        ``member_id`` and ``claimed_device_id`` are what the content claims (MSC4143
        ``member_id``, matrix-js-sdk ``member.claimed_device_id``); each, when present, must
        match the sending device's current membership.
        """
        verdict, ring = self._check(origin, room_id, member_id, claimed_device_id)
        if ring is not None:
            verdict = self._store(ring, key, now)
        self.counters[verdict.value] += 1
        if verdict not in (KeyVerdict.ACCEPTED, KeyVerdict.DUPLICATE):
            logger.info("group keys: key refused (%s)", verdict.value)
        return verdict

    def _check(
        self,
        origin: ToDeviceSender,
        room_id: str,
        member_id: str | None,
        claimed_device_id: str | None,
    ) -> tuple[KeyVerdict, _SenderRing | None]:
        device = origin.device
        if device is None:
            return KeyVerdict.PLAINTEXT, None
        if room_id != self._room_id:
            return KeyVerdict.WRONG_ROOM, None
        if claimed_device_id is not None and claimed_device_id != device[1]:
            return KeyVerdict.WRONG_DEVICE, None
        ring = self._rings.get(device)
        if ring is None:
            return KeyVerdict.NOT_MEMBER, None
        if member_id is not None and member_id != ring.member.membership_id:
            return KeyVerdict.STALE_MEMBER, None
        return KeyVerdict.ACCEPTED, ring

    def _store(self, ring: _SenderRing, key: GroupKey, now: float) -> KeyVerdict:
        index = key.index
        if ring.keys.get(index) == key.key:
            return KeyVerdict.DUPLICATE
        ring.receiver.add_key(index, key.key)
        ring.keys[index] = key.key
        ring.expires.pop(index, None)
        if ring.newest is None or _is_newer(index, ring.newest):
            ring.newest = index
            for other in ring.keys:
                if other != index and other not in ring.expires:
                    self._retire(ring, other, now + self._grace)
        else:
            # A late key older than the newest: usable only for frames still in flight.
            self._retire(ring, index, now + self._grace)
        while len(ring.keys) > self._max_keys:
            oldest = min(ring.expires, key=lambda k: ring.expires[k])
            self._forget(ring, oldest)
            self.counters["excess_keys"] += 1
        ring.requests = 0
        ring.next_request_at = None
        return KeyVerdict.ACCEPTED

    @staticmethod
    def _retire(ring: _SenderRing, index: int, expires_at: float) -> None:
        ring.receiver.retire_key(index, expires_at)
        ring.expires[index] = expires_at

    @staticmethod
    def _forget(ring: _SenderRing, index: int) -> None:
        ring.receiver.remove_key(index)
        ring.keys.pop(index, None)
        ring.expires.pop(index, None)

    def on_unknown_key(self, user_id: str, device_id: str, now: float) -> list[RequestKey]:
        """A frame from this device named a KID we lack: ask for the key, unless asked lately."""
        ring = self._rings.get((user_id, device_id))
        if ring is None:
            self.counters["unknown_sender_frame"] += 1
            return []
        if ring.next_request_at is None:
            ring.next_request_at = now
        return self._due_requests(now, [ring])

    def _due_requests(self, now: float, rings: Iterable[_SenderRing]) -> list[RequestKey]:
        actions = []
        for ring in rings:
            if ring.next_request_at is None or ring.next_request_at > now:
                continue
            if ring.requests >= self._max_requests:
                ring.next_request_at = None
                self.counters["requests_exhausted"] += 1
                logger.info("group keys: no key from a member after %d requests", ring.requests)
                continue
            ring.requests += 1
            ring.next_request_at = now + self._request_delay * 2**ring.requests
            self.counters["requests_sent"] += 1
            actions.append(RequestKey(ring.member))
        return actions

    def handle_timer(self, now: float) -> list[RequestKey]:
        """Forget keys whose grace window ended; ask for keys still missing."""
        for ring in self._rings.values():
            for index in ring.receiver.expire(now):
                ring.keys.pop(index, None)
                ring.expires.pop(index, None)
        return self._due_requests(now, self._rings.values())

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` next has work to do, or None."""
        times: list[float] = []
        for ring in self._rings.values():
            if ring.expires:
                times.append(min(ring.expires.values()))
            if ring.next_request_at is not None:
                times.append(ring.next_request_at)
        return min(times) if times else None

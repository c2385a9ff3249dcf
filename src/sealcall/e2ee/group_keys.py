"""Group media keys, the sending side: one random SFrame base key per sending device (sans-I/O).

Each sending device has a random 32-byte base key with an index 0..255, the SFrame KID. The key
goes to every current member device over Olm; the group layer turns :class:`SendKey` into
``org.matrix.msc4143.rtc.encryption_key`` to-device messages and :class:`UseKey` into
``SFrameSender.set_key`` (or ``MediaKeys.set_send_key``).

- On every leave a new key is made and sent to the remaining member devices at once, but frames
  are encrypted with it only ``use_delay`` seconds later, so that it has arrived before the first
  frame needs it. The departed device never receives it.
- On a join, a key younger than ``young_key_age`` is sent to the joiner alone; an older one is
  replaced by a new key for everyone (the joiner then cannot read what was sent long before).
- A key request is answered only for a current member device, only with keys that device was
  sent before (a lost message is repeated; a joiner never gets a key older than its join), at
  most once per ``answer_interval`` per device.

Like every pure core here: ``now`` in, actions out; :meth:`GroupKeySender.next_deadline` says
when :meth:`GroupKeySender.handle_timer` has work to do. Key bytes never appear in ``repr`` or logs.
"""

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

GROUP_KEY_LENGTH = 32
KEY_INDEX_COUNT = 256  # the index is one byte: the SFrame KID of the sender's key
DEFAULT_USE_DELAY = 1.0  # matrix-js-sdk's default; MSC4143 suggests up to 5 s
DEFAULT_YOUNG_KEY_AGE = 10.0  # MSC4143 keyRotationGracePeriod
DEFAULT_ANSWER_INTERVAL = 1.0
DEFAULT_MAX_MEMBERS = 128
MAX_PENDING_KEYS = 8

logger = logging.getLogger(__name__)

DeviceKey = tuple[str, str]
"""A device as ``(user_id, device_id)``."""


@dataclass(frozen=True, order=True)
class MemberDevice:
    """One current member device of a call: whose membership ``membership_id`` names.

    ``membership_id`` is the member event's ``membershipID`` (MSC4143's ``member_id``): a device
    that rejoins gets a new one, and is then a new member.
    """

    user_id: str
    device_id: str
    membership_id: str

    @property
    def device(self) -> DeviceKey:
        """``(user_id, device_id)``."""
        return (self.user_id, self.device_id)


@dataclass(frozen=True)
class ToDeviceSender:
    """Who sent a to-device message, as the transport's Olm decryption established it.

    ``olm_encrypted`` is False for a to-device message that arrived in plaintext; its
    ``device_id`` is then whatever it claimed (or None) and nothing it carries is trusted.
    """

    user_id: str
    device_id: str | None
    olm_encrypted: bool

    @property
    def device(self) -> DeviceKey | None:
        """``(user_id, device_id)`` for an Olm-authenticated device, else None."""
        if not self.olm_encrypted or self.device_id is None:
            return None
        return (self.user_id, self.device_id)


@dataclass(frozen=True, repr=False)
class GroupKey:
    """A sender's SFrame base key and its index (the KID). ``repr`` never shows the key."""

    index: int
    key: bytes

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not 0 <= self.index < KEY_INDEX_COUNT:
            raise ValueError(f"key index must be in 0 .. {KEY_INDEX_COUNT - 1}")
        if not isinstance(self.key, bytes) or len(self.key) != GROUP_KEY_LENGTH:
            raise ValueError(f"a group key is {GROUP_KEY_LENGTH} bytes")

    def __repr__(self) -> str:
        return f"GroupKey(index={self.index}, key=<secret>)"


@dataclass(frozen=True)
class SendKey:
    """Send ``key`` to each of ``targets`` as an Olm-encrypted to-device message."""

    key: GroupKey
    targets: tuple[MemberDevice, ...]


@dataclass(frozen=True)
class UseKey:
    """Encrypt our frames with ``key`` from the next frame on (``SFrameSender.set_key``)."""

    key: GroupKey


@dataclass(frozen=True)
class RequestKey:
    """Ask ``sender`` for its current key (``org.sealcall.encryption_key_request``)."""

    sender: MemberDevice


@dataclass
class _OwnKey:
    key: GroupKey = field(repr=False)
    created_at: float
    use_at: float
    # Who was sent this key: a key request is answered only with keys its sender already had.
    shared: set[MemberDevice] = field(default_factory=set)

    def send(self, targets: Iterable[MemberDevice]) -> list["SendKey | UseKey"]:
        targets = tuple(sorted(targets))
        self.shared.update(targets)
        return [SendKey(self.key, targets)] if targets else []


def members_by_device(
    members: Iterable[MemberDevice], own: DeviceKey, limit: int, counters: Counter[str]
) -> dict[DeviceKey, MemberDevice]:
    """The other member devices, one per device, at most ``limit`` (the rest counted, dropped)."""
    out: dict[DeviceKey, MemberDevice] = {}
    excess = 0
    for member in sorted(members):
        if member.device == own:
            continue
        if member.device not in out and len(out) >= limit:
            excess += 1
            continue
        out[member.device] = member
    if excess:
        counters["excess_members"] += excess
        logger.info("group keys: %d member devices beyond the limit of %d ignored", excess, limit)
    return out


class GroupKeySender:
    """Our sending device's media keys: when to make one, whom to send it to, when to use it.

    ``room_id`` is the call's room, ``own`` our ``(user_id, device_id)``; ``random_bytes``
    exists for tests. Call
    :meth:`start` once with the members at the time we joined, then :meth:`update_members` on
    every membership change, :meth:`on_key_request` for each key request and
    :meth:`handle_timer` at :meth:`next_deadline`.
    """

    def __init__(
        self,
        room_id: str,
        own: DeviceKey,
        *,
        use_delay: float = DEFAULT_USE_DELAY,
        young_key_age: float = DEFAULT_YOUNG_KEY_AGE,
        answer_interval: float = DEFAULT_ANSWER_INTERVAL,
        max_members: int = DEFAULT_MAX_MEMBERS,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if use_delay < 0 or young_key_age < 0 or answer_interval < 0 or max_members < 1:
            raise ValueError("delays must be >= 0 and max_members >= 1")
        self._room_id = room_id
        self._own = own
        self._use_delay = use_delay
        self._young_key_age = young_key_age
        self._answer_interval = answer_interval
        self._max_members = max_members
        self._random = random_bytes
        self._members: dict[DeviceKey, MemberDevice] = {}
        self._current: _OwnKey | None = None
        self._pending: list[_OwnKey] = []  # made and sent, not yet in use; oldest first
        self._last_answer: dict[DeviceKey, float] = {}
        self.counters: Counter[str] = Counter()
        """What was refused or dropped, by reason (``request_not_member``, ...), and rotations."""

    def __repr__(self) -> str:
        return (
            f"GroupKeySender(index={self.current_index}, members={len(self._members)}, "
            f"pending={len(self._pending)})"
        )

    @property
    def started(self) -> bool:
        """True after :meth:`start`."""
        return self._current is not None

    @property
    def current_index(self) -> int | None:
        """The index (KID) our frames carry now, or None before :meth:`start`."""
        return None if self._current is None else self._current.key.index

    @property
    def members(self) -> list[MemberDevice]:
        """The other member devices our keys go to."""
        return sorted(self._members.values())

    def start(self, members: Iterable[MemberDevice], now: float) -> list[SendKey | UseKey]:
        """Make our first key, use it at once (no frame was sent before) and send it to all."""
        if self._current is not None:
            raise RuntimeError("GroupKeySender.start called twice")
        self._members = members_by_device(members, self._own, self._max_members, self.counters)
        first = _OwnKey(GroupKey(0, self._random(GROUP_KEY_LENGTH)), now, now)
        self._current = first
        return [UseKey(first.key), *first.send(self._members.values())]

    def _newest(self) -> _OwnKey:
        assert self._current is not None, "GroupKeySender.start was not called"
        return self._pending[-1] if self._pending else self._current

    def _rotate(self, now: float) -> list[SendKey | UseKey]:
        index = (self._newest().key.index + 1) % KEY_INDEX_COUNT
        made = _OwnKey(GroupKey(index, self._random(GROUP_KEY_LENGTH)), now, now + self._use_delay)
        self._pending.append(made)
        if len(self._pending) > MAX_PENDING_KEYS:
            # A newer key supersedes an older pending one, which was never used: drop it.
            self._pending.pop(0)
            self.counters["pending_dropped"] += 1
        self.counters["rotations"] += 1
        return made.send(self._members.values()) + self.handle_timer(now)

    def update_members(self, members: Iterable[MemberDevice], now: float) -> list[SendKey | UseKey]:
        """Apply the current membership: rotate on any leave, share or rotate on a join.

        A device that rejoined (same device, new ``membership_id``) counts as a joiner, not a
        leaver: it held our key before and gains nothing from a rotation.
        """
        new = members_by_device(members, self._own, self._max_members, self.counters)
        old = self._members
        self._members = new
        for device in list(self._last_answer):
            if device not in new:
                del self._last_answer[device]
        if self._current is None:
            return []
        for own_key in self._live_keys():
            own_key.shared.intersection_update(new.values())
        if any(device not in new for device in old):
            return self._rotate(now)
        joiners = [m for d, m in sorted(new.items()) if old.get(d) != m]
        if not joiners:
            return []
        young = [k for k in self._live_keys() if now - k.created_at < self._young_key_age]
        if not young:
            return self._rotate(now)
        return [action for k in young for action in k.send(joiners)]

    def share_again(self) -> list[SendKey | UseKey]:
        """We rejoined under a new membershipID: every member forgot our keys (a rejoin is a
        new sender to them), so the keys in use and about to be go to all of them again."""
        if self._current is None:
            return []
        return [action for k in self._live_keys() for action in k.send(self._members.values())]

    def _live_keys(self) -> list[_OwnKey]:
        """The key in use and those about to be, oldest first."""
        assert self._current is not None
        return [self._current, *self._pending]

    def on_key_request(
        self,
        origin: ToDeviceSender,
        *,
        room_id: str,
        key_owner: DeviceKey,
        member_id: str | None,
        now: float,
    ) -> list[SendKey]:
        """Answer a key request, only from a current member device and only over Olm.

        ``origin`` is what the transport's Olm decryption says about the sender; ``key_owner``
        is the device whose key is asked for (it must be ours); ``member_id`` the membership the
        requester claims (it must be its current one). Anything else is refused and counted.
        """
        reason = self._refuse_request(origin, room_id, key_owner, member_id)
        if reason is None and self._current is None:
            reason = "request_before_start"
        if reason is None:
            device = origin.device
            assert device is not None
            last = self._last_answer.get(device)
            if last is not None and now - last < self._answer_interval:
                reason = "request_rate_limited"
        if reason is not None:
            self.counters[reason] += 1
            logger.info("group keys: key request refused (%s)", reason)
            return []
        assert origin.device is not None
        self._last_answer[origin.device] = now
        member = self._members[origin.device]
        answer = [SendKey(k.key, (member,)) for k in self._live_keys() if member in k.shared]
        self.counters["requests_answered" if answer else "request_nothing_shared"] += 1
        return answer

    def _refuse_request(
        self,
        origin: ToDeviceSender,
        room_id: str,
        key_owner: DeviceKey,
        member_id: str | None,
    ) -> str | None:
        if origin.device is None:
            return "request_plaintext"
        if room_id != self._room_id:
            return "request_wrong_room"
        if key_owner != self._own:
            return "request_misaddressed"
        member = self._members.get(origin.device)
        if member is None:
            return "request_not_member"
        if member_id is not None and member_id != member.membership_id:
            return "request_stale_member"
        return None

    def handle_timer(self, now: float) -> list[SendKey | UseKey]:
        """Switch to the newest pending key whose delay has passed."""
        due = [k for k in self._pending if k.use_at <= now]
        if not due:
            return []
        self._current = due[-1]
        self._pending = [k for k in self._pending if k.use_at > now]
        return [UseKey(self._current.key)]

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` next has work to do, or None."""
        return self._pending[0].use_at if self._pending else None

"""The mesh's pair signaling envelope: a 1:1 call event sent to one member device.

Each pair of member devices runs its own 1:1 call (the :mod:`sealcall.calls` machine). Its
MSC2746 events travel as Olm-encrypted to-device messages of the same type (``m.call.invite``,
...), whose content is the event's content plus the envelope fields matrix-js-sdk's group calls
write (``MGroupCallBase``) and ``room_id``::

    {"call_id": ..., "party_id": ..., "version": "1", "offer": {...},      <- MSC2746 content
     "conf_id": "!room:server", "room_id": "!room:server", "device_id": "OURDEVICE",
     "seq": 0, "sender_session_id": "<our membershipID>",
     "dest_session_id": "<their membershipID>"}

- ``conf_id``: the group call. A MatrixRTC room call is the room's one call (member events carry
  ``call_id: ""``), so its id is the room id, as js-sdk's group calls name theirs by the id their
  call state lives under.
- ``sender_session_id`` / ``dest_session_id``: the ``membershipID`` of each side's current
  membership (the session a join makes; a rejoin makes a new one).
- ``seq``: per destination device session, from 0, one more for each message sent to it; the
  receiver applies a peer's messages in this order (:mod:`sealcall.group.mesh_inbox`).
- ``party_id`` stays the 1:1 event's own (js-sdk uses the device id there in group calls).
- ``call_id``: derived, not random (:func:`pair_call_id`): a hash of the room and both devices
  with their sessions, plus an attempt number. Both sides compute it from what the membership
  says, a rejoin (new session) gives a new call, a retry a new attempt, and a receiver refuses a
  call id that is not its pair's (one member cannot reach into another pair's call).
"""

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sealcall.signaling import CallEvent, FieldTypeError, parse
from sealcall.signaling.fields import JsonObject, as_object, integer, required

from .member_event import MAX_ID_LENGTH, short_text
from .membership import MemberDevice

ENVELOPE_KEYS = (
    "conf_id",
    "room_id",
    "device_id",
    "seq",
    "sender_session_id",
    "dest_session_id",
)
PAIR_CALL_PREFIX = "mesh1."  # the derivation's version: a change makes different ids
MAX_ATTEMPT_DIGITS = 6


def conf_id_for_room(room_id: str) -> str:
    """The ``conf_id`` of a room's MatrixRTC call: the room id (the room has one call)."""
    return room_id


@dataclass(frozen=True)
class SignalEnvelope:
    """The group fields around one pair signaling message."""

    conf_id: str
    room_id: str
    device_id: str  # the sending device
    seq: int
    sender_session_id: str
    dest_session_id: str

    def to_json(self) -> dict[str, Any]:
        """The envelope's content keys."""
        return {
            "conf_id": self.conf_id,
            "room_id": self.room_id,
            "device_id": self.device_id,
            "seq": self.seq,
            "sender_session_id": self.sender_session_id,
            "dest_session_id": self.dest_session_id,
        }

    @classmethod
    def from_content(cls, content: JsonObject) -> "SignalEnvelope":
        """Read the envelope fields of ``content``; :class:`FieldTypeError` names a bad one."""
        seq = integer(content, "seq", "content.")
        assert seq is not None
        return cls(
            conf_id=_id(content, "conf_id"),
            room_id=_id(content, "room_id"),
            device_id=_id(content, "device_id"),
            seq=seq,
            sender_session_id=_id(content, "sender_session_id"),
            dest_session_id=_id(content, "dest_session_id"),
        )


def _id(content: JsonObject, key: str) -> str:
    value = required(content, key, "content.")
    if not short_text(value) or not value:
        raise FieldTypeError(f"content.{key}", f"must be a string of 1 to {MAX_ID_LENGTH}")
    return str(value)


@dataclass(frozen=True)
class OutgoingSignal:
    """A to-device message to send Olm-encrypted to one device."""

    user_id: str
    device_id: str
    type: str
    content: dict[str, Any]


def wrap_signal(event: CallEvent, envelope: SignalEnvelope) -> tuple[str, dict[str, Any]]:
    """The to-device type and content for ``event`` inside ``envelope``.

    Raises ValueError if the event already carries an envelope key (our own misuse).
    """
    as_dict = event.to_dict()
    content = dict(as_dict["content"])
    clash = [k for k in ENVELOPE_KEYS if k in content]
    if clash:
        raise ValueError(f"call event content already has envelope keys {clash}")
    content.update(envelope.to_json())
    return str(as_dict["type"]), content


def unwrap_signal(event_type: str, content: object) -> tuple[SignalEnvelope, CallEvent]:
    """Read a pair signaling message: its envelope and the 1:1 call event inside.

    Raises only :class:`~sealcall.signaling.SignalingError`s: ``UnknownEventTypeError`` for a
    type that is no call event, ``InvalidEventError`` (naming the field) for a malformed one.
    """
    obj = as_object(content, "content")
    envelope = SignalEnvelope.from_content(obj)
    rest = {k: v for k, v in obj.items() if k not in ENVELOPE_KEYS}
    return envelope, parse({"type": event_type, "content": rest})


def pair_call_id(
    conf_id: str,
    a: tuple[MemberDevice, str],
    b: tuple[MemberDevice, str],
    attempt: int,
) -> str:
    """The call id of one attempt of the 1:1 call between two member device sessions.

    ``a`` and ``b`` are (device, session id) in either order: both ends get the same id. The
    id is ``mesh1.<128-bit hex digest>.<attempt>``, at most 45 characters whatever the ids'
    lengths (call ids are capped at 255).
    """
    if isinstance(attempt, bool) or not 0 <= attempt < 10**MAX_ATTEMPT_DIGITS:
        raise ValueError("attempt out of range")
    return f"{pair_call_prefix(conf_id, a, b)}{attempt}"


def pair_call_prefix(conf_id: str, a: tuple[MemberDevice, str], b: tuple[MemberDevice, str]) -> str:
    """Every attempt's call id of this pair starts with this."""
    if a[0] == b[0]:
        raise ValueError("a device has no call with itself")
    first, second = sorted((a, b), key=lambda side: side[0])  # the caller first (places_call)
    parts = [
        PAIR_CALL_PREFIX,
        conf_id,
        first[0].user_id,
        first[0].device_id,
        first[1],
        second[0].user_id,
        second[0].device_id,
        second[1],
    ]
    # JSON keeps the parts apart unambiguously; surrogates were refused on the way in.
    digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]
    return f"{PAIR_CALL_PREFIX}{digest}."


def pair_attempt(call_id: str, prefix: str) -> int | None:
    """The attempt number of ``call_id`` if it is one of the pair's (``prefix``), else None."""
    if not call_id.startswith(prefix):
        return None
    digits = call_id[len(prefix) :]
    if (
        not 0 < len(digits) <= MAX_ATTEMPT_DIGITS
        or not digits.isascii()
        or not digits.isdigit()
        or (digits[0] == "0" and len(digits) > 1)
    ):
        return None
    return int(digits)


class MeshSender:
    """Wraps our pair signaling for each peer device session, numbering it (``seq``).

    One per own membership session: a rejoin of ours is a new sender (and a new session id).
    Call :meth:`forget` when a peer device leaves, so the counters stay as many as the members.
    """

    def __init__(self, room_id: str, own: MemberDevice, own_session: str) -> None:
        if not short_text(own_session) or not own_session:
            raise ValueError("a session id is a non-empty string of at most 255 characters")
        self.room_id = room_id
        self.conf_id = conf_id_for_room(room_id)
        self.own = own
        self.own_session = own_session
        self._next: dict[MemberDevice, tuple[str, int]] = {}  # device -> (its session, next seq)

    def call_id(self, peer: MemberDevice, peer_session: str, attempt: int) -> str:
        """The call id of ``attempt`` of our call with ``peer`` in its session."""
        return pair_call_id(
            self.conf_id, (self.own, self.own_session), (peer, peer_session), attempt
        )

    def wrap(self, event: CallEvent, peer: MemberDevice, peer_session: str) -> OutgoingSignal:
        """``event`` as the next message to ``peer``'s session ``peer_session``.

        Raises ValueError for an event of another pair's call (the peer would refuse it).
        """
        if peer == self.own:
            raise ValueError("a device sends no signaling to itself")
        prefix = pair_call_prefix(self.conf_id, (self.own, self.own_session), (peer, peer_session))
        if pair_attempt(event.call_id, prefix) is None:
            raise ValueError("the event's call id is not one of this pair's")
        session, seq = self._next.get(peer, (peer_session, 0))
        if session != peer_session:  # the peer rejoined: a new stream, numbered from 0
            seq = 0
        envelope = SignalEnvelope(
            conf_id=self.conf_id,
            room_id=self.room_id,
            device_id=self.own.device_id,
            seq=seq,
            sender_session_id=self.own_session,
            dest_session_id=peer_session,
        )
        event_type, content = wrap_signal(event, envelope)
        self._next[peer] = (peer_session, seq + 1)
        return OutgoingSignal(peer.user_id, peer.device_id, event_type, content)

    def forget(self, peer: MemberDevice) -> None:
        """Drop ``peer``'s counter (it left)."""
        self._next.pop(peer, None)

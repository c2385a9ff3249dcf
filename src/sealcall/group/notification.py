"""Ringing for group calls: ``org.matrix.msc4075.rtc.notification`` and
``org.matrix.msc4310.rtc.decline``, as matrix-js-sdk writes and reads them.

The first joiner sends a notification that references its own member event::

    {"m.mentions": {"user_ids": [], "room": true}, "notification_type": "ring",
     "m.relates_to": {"event_id": "$member", "rel_type": "m.reference"},
     "sender_ts": 1700000000000, "lifetime": 30000}

A receiver rings for at most 90 s whatever the lifetime says, and may decline with a
``m.reference`` to the notification. Unknown keys and key order survive a round trip.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sealcall.signaling import FieldTypeError, InvalidEventError, SignalingError
from sealcall.signaling.fields import (
    JsonObject,
    as_object,
    extras,
    integer,
    ordered,
    req_string,
    required,
    valid_text,
)

from .member_event import short_text

NOTIFICATION_EVENT_TYPE = "org.matrix.msc4075.rtc.notification"
DECLINE_EVENT_TYPE = "org.matrix.msc4310.rtc.decline"
RING = "ring"
NOTIFICATION = "notification"
NOTIFICATION_TYPES = (RING, NOTIFICATION)
DEFAULT_RING_LIFETIME_MS = 30_000  # what js-sdk sends
MAX_RING_LIFETIME_MS = 90_000  # js-sdk caps a received lifetime here; so do we
# MSC4075: a sender clock further than this from the server's is not trusted for the start.
SENDER_CLOCK_TOLERANCE_MS = 20_000
REFERENCE = "m.reference"
RELATES_TO = "m.relates_to"
MENTIONS = "m.mentions"
INTENT = "m.call.intent"
MAX_EVENT_ID_LENGTH = 255
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Reference:
    """``m.relates_to`` with ``rel_type: "m.reference"`` to the event ``event_id``."""

    event_id: str
    extra: dict[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        out = {"event_id": self.event_id, "rel_type": REFERENCE, **self.extra}
        return ordered(out, self.key_order)

    @classmethod
    def from_json(cls, value: object) -> "Reference":
        path = f"content.{RELATES_TO}"
        obj = as_object(value, path)
        if req_string(obj, "rel_type", f"{path}.") != REFERENCE:
            raise FieldTypeError(f"{path}.rel_type", f"must be {REFERENCE!r}")
        event_id = req_string(obj, "event_id", f"{path}.")
        if not 0 < len(event_id) <= MAX_EVENT_ID_LENGTH:
            raise FieldTypeError(f"{path}.event_id", "must be an event id")
        return cls(
            event_id=event_id,
            extra=extras(obj, ("event_id", "rel_type")),
            key_order=tuple(obj),
        )


def _mentions(value: object) -> dict[str, Any]:
    obj = as_object(value, f"content.{MENTIONS}")
    users = obj.get("user_ids", [])
    if not isinstance(users, list) or not all(valid_text(u) for u in users):
        raise FieldTypeError(f"content.{MENTIONS}.user_ids", "must be a list of strings")
    if not isinstance(obj.get("room", False), bool):
        raise FieldTypeError(f"content.{MENTIONS}.room", "must be a boolean")
    return dict(obj)


@dataclass(frozen=True, kw_only=True)
class RtcNotification:
    """An ``org.matrix.msc4075.rtc.notification``: ring (or just notify) the room's members."""

    notification_type: str = RING
    sender_ts: int
    lifetime: int = DEFAULT_RING_LIFETIME_MS
    relates_to: Reference | None = None
    mentions: dict[str, Any] | None = None
    intent: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def rings(self) -> bool:
        """Whether receivers should ring (rather than only show a notification)."""
        return self.notification_type == RING

    @property
    def capped_lifetime(self) -> int:
        """The lifetime a receiver honours: at most :data:`MAX_RING_LIFETIME_MS`."""
        return min(self.lifetime, MAX_RING_LIFETIME_MS)

    def ring_until(self, origin_server_ts: int) -> int:
        """When (Unix ms) ringing stops: from ``sender_ts``, or from the server's timestamp if the
        sender's clock is more than 20 s off it (MSC4075), plus the capped lifetime."""
        start = self.sender_ts
        if abs(self.sender_ts - origin_server_ts) > SENDER_CLOCK_TOLERANCE_MS:
            start = origin_server_ts
        return start + self.capped_lifetime

    def to_json(self) -> dict[str, Any]:
        """The content, in js-sdk's key order unless it was read in another."""
        out: dict[str, Any] = {}
        if self.mentions is not None:
            out[MENTIONS] = dict(self.mentions)
        out["notification_type"] = self.notification_type
        if self.relates_to is not None:
            out[RELATES_TO] = self.relates_to.to_json()
        if self.intent is not None:
            out[INTENT] = self.intent
        out["sender_ts"] = self.sender_ts
        out["lifetime"] = self.lifetime
        out.update(self.extra)
        return ordered(out, self.key_order)

    @classmethod
    def from_json(cls, content: JsonObject) -> "RtcNotification":
        kind = req_string(content, "notification_type", "content.")
        if kind not in NOTIFICATION_TYPES:
            raise FieldTypeError("content.notification_type", "must be 'ring' or 'notification'")
        intent = content.get(INTENT)
        if INTENT in content and not short_text(intent):
            raise FieldTypeError(f"content.{INTENT}", "must be a string")
        sender_ts = integer(content, "sender_ts", "content.")
        lifetime = integer(content, "lifetime", "content.")
        assert sender_ts is not None
        assert lifetime is not None
        return cls(
            notification_type=kind,
            sender_ts=sender_ts,
            lifetime=lifetime,
            relates_to=Reference.from_json(content[RELATES_TO]) if RELATES_TO in content else None,
            mentions=_mentions(content[MENTIONS]) if MENTIONS in content else None,
            intent=None if intent is None else str(intent),
            extra=extras(
                content,
                (MENTIONS, "notification_type", RELATES_TO, INTENT, "sender_ts", "lifetime"),
            ),
            key_order=tuple(content),
        )


def ring_notification(member_event_id: str, now_ms: int) -> RtcNotification:
    """The ring the first joiner sends, referencing its own member event (as js-sdk does)."""
    return RtcNotification(
        notification_type=RING,
        sender_ts=now_ms,
        lifetime=DEFAULT_RING_LIFETIME_MS,
        relates_to=Reference(event_id=member_event_id),
        mentions={"user_ids": [], "room": True},
    )


@dataclass(frozen=True, kw_only=True)
class RtcDecline:
    """An ``org.matrix.msc4310.rtc.decline``: the sender declines the ring it references."""

    relates_to: Reference
    extra: dict[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return ordered({RELATES_TO: self.relates_to.to_json(), **self.extra}, self.key_order)

    @classmethod
    def from_json(cls, content: JsonObject) -> "RtcDecline":
        return cls(
            relates_to=Reference.from_json(required(content, RELATES_TO, "content.")),
            extra=extras(content, (RELATES_TO,)),
            key_order=tuple(content),
        )


def decline(notification_event_id: str) -> RtcDecline:
    """Decline the ring ``notification_event_id``."""
    return RtcDecline(relates_to=Reference(event_id=notification_event_id))


def parse_notification(content: object) -> RtcNotification:
    """Read a notification content. Raises only :class:`~sealcall.signaling.SignalingError`."""
    return _guard(lambda: RtcNotification.from_json(as_object(content, "content")))


def parse_decline(content: object) -> RtcDecline:
    """Read a decline content. Raises only :class:`~sealcall.signaling.SignalingError`."""
    return _guard(lambda: RtcDecline.from_json(as_object(content, "content")))


def _guard(read: Callable[[], T]) -> T:
    try:
        return read()
    except SignalingError:
        raise
    except (TypeError, ValueError, RecursionError) as error:  # defensive: never anything else
        raise InvalidEventError("content", f"unreadable: {type(error).__name__}") from None

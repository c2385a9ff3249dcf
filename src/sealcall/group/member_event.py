"""MatrixRTC call membership: the ``org.matrix.msc3401.call.member`` state event, one per device.

The content is read and written as matrix-js-sdk (Element Call) writes it today::

    {"application": "m.call", "call_id": "", "scope": "m.room", "device_id": "DEVICE",
     "membershipID": "...", "expires": 14400000, "focus_active": {...}, "foci_preferred": [...],
     "created_ts": 1700000000000}

at the state key ``_@user:server_DEVICE_m.call``; a leave is ``{}`` (newer js-sdk adds a
``leave_reason``) at the same key. ``created_ts`` is optional (absent: the event's
``origin_server_ts``), so is ``expires`` (absent: js-sdk's default of four hours) and
``membershipID`` (absent: ``"@user:server:DEVICE"``, js-sdk's default). The legacy per-user form,
a ``memberships`` array, is refused with :class:`LegacyMembershipError`.

:func:`parse_member_content` returns a :class:`CallMember` or a :class:`MemberLeave`;
``to_json()`` writes it back byte for byte (unknown keys and key order are kept).
"""

from dataclasses import dataclass, field
from typing import Any

from sealcall.signaling import FieldTypeError, InvalidEventError, SignalingError
from sealcall.signaling.fields import (
    JsonObject,
    as_object,
    extras,
    integer,
    ordered,
    required,
    valid_text,
)

from .errors import LegacyMembershipError, StateKeyError

MEMBER_EVENT_TYPE = "org.matrix.msc3401.call.member"
CALL_APPLICATION = "m.call"
ROOM_CALL_ID = ""  # the one room-wide call (js-sdk's "ROOM" slot is written as "")
ROOM_SCOPE = "m.room"
MESH_FOCUS_TYPE = "mesh"
# js-sdk's DEFAULT_EXPIRE_DURATION: the validity of a membership that names no ``expires``, and
# the ``expires`` it writes (growing by this much at each refresh, ``created_ts`` fixed).
DEFAULT_EXPIRES_MS = 4 * 60 * 60 * 1000
MAX_ID_LENGTH = 255  # device ids, membership ids, call ids: Matrix ids are at most 255 bytes
INTENT_KEY = "m.call.intent"

# The keys a membership must have; content with none of them is a leave.
_REQUIRED = ("application", "call_id", "device_id", "focus_active")
_KEYS = (
    *_REQUIRED,
    "scope",
    "membershipID",
    "expires",
    INTENT_KEY,
    "foci_preferred",
    "created_ts",
)
LEAVE_REASON_KEY = "leave_reason"


def member_state_key(user_id: str, device_id: str) -> str:
    """The state key of a device's membership of the room call, as js-sdk writes it."""
    return f"_{user_id}_{device_id}_{CALL_APPLICATION}"


def state_key_user(state_key: str) -> tuple[str, bool]:
    """The user a member state key belongs to, and whether the key names a device after it.

    Accepts ``_@user:server_DEVICE_m.call`` (current), ``@user:server_DEVICE_m.call`` (rooms
    with MSC3757 owned state), ``_@user:server_DEVICE`` (older js-sdk) and the legacy per-user
    ``@user:server``. A server name never contains ``_``, so the user ends at the first ``_``
    after its ``:``. Raises :class:`StateKeyError`.
    """
    if not valid_text(state_key):
        raise StateKeyError("must be a string")
    key = state_key[1:] if state_key.startswith("_") else state_key
    colon = key.find(":")
    if not key.startswith("@") or colon < 2:
        raise StateKeyError("does not start with a user id")
    end = key.find("_", colon)
    if end < 0:
        return key, False
    if end == colon + 1 or end == len(key) - 1:
        raise StateKeyError("has an empty server name or device")
    return key[:end], True


def short_text(value: object, limit: int = MAX_ID_LENGTH) -> bool:
    """Whether ``value`` is a valid Unicode string of at most ``limit`` characters."""
    return isinstance(value, str) and valid_text(value) and len(value) <= limit


def _text(
    obj: JsonObject, key: str, *, optional: bool = False, non_empty: bool = False
) -> str | None:
    """A string field of at most :data:`MAX_ID_LENGTH` characters."""
    if optional and key not in obj:
        return None
    value = required(obj, key, "content.")
    if not short_text(value) or (non_empty and not value):
        size = "a non-empty string" if non_empty else "a string"
        raise FieldTypeError(f"content.{key}", f"must be {size} of at most {MAX_ID_LENGTH}")
    return str(value)


def _focus(value: object, path: str) -> dict[str, Any]:
    """A focus (transport) object: any JSON object with a string ``type``."""
    obj = as_object(value, path)
    kind = obj.get("type")
    if not short_text(kind):
        raise FieldTypeError(f"{path}.type", "must be a string")
    return dict(obj)


@dataclass(frozen=True, kw_only=True)
class CallMember:
    """One device's membership of a call (the content of its member state event)."""

    application: str
    call_id: str
    device_id: str
    focus_active: dict[str, Any]
    foci_preferred: tuple[dict[str, Any], ...] | None = None
    scope: str | None = None
    membership_id: str | None = None
    created_ts: int | None = None
    expires: int | None = None
    intent: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def is_room_call(self) -> bool:
        """Whether this is a membership of the room's call (``m.call``, ``call_id: ""``)."""
        return self.application == CALL_APPLICATION and self.call_id == ROOM_CALL_ID

    @property
    def focus_type(self) -> str:
        """The active focus: ``"mesh"`` for us, ``"livekit"`` for Element Call's SFU."""
        return str(self.focus_active["type"])

    def created(self, origin_server_ts: int) -> int:
        """When the membership began (ms): ``created_ts``, else the event's own timestamp."""
        return self.created_ts if self.created_ts is not None else origin_server_ts

    def expires_at(self, origin_server_ts: int) -> int:
        """The Unix time (ms) at which the membership stops counting."""
        expires = self.expires if self.expires is not None else DEFAULT_EXPIRES_MS
        return self.created(origin_server_ts) + expires

    def member_id(self, sender: str) -> str:
        """``membershipID``, or js-sdk's default for a content without one."""
        return self.membership_id or f"{sender}:{self.device_id}"

    def to_json(self) -> dict[str, Any]:
        """The content, with the keys in the order they were read (js-sdk's order if built)."""
        out: dict[str, Any] = {
            "application": self.application,
            "call_id": self.call_id,
        }
        optional: list[tuple[str, Any]] = [
            ("scope", self.scope),
            ("device_id", self.device_id),
            ("membershipID", self.membership_id),
            ("expires", self.expires),
            (INTENT_KEY, self.intent),
            ("focus_active", dict(self.focus_active)),
            (
                "foci_preferred",
                None if self.foci_preferred is None else [dict(f) for f in self.foci_preferred],
            ),
            ("created_ts", self.created_ts),
        ]
        out.update((k, v) for k, v in optional if v is not None)
        out.update(self.extra)
        return ordered(out, self.key_order)

    @classmethod
    def from_json(cls, content: JsonObject) -> "CallMember":
        """Read a membership content (see :func:`parse_member_content`)."""
        preferred = content.get("foci_preferred")
        foci: tuple[dict[str, Any], ...] | None = None
        if "foci_preferred" in content:
            if not isinstance(preferred, list):
                raise FieldTypeError("content.foci_preferred", "must be a list")
            foci = tuple(_focus(f, f"content.foci_preferred.{i}") for i, f in enumerate(preferred))
        intent = content.get(INTENT_KEY)
        if INTENT_KEY in content and not short_text(intent):
            raise FieldTypeError(f"content.{INTENT_KEY}", "must be a string")
        return cls(
            application=_text(content, "application", non_empty=True) or "",
            call_id=_text(content, "call_id") or "",
            device_id=_text(content, "device_id", non_empty=True) or "",
            focus_active=_focus(
                required(content, "focus_active", "content."), "content.focus_active"
            ),
            foci_preferred=foci,
            scope=_text(content, "scope", optional=True),
            membership_id=_text(content, "membershipID", optional=True),
            created_ts=integer(content, "created_ts", "content.", optional=True),
            expires=integer(content, "expires", "content.", optional=True),
            intent=None if intent is None else str(intent),
            extra=extras(content, _KEYS),
            key_order=tuple(content),
        )


@dataclass(frozen=True, kw_only=True)
class MemberLeave:
    """A device left the call: empty content (or only a ``leave_reason``) at its state key."""

    leave_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The content: ``{}`` for a plain leave."""
        out: dict[str, Any] = {}
        if self.leave_reason is not None:
            out[LEAVE_REASON_KEY] = self.leave_reason
        out.update(self.extra)
        return ordered(out, self.key_order)


def parse_member_content(content: object) -> CallMember | MemberLeave:
    """Read the content of a member state event.

    Content without any of ``application``, ``call_id``, ``device_id``, ``focus_active`` is a
    leave. Raises only :class:`~sealcall.signaling.SignalingError` (a legacy ``memberships``
    array: :class:`LegacyMembershipError`).
    """
    try:
        obj = as_object(content, "content")
        if "memberships" in obj:
            raise LegacyMembershipError()
        if not any(k in obj for k in _REQUIRED):
            reason = obj.get(LEAVE_REASON_KEY)
            if LEAVE_REASON_KEY in obj and not short_text(reason):
                raise FieldTypeError(f"content.{LEAVE_REASON_KEY}", "must be a string")
            return MemberLeave(
                leave_reason=None if reason is None else str(reason),
                extra=extras(obj, (LEAVE_REASON_KEY,)),
                key_order=tuple(obj),
            )
        return CallMember.from_json(obj)
    except SignalingError:
        raise
    except (TypeError, ValueError, RecursionError) as error:  # defensive: never anything else
        raise InvalidEventError("content", f"unreadable: {type(error).__name__}") from None


def mesh_member(
    *,
    device_id: str,
    membership_id: str,
    created_ts: int,
    expires: int,
    intent: str | None = None,
) -> CallMember:
    """Our membership of the room call with the full-mesh focus, in js-sdk's key order."""
    return CallMember(
        application=CALL_APPLICATION,
        call_id=ROOM_CALL_ID,
        scope=ROOM_SCOPE,
        device_id=device_id,
        membership_id=membership_id,
        expires=expires,
        intent=intent,
        focus_active={"type": MESH_FOCUS_TYPE},
        foci_preferred=({"type": MESH_FOCUS_TYPE},),
        created_ts=created_ts,
    )

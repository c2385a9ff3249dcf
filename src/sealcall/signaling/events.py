"""Typed Matrix VoIP call events (MSC2746 version 1, with MSC3077/MSC3291 stream metadata).

``parse(event)`` turns an event dict (``{"type": ..., "content": {...}, ...}``) into one of the
frozen dataclasses below; ``to_dict()`` turns it back into the same JSON, byte for byte: unknown
fields, top-level event keys and key order are all kept. A missing or ill-typed field raises an
:class:`~sealcall.signaling.errors.InvalidEventError` naming the field.
"""

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from .errors import (
    FieldTypeError,
    InvalidEventError,
    MissingFieldError,
    SignalingError,
    UnknownEventTypeError,
)
from .fields import (
    JsonObject,
    as_object,
    extras,
    integer,
    ordered,
    req_string,
    required,
    string,
    valid_text,
)
from .parts import (
    E2EE_KEY,
    AssertedIdentity,
    Candidate,
    E2eeParams,
    SessionDescription,
    StreamMetadata,
    metadata_from_json,
    metadata_to_json,
)

VERSION = "1"
METADATA_KEY = "sdp_stream_metadata"
UNSTABLE_METADATA_KEY = "org.matrix.msc3077.sdp_stream_metadata"
# Written under both names: matrix-js-sdk reads only the unstable one.
BOTH_METADATA_KEYS = (METADATA_KEY, UNSTABLE_METADATA_KEY)
DEFAULT_LIFETIME_MS = 60_000
MAX_ID_LENGTH = 255  # call and party ids; js-sdk and Famedly make ids of a few dozen characters


class HangupReason(StrEnum):
    """The reasons ``m.call.hangup`` may carry."""

    ICE_FAILED = "ice_failed"
    ICE_TIMEOUT = "ice_timeout"
    INVITE_TIMEOUT = "invite_timeout"
    USER_HANGUP = "user_hangup"
    USER_MEDIA_FAILED = "user_media_failed"
    USER_BUSY = "user_busy"
    UNKNOWN_ERROR = "unknown_error"


@dataclass(frozen=True, kw_only=True)
class CallEvent:
    """Fields every call event has; ``extra`` holds content keys this library does not read."""

    TYPE: ClassVar[str] = ""
    call_id: str
    party_id: str
    version: str | int = VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    envelope: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        # Ids end up in logs, history items and bounded sets: a 40 KB id is hostile, not an id.
        if not valid_text(self.call_id) or not 0 < len(self.call_id) <= MAX_ID_LENGTH:
            raise FieldTypeError(
                "content.call_id", f"must be a non-empty string of at most {MAX_ID_LENGTH}"
            )
        if not valid_text(self.party_id) or not 0 < len(self.party_id) <= MAX_ID_LENGTH:
            raise FieldTypeError(
                "content.party_id", f"must be a non-empty string of at most {MAX_ID_LENGTH}"
            )
        if isinstance(self.version, bool) or not isinstance(self.version, (str, int)):
            raise FieldTypeError("content.version", "must be a string or an integer")

    # Subclasses list the content keys they read and build them back.
    KEYS: ClassVar[tuple[str, ...]] = ()

    def _content(self) -> dict[str, Any]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        """The full event: ``{"type": ..., "content": {...}}`` plus any envelope keys."""
        content = {
            "call_id": self.call_id,
            "party_id": self.party_id,
            "version": self.version,
            **self._content(),
            **self.extra,
        }
        event_type = self.envelope.get("type")
        if EVENT_TYPES.get(event_type) is not type(self):  # type: ignore[arg-type]
            event_type = self.TYPE
        event = {"type": event_type, "content": ordered(content, self.key_order)}
        if not self.envelope:
            return event
        out = {k: event.get(k, v) for k, v in self.envelope.items()}
        out.update((k, v) for k, v in event.items() if k not in out)
        return out

    @classmethod
    def _fields(cls, content: JsonObject) -> dict[str, Any]:
        return {}

    @classmethod
    def _read_keys(cls, content: JsonObject) -> tuple[str, ...]:
        """The content keys this event type reads from ``content`` (the rest go to ``extra``)."""
        return cls.KEYS

    @classmethod
    def from_content(cls, content: JsonObject, envelope: dict[str, Any] | None = None) -> Any:
        """Build this event type from its ``content`` object."""
        path = "content."
        version = required(content, "version", path)
        if isinstance(version, bool) or not isinstance(version, (str, int)):
            raise FieldTypeError("content.version", "must be a string or an integer")
        return cls(
            call_id=req_string(content, "call_id", path),
            party_id=req_string(content, "party_id", path),
            version=version,
            extra=extras(content, ("call_id", "party_id", "version", *cls._read_keys(content))),
            envelope=envelope or {},
            key_order=tuple(content),
            **cls._fields(content),
        )


def _same_json(a: object, b: object) -> bool:
    """Whether two JSON values serialise to the same text (type- and order-sensitive)."""
    try:
        return json.dumps(a) == json.dumps(b)
    except (TypeError, ValueError, RecursionError):
        return False


def _metadata_keys(content: JsonObject) -> tuple[str, ...]:
    """The stream-metadata keys read from ``content``.

    The stable key wins when both are present; the unstable one (matrix-js-sdk's spelling) is
    read when it is the only one. A second key that says the same is consumed too; one that
    differs stays in ``extra``, so the event is written back unchanged.
    """
    if METADATA_KEY in content:
        if UNSTABLE_METADATA_KEY in content and _same_json(
            content[METADATA_KEY], content[UNSTABLE_METADATA_KEY]
        ):
            return tuple(k for k in content if k in (METADATA_KEY, UNSTABLE_METADATA_KEY))
        return (METADATA_KEY,)
    if UNSTABLE_METADATA_KEY in content:
        return (UNSTABLE_METADATA_KEY,)
    return ()


def _metadata(content: JsonObject) -> tuple[dict[str, StreamMetadata] | None, tuple[str, ...]]:
    keys = _metadata_keys(content)
    if not keys:
        return None, BOTH_METADATA_KEYS
    key = METADATA_KEY if METADATA_KEY in keys else UNSTABLE_METADATA_KEY
    return metadata_from_json(content[key], f"content.{key}"), keys


def _e2ee(content: JsonObject) -> E2eeParams | None:
    return E2eeParams.from_json(content[E2EE_KEY]) if E2EE_KEY in content else None


@dataclass(frozen=True, kw_only=True)
class _WithMetadata(CallEvent):
    """Events with MSC3077 stream metadata, written under ``sdp_stream_metadata`` and
    ``org.matrix.msc3077.sdp_stream_metadata`` alike (a parsed event keeps the keys it had)."""

    sdp_stream_metadata: dict[str, StreamMetadata] | None = None
    metadata_keys: tuple[str, ...] = field(default=BOTH_METADATA_KEYS, compare=False, repr=False)

    def _metadata_json(self) -> dict[str, Any]:
        if self.sdp_stream_metadata is None:
            return {}
        value = metadata_to_json(self.sdp_stream_metadata)
        return {key: value for key in self.metadata_keys}

    @classmethod
    def _read_keys(cls, content: JsonObject) -> tuple[str, ...]:
        unread = set(BOTH_METADATA_KEYS) - set(_metadata_keys(content))
        return tuple(k for k in cls.KEYS if k not in unread)

    @staticmethod
    def _metadata_fields(content: JsonObject) -> dict[str, Any]:
        metadata, keys = _metadata(content)
        return {"sdp_stream_metadata": metadata, "metadata_keys": keys}


@dataclass(frozen=True, kw_only=True)
class _WithE2ee(_WithMetadata):
    """Invite and answer: stream metadata plus our ``org.sealcall.e2ee`` parameters."""

    e2ee: E2eeParams | None = None

    def _tail_json(self) -> dict[str, Any]:
        out = self._metadata_json()
        if self.e2ee is not None:
            out[E2EE_KEY] = self.e2ee.to_json()
        return out

    @classmethod
    def _tail_fields(cls, content: JsonObject) -> dict[str, Any]:
        return {**cls._metadata_fields(content), "e2ee": _e2ee(content)}


@dataclass(frozen=True, kw_only=True)
class CallInvite(_WithE2ee):
    """``m.call.invite``: a new call, with the caller's SDP offer."""

    TYPE: ClassVar[str] = "m.call.invite"
    KEYS: ClassVar[tuple[str, ...]] = (
        "lifetime",
        "offer",
        "invitee",
        METADATA_KEY,
        UNSTABLE_METADATA_KEY,
        E2EE_KEY,
    )
    lifetime: int = DEFAULT_LIFETIME_MS
    offer: SessionDescription
    invitee: str | None = None

    @property
    def has_video(self) -> bool:
        """Whether the offer sends or receives video."""
        return "m=video" in self.offer.sdp

    def _content(self) -> dict[str, Any]:
        out: dict[str, Any] = {"lifetime": self.lifetime, "offer": self.offer.to_json()}
        if self.invitee is not None:
            out["invitee"] = self.invitee
        return {**out, **self._tail_json()}

    @classmethod
    def _fields(cls, content: JsonObject) -> dict[str, Any]:
        return {
            "lifetime": integer(content, "lifetime", "content."),
            "offer": SessionDescription.from_json(
                required(content, "offer", "content."), "content.offer."
            ),
            "invitee": string(content, "invitee", "content.", optional=True),
            **cls._tail_fields(content),
        }


@dataclass(frozen=True, kw_only=True)
class CallAnswer(_WithE2ee):
    """``m.call.answer``: one callee device accepts, with its SDP answer."""

    TYPE: ClassVar[str] = "m.call.answer"
    KEYS: ClassVar[tuple[str, ...]] = ("answer", METADATA_KEY, UNSTABLE_METADATA_KEY, E2EE_KEY)
    answer: SessionDescription

    def _content(self) -> dict[str, Any]:
        return {"answer": self.answer.to_json(), **self._tail_json()}

    @classmethod
    def _fields(cls, content: JsonObject) -> dict[str, Any]:
        return {
            "answer": SessionDescription.from_json(
                required(content, "answer", "content."), "content.answer."
            ),
            **cls._tail_fields(content),
        }


@dataclass(frozen=True, kw_only=True)
class CallCandidates(CallEvent):
    """``m.call.candidates``: a batch of ICE candidates."""

    TYPE: ClassVar[str] = "m.call.candidates"
    KEYS: ClassVar[tuple[str, ...]] = ("candidates",)
    candidates: tuple[Candidate, ...] = ()

    def __repr__(self) -> str:
        # Candidates carry IP addresses: show how many, not which.
        return f"CallCandidates(call_id={self.call_id!r}, candidates=<{len(self.candidates)}>)"

    def _content(self) -> dict[str, Any]:
        return {"candidates": [c.to_json() for c in self.candidates]}

    @classmethod
    def _fields(cls, content: JsonObject) -> dict[str, Any]:
        items = required(content, "candidates", "content.")
        if not isinstance(items, list):
            raise FieldTypeError("content.candidates", "must be a list")
        return {
            "candidates": tuple(
                Candidate.from_json(c, f"content.candidates.{i}.") for i, c in enumerate(items)
            )
        }


@dataclass(frozen=True, kw_only=True)
class CallSelectAnswer(CallEvent):
    """``m.call.select_answer``: the caller picked the answer (or reject) of one party."""

    TYPE: ClassVar[str] = "m.call.select_answer"
    KEYS: ClassVar[tuple[str, ...]] = ("selected_party_id",)
    selected_party_id: str

    def _content(self) -> dict[str, Any]:
        return {"selected_party_id": self.selected_party_id}

    @classmethod
    def _fields(cls, content: JsonObject) -> dict[str, Any]:
        return {"selected_party_id": req_string(content, "selected_party_id", "content.")}


@dataclass(frozen=True, kw_only=True)
class CallReject(CallEvent):
    """``m.call.reject``: a callee declines the call on all its user's devices.

    ``reason`` is not in the spec's reject, but matrix-js-sdk and the Famedly SDK read and write
    it (``user_busy`` for a busy callee), and js-sdk shows it as the call's hangup reason.
    """

    TYPE: ClassVar[str] = "m.call.reject"
    KEYS: ClassVar[tuple[str, ...]] = ("reason",)
    reason: str | None = None

    def _content(self) -> dict[str, Any]:
        return {} if self.reason is None else {"reason": self.reason}

    @classmethod
    def _fields(cls, content: JsonObject) -> dict[str, Any]:
        return {"reason": string(content, "reason", "content.", optional=True)}


@dataclass(frozen=True, kw_only=True)
class CallHangup(CallEvent):
    """``m.call.hangup``: the call ends; ``reason`` may be a value this library does not know."""

    TYPE: ClassVar[str] = "m.call.hangup"
    KEYS: ClassVar[tuple[str, ...]] = ("reason",)
    reason: str | None = None

    @property
    def known_reason(self) -> HangupReason | None:
        """The reason as a :class:`HangupReason` (absent means ``user_hangup``), or None."""
        try:
            return HangupReason(self.reason or HangupReason.USER_HANGUP.value)
        except ValueError:
            return None

    def _content(self) -> dict[str, Any]:
        return {} if self.reason is None else {"reason": self.reason}

    @classmethod
    def _fields(cls, content: JsonObject) -> dict[str, Any]:
        return {"reason": string(content, "reason", "content.", optional=True)}


@dataclass(frozen=True, kw_only=True)
class CallNegotiate(_WithMetadata):
    """``m.call.negotiate``: a new offer or answer during the call (hold, video, screen share)."""

    TYPE: ClassVar[str] = "m.call.negotiate"
    KEYS: ClassVar[tuple[str, ...]] = (
        "lifetime",
        "description",
        METADATA_KEY,
        UNSTABLE_METADATA_KEY,
    )
    lifetime: int = DEFAULT_LIFETIME_MS
    description: SessionDescription

    def _content(self) -> dict[str, Any]:
        return {
            "lifetime": self.lifetime,
            "description": self.description.to_json(),
            **self._metadata_json(),
        }

    @classmethod
    def _fields(cls, content: JsonObject) -> dict[str, Any]:
        return {
            "lifetime": integer(content, "lifetime", "content."),
            "description": SessionDescription.from_json(
                required(content, "description", "content."), "content.description."
            ),
            **cls._metadata_fields(content),
        }


@dataclass(frozen=True, kw_only=True)
class CallSdpStreamMetadataChanged(_WithMetadata):
    """``m.call.sdp_stream_metadata_changed``: mute state or purposes changed, no new SDP."""

    TYPE: ClassVar[str] = "m.call.sdp_stream_metadata_changed"
    KEYS: ClassVar[tuple[str, ...]] = (METADATA_KEY, UNSTABLE_METADATA_KEY)

    @classmethod
    def _fields(cls, content: JsonObject) -> dict[str, Any]:
        metadata, keys = _metadata(content)
        if metadata is None:
            raise MissingFieldError(f"content.{METADATA_KEY}")
        return {"sdp_stream_metadata": metadata, "metadata_keys": keys}

    def _content(self) -> dict[str, Any]:
        return self._metadata_json()


@dataclass(frozen=True, kw_only=True)
class CallAssertedIdentity(CallEvent):
    """``m.call.asserted_identity``: the far party's identity changed (e.g. a transferred call)."""

    TYPE: ClassVar[str] = "m.call.asserted_identity"
    KEYS: ClassVar[tuple[str, ...]] = ("asserted_identity",)
    asserted_identity: AssertedIdentity

    def _content(self) -> dict[str, Any]:
        return {"asserted_identity": self.asserted_identity.to_json()}

    @classmethod
    def _fields(cls, content: JsonObject) -> dict[str, Any]:
        return {
            "asserted_identity": AssertedIdentity.from_json(
                required(content, "asserted_identity", "content."), "content.asserted_identity."
            )
        }


EVENT_TYPES: dict[str, type[CallEvent]] = {
    cls.TYPE: cls
    for cls in (
        CallInvite,
        CallAnswer,
        CallCandidates,
        CallSelectAnswer,
        CallReject,
        CallHangup,
        CallNegotiate,
        CallSdpStreamMetadataChanged,
        CallAssertedIdentity,
    )
}
# Element's unstable spellings: asserted identity, and the mute/purpose change that js-sdk sends
# only under its unstable type.
EVENT_TYPES["org.matrix.call.asserted_identity"] = CallAssertedIdentity
EVENT_TYPES["org.matrix.call.sdp_stream_metadata_changed"] = CallSdpStreamMetadataChanged


def parse(event: object) -> CallEvent:
    """Read a call event dict. Raises only :class:`~sealcall.signaling.errors.SignalingError`."""
    try:
        obj = as_object(event, "event")
        event_type = obj.get("type")
        if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
            raise UnknownEventTypeError(event_type)
        content = as_object(required(obj, "content", ""), "content")
        envelope = dict(obj)
        cls = EVENT_TYPES[event_type]
        parsed: CallEvent = cls.from_content(content, envelope)
    except SignalingError:
        raise
    except (TypeError, ValueError, RecursionError) as error:  # defensive: never anything else
        raise InvalidEventError("event", f"unreadable: {type(error).__name__}") from None
    return parsed

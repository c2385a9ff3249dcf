"""The objects nested inside call events: session descriptions, candidates, stream metadata,
our end-to-end encryption parameters, asserted identities."""

import base64
import binascii
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .errors import FieldTypeError, InvalidEventError
from .fields import (
    as_object,
    boolean,
    extras,
    integer,
    ordered,
    req_string,
    string,
)

E2EE_KEY = "org.sealcall.e2ee"
E2EE_VERSION = 1


class StreamPurpose(StrEnum):
    """MSC3077 stream purposes."""

    USERMEDIA = "m.usermedia"
    SCREENSHARE = "m.screenshare"


@dataclass(frozen=True, kw_only=True)
class SessionDescription:
    """An SDP offer or answer as carried in ``offer``, ``answer`` and ``description``."""

    type: str
    sdp: str
    extra: dict[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.type not in ("offer", "answer"):
            raise FieldTypeError("type", "must be 'offer' or 'answer'")

    def __repr__(self) -> str:
        # SDP carries ICE credentials and DTLS fingerprints: never print it.
        return f"SessionDescription(type={self.type!r}, sdp=<{len(self.sdp)} chars>)"

    @classmethod
    def from_json(cls, value: object, path: str) -> "SessionDescription":
        obj = as_object(value, path.rstrip("."))
        kind = req_string(obj, "type", path)
        if kind not in ("offer", "answer"):
            raise FieldTypeError(f"{path}type", "must be 'offer' or 'answer'")
        return cls(
            type=kind,
            sdp=req_string(obj, "sdp", path),
            extra=extras(obj, ("type", "sdp")),
            key_order=tuple(obj),
        )

    def to_json(self) -> dict[str, Any]:
        return ordered({"type": self.type, "sdp": self.sdp, **self.extra}, self.key_order)


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """One ICE candidate; an empty ``candidate`` string marks the end of candidates."""

    candidate: str = field(repr=False)  # carries an IP address
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_json(cls, value: object, path: str) -> "Candidate":
        obj = as_object(value, path.rstrip("."))
        return cls(
            candidate=req_string(obj, "candidate", path),
            sdp_mid=string(obj, "sdpMid", path, optional=True),
            sdp_mline_index=integer(obj, "sdpMLineIndex", path, optional=True),
            extra=extras(obj, ("candidate", "sdpMid", "sdpMLineIndex")),
            key_order=tuple(obj),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"candidate": self.candidate}
        if self.sdp_mid is not None:
            out["sdpMid"] = self.sdp_mid
        if self.sdp_mline_index is not None:
            out["sdpMLineIndex"] = self.sdp_mline_index
        return ordered({**out, **self.extra}, self.key_order)


@dataclass(frozen=True, kw_only=True)
class StreamMetadata:
    """MSC3077/MSC3291 metadata of one stream: its purpose and mute state."""

    purpose: str
    audio_muted: bool = False
    video_muted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)
    has_audio_muted: bool = field(default=True, compare=False, repr=False)
    has_video_muted: bool = field(default=True, compare=False, repr=False)

    @classmethod
    def from_json(cls, value: object, path: str) -> "StreamMetadata":
        obj = as_object(value, path.rstrip("."))
        return cls(
            purpose=req_string(obj, "purpose", path),
            audio_muted=boolean(obj, "audio_muted", path, False),
            video_muted=boolean(obj, "video_muted", path, False),
            extra=extras(obj, ("purpose", "audio_muted", "video_muted")),
            key_order=tuple(obj),
            has_audio_muted="audio_muted" in obj,
            has_video_muted="video_muted" in obj,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"purpose": self.purpose}
        if self.has_audio_muted or self.audio_muted:
            out["audio_muted"] = self.audio_muted
        if self.has_video_muted or self.video_muted:
            out["video_muted"] = self.video_muted
        return ordered({**out, **self.extra}, self.key_order)


def metadata_from_json(value: object, path: str) -> dict[str, StreamMetadata]:
    """A stream-id -> :class:`StreamMetadata` map."""
    obj = as_object(value, path)
    return {sid: StreamMetadata.from_json(item, f"{path}.{sid}.") for sid, item in obj.items()}


def metadata_to_json(metadata: dict[str, StreamMetadata]) -> dict[str, Any]:
    """The JSON form of a stream metadata map."""
    return {sid: item.to_json() for sid, item in metadata.items()}


def _b64decode(text: str, path: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise FieldTypeError(path, "must be unpadded base64url") from None


@dataclass(frozen=True, kw_only=True)
class E2eeParams:
    """Our media-encryption offer or answer, under ``org.sealcall.e2ee`` in invite and answer.

    ``suites`` lists the SFrame suites offered (invite) or the one chosen (answer);
    ``public_key`` is the sender's ephemeral X25519 key for this call.
    """

    version: int
    suites: tuple[int, ...]
    public_key: bytes
    extra: dict[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)
    key_text: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.public_key) != 32:
            raise InvalidEventError(f"{E2EE_KEY}.public_key", "must be a 32-byte X25519 key")
        if not self.suites:
            raise InvalidEventError(f"{E2EE_KEY}.suites", "must name at least one suite")

    @classmethod
    def from_json(cls, value: object) -> "E2eeParams":
        path = f"{E2EE_KEY}."
        obj = as_object(value, E2EE_KEY)
        version = integer(obj, "version", path)
        suites = obj.get("suites")
        if (
            not isinstance(suites, list)
            or not suites
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in suites)
        ):
            raise FieldTypeError(f"{path}suites", "must be a non-empty list of integers")
        key_text = req_string(obj, "public_key", path)
        assert version is not None
        return cls(
            version=version,
            suites=tuple(suites),
            public_key=_b64decode(key_text, f"{path}public_key"),
            extra=extras(obj, ("version", "suites", "public_key")),
            key_order=tuple(obj),
            key_text=key_text,
        )

    def to_json(self) -> dict[str, Any]:
        key_text = self.key_text
        if key_text is None:
            key_text = base64.urlsafe_b64encode(self.public_key).decode().rstrip("=")
        out = {"version": self.version, "suites": list(self.suites), "public_key": key_text}
        return ordered({**out, **self.extra}, self.key_order)


@dataclass(frozen=True, kw_only=True)
class AssertedIdentity:
    """Who the other party now is (``m.call.asserted_identity``, e.g. after a transfer)."""

    id: str | None = None
    display_name: str | None = None
    avatar_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_json(cls, value: object, path: str) -> "AssertedIdentity":
        obj = as_object(value, path.rstrip("."))
        return cls(
            id=string(obj, "id", path, optional=True),
            display_name=string(obj, "display_name", path, optional=True),
            avatar_url=string(obj, "avatar_url", path, optional=True),
            extra=extras(obj, ("id", "display_name", "avatar_url")),
            key_order=tuple(obj),
        )

    def to_json(self) -> dict[str, Any]:
        out = {
            k: v
            for k, v in (
                ("id", self.id),
                ("display_name", self.display_name),
                ("avatar_url", self.avatar_url),
            )
            if v is not None
        }
        return ordered({**out, **self.extra}, self.key_order)

"""What the SFU tells a call member (docs/sfu-protocol.md, sections 3 and 5), without I/O.

:func:`parse_sfu_message` reads one JSON text message from the SFU's WebSocket or its ``control``
data channel into a frozen dataclass; anything else raises :class:`SfuMessageError` (the caller
counts and drops it). Member ids are ``user_id|device_id``. :func:`subscribe_message`,
:func:`floor_message` and :func:`mute_message` write what the member sends on the control channel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .member_event import short_text
from .membership import MemberDevice

MAX_MESSAGE = 256 * 1024  # an SDP of a few dozen m-lines fits; a bigger message is refused
MAX_TRACKS = 1024
MAX_SDP = MAX_MESSAGE
QUALITY_NAMES = ("thumbnail", "full", "none")
KINDS = ("audio", "video")


class SfuMessageError(ValueError):
    """A message from the SFU that is not one of the protocol's."""


@dataclass(frozen=True)
class Joined:
    """We are in: our member id and the SFU's answer to our offer."""

    member: str
    sdp: str


@dataclass(frozen=True)
class Offer:
    """Renegotiation: forwarded streams added or removed."""

    sdp: str


@dataclass(frozen=True)
class Track:
    """One forwarded stream: its m-line, SSRC, kind and the member it carries."""

    mid: str
    ssrc: int
    kind: str
    member: MemberDevice


@dataclass(frozen=True)
class Tracks:
    """The complete list of streams forwarded to us now."""

    tracks: tuple[Track, ...]


@dataclass(frozen=True)
class Left:
    """A member left; its m-lines go in the next offer."""

    member: MemberDevice


@dataclass(frozen=True)
class Speaking:
    """Who is speaking, loudest first."""

    members: tuple[MemberDevice, ...]


@dataclass(frozen=True)
class Layer:
    """The layer of ``publisher``'s video we now receive."""

    publisher: MemberDevice
    quality: str


@dataclass(frozen=True)
class Floor:
    """Who has the focus (None: nobody)."""

    holder: MemberDevice | None


@dataclass(frozen=True)
class Muted:
    """``member``'s microphone (``audio``) and camera (``video``) are muted or not."""

    member: MemberDevice
    audio: bool
    video: bool


@dataclass(frozen=True)
class Error:
    """The SFU refused a message, or ended our admission (``admission_ended``)."""

    reason: str


SfuMessage = Joined | Offer | Tracks | Left | Speaking | Layer | Floor | Muted | Error


def parse_member(value: object) -> MemberDevice:
    """A ``user_id|device_id`` member id."""
    if not short_text(value, 600) or not isinstance(value, str):
        raise SfuMessageError("a member id must be a short string")
    user_id, sep, device_id = value.rpartition("|")
    if not sep or not user_id.startswith("@") or not device_id:
        raise SfuMessageError("a member id is user_id|device_id")
    return MemberDevice(user_id, device_id)


def member_id(device: MemberDevice) -> str:
    """The SFU's id of ``device``."""
    return f"{device.user_id}|{device.device_id}"


def _text(obj: dict[str, Any], key: str, limit: int = 255) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise SfuMessageError(f"{key} must be a string of 1..{limit} characters")
    return value


def _track(obj: object) -> Track:
    if not isinstance(obj, dict):
        raise SfuMessageError("a track must be an object")
    ssrc = obj.get("ssrc")
    if isinstance(ssrc, bool) or not isinstance(ssrc, int) or not 0 <= ssrc < 2**32:
        raise SfuMessageError("ssrc must be a 32-bit integer")
    kind = obj.get("kind")
    if kind not in KINDS:
        raise SfuMessageError("kind must be audio or video")
    return Track(_text(obj, "mid", 32), ssrc, str(kind), parse_member(obj.get("member")))


def _members(value: object) -> tuple[MemberDevice, ...]:
    if not isinstance(value, list) or len(value) > MAX_TRACKS:
        raise SfuMessageError("members must be a list")
    return tuple(parse_member(v) for v in value)


def parse_sfu_message(text: str | bytes) -> SfuMessage:
    """One message from the SFU; :class:`SfuMessageError` if it is not one."""
    if len(text) > MAX_MESSAGE:
        raise SfuMessageError("message too large")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise SfuMessageError("not JSON") from None
    if not isinstance(obj, dict):
        raise SfuMessageError("a message must be an object")
    kind = obj.get("type")
    if kind == "joined":
        # The contract names them id/answer; the first server wrote member/sdp.
        member = obj.get("id", obj.get("member"))
        sdp = obj.get("answer", obj.get("sdp"))
        return Joined(_text({"m": member}, "m", 600), _text({"s": sdp}, "s", MAX_SDP))
    if kind == "offer":
        return Offer(_text(obj, "sdp", MAX_SDP))
    if kind == "tracks":
        tracks = obj.get("tracks")
        if not isinstance(tracks, list) or len(tracks) > MAX_TRACKS:
            raise SfuMessageError("tracks must be a list")
        return Tracks(tuple(_track(t) for t in tracks))
    if kind == "left":
        return Left(parse_member(obj.get("member")))
    if kind == "speaking":
        return Speaking(_members(obj.get("members")))
    if kind == "layer":
        quality = obj.get("quality")
        if quality not in QUALITY_NAMES:
            raise SfuMessageError("quality must be thumbnail, full or none")
        return Layer(parse_member(obj.get("publisher")), str(quality))
    if kind == "floor":
        holder = obj.get("holder")
        return Floor(None if holder is None else parse_member(holder))
    if kind == "muted":
        audio, video = obj.get("audio"), obj.get("video")
        if type(audio) is not bool or type(video) is not bool:
            raise SfuMessageError("audio and video must be booleans")
        return Muted(parse_member(obj.get("member")), audio, video)
    if kind == "error":
        return Error(_text(obj, "reason", 200))
    raise SfuMessageError("unknown message type")


def subscribe_message(publisher: MemberDevice, quality: str) -> str:
    """Ask for ``publisher``'s video at ``quality``."""
    if quality not in QUALITY_NAMES:
        raise ValueError(f"unknown quality {quality!r}")
    return json.dumps({"type": "subscribe", "publisher": member_id(publisher), "quality": quality})


def mute_message(audio: bool, video: bool) -> str:
    """Tell the others (through the SFU) whether our microphone and camera are muted."""
    return json.dumps({"type": "mute", "audio": bool(audio), "video": bool(video)})


def floor_message(request: bool) -> str:
    """Ask for the focus, or give it up."""
    return json.dumps({"type": "floor", "action": "request" if request else "release"})

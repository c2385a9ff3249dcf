"""What the page reports of its link to an SFU (docs/web-protocol.md, "SFU group calls"), sans-I/O.

The page's ``sfu_*`` messages carry ``room_id`` (the group call whose link it is) and relay what
the SFU told the page (our member id, the forwarded streams and their members, who leaves, who
speaks, layers, the floor) or how its connection is. :func:`parse_sfu_result` checks each field
for type and size and builds a frozen dataclass; a bad one raises :class:`SfuResultError`,
which :func:`sealcall.web.protocol.parse_message` turns into a refused message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

from sealcall.group import MemberDevice

MAX_ID_CHARS: Final = 255
MAX_TRACKS: Final = 512
MAX_DETAIL_CHARS: Final = 200
SfuLinkState = Literal["connected", "failed", "closed"]
_STATES: Final = frozenset({"connected", "failed", "closed"})
_KINDS: Final = frozenset({"audio", "video"})
_LAYERS: Final = frozenset({"thumbnail", "full"})
_TRACK_KEYS: Final = frozenset({"mid", "ssrc", "kind", "member"})


class SfuResultError(ValueError):
    """A field of an ``sfu_*`` message that breaks the contract (our words, never the page's)."""


@dataclass(frozen=True, kw_only=True)
class SfuResultBase:
    """Every ``sfu_*`` message: the room whose group call's link it is."""

    room_id: str


@dataclass(frozen=True, kw_only=True)
class SfuState(SfuResultBase):
    """The page's connection to the SFU: ``connected``, ``failed`` (``detail``: the error's
    name, or the SFU's ``admission_ended``) or ``closed``."""

    state: SfuLinkState
    detail: str | None = None


@dataclass(frozen=True, kw_only=True)
class SfuJoined(SfuResultBase):
    """The SFU took our join: ``member`` is our member device as it names it."""

    member: MemberDevice


@dataclass(frozen=True)
class SfuTrack:
    """One forwarded stream: its m-line, SSRC, kind and the member it carries."""

    mid: str
    ssrc: int
    kind: str
    member: MemberDevice


@dataclass(frozen=True, kw_only=True)
class SfuTracks(SfuResultBase):
    """The SFU's ``tracks`` announcement, complete each time."""

    tracks: tuple[SfuTrack, ...]


@dataclass(frozen=True, kw_only=True)
class SfuLeft(SfuResultBase):
    """The SFU says a member left."""

    member: MemberDevice


@dataclass(frozen=True, kw_only=True)
class SfuSpeaking(SfuResultBase):
    """Who the SFU says is speaking, loudest first."""

    members: tuple[MemberDevice, ...]


@dataclass(frozen=True, kw_only=True)
class SfuLayer(SfuResultBase):
    """The layer of a publisher's video the page now receives."""

    publisher: MemberDevice
    quality: Literal["thumbnail", "full"]


@dataclass(frozen=True, kw_only=True)
class SfuFloor(SfuResultBase):
    """Who has the focus, or nobody."""

    holder: MemberDevice | None


@dataclass(frozen=True, kw_only=True)
class SfuMuted(SfuResultBase):
    """A member's microphone / camera are muted or not (the SFU's ``muted``)."""

    member: MemberDevice
    audio: bool
    video: bool


SfuResult = (
    SfuState | SfuJoined | SfuTracks | SfuLeft | SfuSpeaking | SfuLayer | SfuFloor | SfuMuted
)


def _text(name: str, value: Any, limit: int = MAX_ID_CHARS) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise SfuResultError(f"field {name} must be a string of 1..{limit} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise SfuResultError(f"field {name} is not valid UTF-8") from None
    return value


def member_device(name: str, value: Any) -> MemberDevice:
    """An SFU member id (``user_id|device_id``; the user id holds no ``|``) as a device."""
    text = _text(name, value)
    user_id, bar, device_id = text.partition("|")
    if not bar or not user_id.startswith("@") or ":" not in user_id or not device_id:
        raise SfuResultError(f"field {name} must be a member id, @user:server|DEVICE")
    return MemberDevice(user_id, device_id)


def _members(name: str, value: Any) -> tuple[MemberDevice, ...]:
    if not isinstance(value, list) or len(value) > MAX_TRACKS:
        raise SfuResultError(f"field {name} must be an array of <= {MAX_TRACKS} member ids")
    return tuple(member_device(name, v) for v in value)


def _track(value: Any) -> SfuTrack:
    if not isinstance(value, dict) or set(value) != _TRACK_KEYS:
        raise SfuResultError("field tracks must hold objects of mid, ssrc, kind, member")
    ssrc = value["ssrc"]
    if not isinstance(ssrc, int) or isinstance(ssrc, bool) or not 0 <= ssrc < 2**32:
        raise SfuResultError("field ssrc must be an integer in 0..2^32-1")
    if value["kind"] not in _KINDS:
        raise SfuResultError("field kind must be audio or video")
    return SfuTrack(
        _text("mid", value["mid"]), ssrc, value["kind"], member_device("member", value["member"])
    )


def _tracks(name: str, value: Any) -> tuple[SfuTrack, ...]:
    if not isinstance(value, list) or len(value) > MAX_TRACKS:
        raise SfuResultError(f"field {name} must be an array of <= {MAX_TRACKS} tracks")
    return tuple(_track(v) for v in value)


def _state(name: str, value: Any) -> str:
    if value not in _STATES:
        raise SfuResultError(f"field {name} must be connected, failed or closed")
    return str(value)


def _quality(name: str, value: Any) -> str:
    if value not in _LAYERS:
        raise SfuResultError(f"field {name} must be thumbnail or full")
    return str(value)


def _holder(name: str, value: Any) -> MemberDevice | None:
    return None if value is None else member_device(name, value)


def _bool(name: str, value: Any) -> bool:
    if type(value) is not bool:
        raise SfuResultError(f"field {name} must be a boolean")
    return value


Check = Callable[[str, Any], Any]
_SHAPES: Final[Mapping[str, tuple[type[Any], Mapping[str, Check], Mapping[str, Check]]]] = (
    MappingProxyType(
        {
            "sfu_state": (
                SfuState,
                {"state": _state},
                {"detail": lambda n, v: _text(n, v, MAX_DETAIL_CHARS)},
            ),
            "sfu_joined": (SfuJoined, {"member": member_device}, {}),
            "sfu_tracks": (SfuTracks, {"tracks": _tracks}, {}),
            "sfu_left": (SfuLeft, {"member": member_device}, {}),
            "sfu_speaking": (SfuSpeaking, {"members": _members}, {}),
            "sfu_layer": (SfuLayer, {"publisher": member_device, "quality": _quality}, {}),
            "sfu_floor": (SfuFloor, {"holder": _holder}, {}),
            "sfu_muted": (
                SfuMuted,
                {"member": member_device, "audio": _bool, "video": _bool},
                {},
            ),
        }
    )
)
SFU_RESULT_TYPES: Final = frozenset(_SHAPES)


def parse_sfu_result(kind: str, body: dict[str, Any]) -> SfuResult:
    """The ``sfu_*`` message ``kind`` with the fields ``body`` (``type`` removed)."""
    cls, required, optional = _SHAPES[kind]
    if not body.keys() <= {"room_id", *required, *optional}:
        raise SfuResultError("unknown field")
    values: dict[str, Any] = {"room_id": _text("room_id", body.get("room_id"))}
    for name, check in required.items():
        if name not in body:
            raise SfuResultError(f"missing field {name}")
        values[name] = check(name, body[name])
    for name, check in optional.items():
        if name in body:
            values[name] = check(name, body[name])
    result: SfuResult = cls(**values)
    return result

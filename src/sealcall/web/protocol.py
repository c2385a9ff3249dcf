"""The page socket's messages (docs/web-protocol.md), sans-I/O: parse the page's, build ours.

:func:`parse_message` turns one text frame into a frozen dataclass (a request, which carries an
``id`` and gets exactly one reply, or a media result, addressed by ``call_id`` or ``pair_id``) or
raises :class:`ProtocolError`. Every field is checked for type and size; fields the contract does
not name are refused. Error messages name our own fields and limits only, never what the page
sent (an SDP may carry ICE credentials).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from .sfu_results import SFU_RESULT_TYPES, SfuResult, SfuResultError, parse_sfu_result

MAX_MESSAGE_CHARS: Final = 256 * 1024
MAX_REQUEST_ID_CHARS: Final = 64
MAX_REQUEST_ID_INT: Final = 2**53
MAX_ID_CHARS: Final = 255
MAX_SDP_CHARS: Final = 64 * 1024
MAX_CANDIDATES: Final = 64
MAX_CANDIDATE_CHARS: Final = 1024
MAX_SDP_MLINE_INDEX: Final = 65535
MAX_STREAMS: Final = 8
MAX_DETAIL_CHARS: Final = 200

RequestId = str | int
StreamPurpose = Literal["m.usermedia", "m.screenshare"]
ErrorCode = Literal["bad_request", "not_found", "illegal", "unencrypted", "failed"]
ConnectionStateValue = Literal["connected", "disconnected", "failed", "closed"]

_PURPOSES: Final = frozenset({"m.usermedia", "m.screenshare"})
_CONNECTION_STATES: Final = frozenset({"connected", "disconnected", "failed", "closed"})
_CANDIDATE_KEYS: Final = frozenset({"candidate", "sdpMid", "sdpMLineIndex"})


class ProtocolError(Exception):
    """A message the page should not have sent; ``request_id`` is set when its ``id`` was usable."""

    def __init__(self, message: str, *, request_id: RequestId | None = None) -> None:
        super().__init__(message)
        self.code: ErrorCode = "bad_request"
        self.message = message
        self.request_id = request_id


# --- page -> Python: requests -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Request:
    id: RequestId


@dataclass(frozen=True, kw_only=True)
class Hello(_Request):
    """The page's first message; ``e2ee``: the browser has ``RTCRtpScriptTransform``."""

    e2ee: bool


@dataclass(frozen=True, kw_only=True)
class ListRooms(_Request):
    """Ask for the rooms (DMs and groups)."""


@dataclass(frozen=True, kw_only=True)
class GetHistory(_Request):
    """Ask for a room's call history items, oldest first."""

    room_id: str


@dataclass(frozen=True, kw_only=True)
class PlaceCall(_Request):
    """Place a 1:1 call in a DM room."""

    room_id: str
    video: bool


@dataclass(frozen=True, kw_only=True)
class Answer(_Request):
    """Answer a ringing call; ``video`` None: as offered."""

    call_id: str
    video: bool | None
    allow_unencrypted: bool


@dataclass(frozen=True, kw_only=True)
class Reject(_Request):
    """Reject a ringing call."""

    call_id: str


@dataclass(frozen=True, kw_only=True)
class HangUp(_Request):
    """End a call."""

    call_id: str


@dataclass(frozen=True, kw_only=True)
class Hold(_Request):
    """Put a call on hold or resume it."""

    call_id: str
    on_hold: bool


@dataclass(frozen=True, kw_only=True)
class Mute(_Request):
    """Mute or unmute the microphone and/or camera (None: leave as it is)."""

    call_id: str
    audio: bool | None = None
    video: bool | None = None


@dataclass(frozen=True, kw_only=True)
class ScreenShare(_Request):
    """Start or stop sharing the screen in a call."""

    call_id: str
    on: bool


@dataclass(frozen=True, kw_only=True)
class UpgradeVideo(_Request):
    """Add the camera to an audio call."""

    call_id: str


@dataclass(frozen=True, kw_only=True)
class GroupJoin(_Request):
    """Join (or start) a room's group call."""

    room_id: str
    video: bool


@dataclass(frozen=True, kw_only=True)
class GroupLeave(_Request):
    """Leave a room's group call."""

    room_id: str


@dataclass(frozen=True, kw_only=True)
class GroupMute(_Request):
    """Mute or unmute in a group call (None: leave as it is)."""

    room_id: str
    audio: bool | None = None
    video: bool | None = None


@dataclass(frozen=True, kw_only=True)
class GroupScreenShare(_Request):
    """Start or stop sharing the screen in a group call."""

    room_id: str
    on: bool


@dataclass(frozen=True, kw_only=True)
class OpenDm(_Request):
    """Find or create the encrypted DM with a user (to call them)."""

    user_id: str


@dataclass(frozen=True, kw_only=True)
class GroupDecline(_Request):
    """Decline a room's ringing group call (MSC4310)."""

    room_id: str


@dataclass(frozen=True, kw_only=True)
class SetRelayOnly(_Request):
    """Turn the relay-only setting on or off for the calls begun from now on."""

    on: bool


Request = (
    Hello
    | ListRooms
    | GetHistory
    | PlaceCall
    | Answer
    | Reject
    | HangUp
    | Hold
    | Mute
    | ScreenShare
    | UpgradeVideo
    | GroupJoin
    | GroupLeave
    | GroupMute
    | GroupScreenShare
    | GroupDecline
    | OpenDm
    | SetRelayOnly
)


# --- page -> Python: media results ---------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _MediaResult:
    # Exactly one of the two is set: a 1:1 call, or a mesh pair of a group call.
    call_id: str | None = None
    pair_id: str | None = None


@dataclass(frozen=True)
class IceCandidate:
    """One trickled candidate; an empty ``candidate`` ends them."""

    candidate: str
    sdp_mid: str | None
    sdp_mline_index: int | None


@dataclass(frozen=True, kw_only=True)
class LocalDescription(_MediaResult):
    """The page's offer or answer, with the purpose of each local stream."""

    sdp: str = field(repr=False)
    streams: Mapping[str, StreamPurpose]


@dataclass(frozen=True, kw_only=True)
class LocalCandidates(_MediaResult):
    """Trickled local ICE candidates."""

    candidates: tuple[IceCandidate, ...] = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class ConnectionState(_MediaResult):
    """The page's peer connection reached a state the engine cares about."""

    state: ConnectionStateValue


@dataclass(frozen=True, kw_only=True)
class MediaFailed(_MediaResult):
    """A media step failed; ``detail`` is the error's name only."""

    detail: str


MediaResult = LocalDescription | LocalCandidates | ConnectionState | MediaFailed


# --- field checks --------------------------------------------------------------------------------


class _FieldError(Exception):
    """A field that fails its check; the parser adds the type and the request id."""


Check = Callable[[str, Any], Any]


def _text(value: Any, name: str, limit: int, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise _FieldError(f"field {name} must be a string")
    if len(value) > limit or (not empty and not value):
        raise _FieldError(f"field {name} must have {0 if empty else 1}..{limit} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _FieldError(f"field {name} is not valid UTF-8") from None
    return value


def _id(name: str, value: Any) -> str:
    return _text(value, name, MAX_ID_CHARS)


_USER_ID = re.compile(r"@[^:\s]+:[^\s]+")


def _user_id(name: str, value: Any) -> str:
    text = _id(name, value)
    if not _USER_ID.fullmatch(text):
        raise _FieldError(f"field {name} must be a user id, @name:server")
    return text


def _bool(name: str, value: Any) -> bool:
    # json gives bool for true/false only; isinstance(1, bool) is False, so 0/1 are refused.
    if not isinstance(value, bool):
        raise _FieldError(f"field {name} must be a boolean")
    return value


def _bool_or_null(name: str, value: Any) -> bool | None:
    return None if value is None else _bool(name, value)


def _sdp(name: str, value: Any) -> str:
    return _text(value, name, MAX_SDP_CHARS)


def _detail(name: str, value: Any) -> str:
    return _text(value, name, MAX_DETAIL_CHARS)


def _connection_state(name: str, value: Any) -> str:
    if not isinstance(value, str) or value not in _CONNECTION_STATES:
        raise _FieldError(f"field {name} must be one of {', '.join(sorted(_CONNECTION_STATES))}")
    return value


def _streams(name: str, value: Any) -> Mapping[str, str]:
    if not isinstance(value, dict):
        raise _FieldError(f"field {name} must be an object")
    if len(value) > MAX_STREAMS:
        raise _FieldError(f"field {name} has more than {MAX_STREAMS} streams")
    for stream_id, purpose in value.items():
        _text(stream_id, f"{name} key", MAX_ID_CHARS)
        if not isinstance(purpose, str) or purpose not in _PURPOSES:
            raise _FieldError(f"field {name} values must be m.usermedia or m.screenshare")
    return MappingProxyType(dict(value))


def _candidate(name: str, value: Any) -> IceCandidate:
    if not isinstance(value, dict):
        raise _FieldError(f"field {name} must hold objects")
    if not value.keys() <= _CANDIDATE_KEYS or "candidate" not in value:
        raise _FieldError(f"field {name} objects take candidate, sdpMid, sdpMLineIndex only")
    text = _text(value["candidate"], "candidate", MAX_CANDIDATE_CHARS, empty=True)
    mid = value.get("sdpMid")
    if mid is not None:
        mid = _text(mid, "sdpMid", MAX_ID_CHARS, empty=True)
    index = value.get("sdpMLineIndex")
    valid_index = isinstance(index, int) and not isinstance(index, bool)
    if index is not None and not (valid_index and 0 <= index <= MAX_SDP_MLINE_INDEX):
        raise _FieldError(f"field sdpMLineIndex must be null or in 0..{MAX_SDP_MLINE_INDEX}")
    return IceCandidate(text, mid, index)


def _candidates(name: str, value: Any) -> tuple[IceCandidate, ...]:
    if not isinstance(value, list):
        raise _FieldError(f"field {name} must be an array")
    if len(value) > MAX_CANDIDATES:
        raise _FieldError(f"field {name} has more than {MAX_CANDIDATES} candidates")
    return tuple(_candidate(name, item) for item in value)


@dataclass(frozen=True)
class _Shape:
    """One message type: its dataclass, its required fields and its optional ones."""

    cls: type[Any]
    required: Mapping[str, Check]
    optional: Mapping[str, Check] = field(default_factory=dict)


_CALL: Final[dict[str, Check]] = {"call_id": _id}
_ROOM: Final[dict[str, Check]] = {"room_id": _id}
_MUTE: Final[dict[str, Check]] = {"audio": _bool, "video": _bool}

REQUESTS: Final[Mapping[str, _Shape]] = MappingProxyType(
    {
        "hello": _Shape(Hello, {"e2ee": _bool}),
        "list_rooms": _Shape(ListRooms, {}),
        "get_history": _Shape(GetHistory, _ROOM),
        "place_call": _Shape(PlaceCall, {**_ROOM, "video": _bool}),
        "answer": _Shape(Answer, {**_CALL, "video": _bool_or_null, "allow_unencrypted": _bool}),
        "reject": _Shape(Reject, _CALL),
        "hangup": _Shape(HangUp, _CALL),
        "hold": _Shape(Hold, {**_CALL, "on_hold": _bool}),
        "mute": _Shape(Mute, _CALL, _MUTE),
        "screen_share": _Shape(ScreenShare, {**_CALL, "on": _bool}),
        "upgrade_video": _Shape(UpgradeVideo, _CALL),
        "group_join": _Shape(GroupJoin, {**_ROOM, "video": _bool}),
        "group_leave": _Shape(GroupLeave, _ROOM),
        "group_mute": _Shape(GroupMute, _ROOM, _MUTE),
        "group_screen_share": _Shape(GroupScreenShare, {**_ROOM, "on": _bool}),
        "group_decline": _Shape(GroupDecline, _ROOM),
        "open_dm": _Shape(OpenDm, {"user_id": _user_id}),
        "set_relay_only": _Shape(SetRelayOnly, {"on": _bool}),
    }
)
"""The page's requests by ``type`` (each also carries ``id``)."""

MEDIA_RESULTS: Final[Mapping[str, _Shape]] = MappingProxyType(
    {
        "local_description": _Shape(LocalDescription, {"sdp": _sdp, "streams": _streams}),
        "local_candidates": _Shape(LocalCandidates, {"candidates": _candidates}),
        "connection_state": _Shape(ConnectionState, {"state": _connection_state}),
        "media_failed": _Shape(MediaFailed, {"detail": _detail}),
    }
)
"""The page's media results by ``type`` (each also carries ``call_id`` or ``pair_id``)."""

# --- parsing -------------------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _FieldError("duplicate key in an object")
    return result


def _no_constant(_name: str) -> Any:
    raise _FieldError("NaN and Infinity are not JSON")


def _request_id(value: Any) -> RequestId | None:
    """The message's ``id`` if it is one the contract allows, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_REQUEST_ID_INT else None
    if isinstance(value, str) and len(value) <= MAX_REQUEST_ID_CHARS:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return None
        return value
    return None


def _decode(text: str) -> dict[str, Any]:
    if len(text) > MAX_MESSAGE_CHARS:
        raise ProtocolError(f"message over {MAX_MESSAGE_CHARS} characters")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _FieldError as exc:
        raise ProtocolError(str(exc)) from None
    except RecursionError:
        raise ProtocolError("message nested too deeply") from None
    except ValueError:
        # JSONDecodeError, and ints over Python's digit limit.
        raise ProtocolError("message is not JSON") from None
    if not isinstance(value, dict):
        raise ProtocolError("message is not a JSON object")
    return value


def _fill(shape: _Shape, body: dict[str, Any], fixed: dict[str, Any]) -> Any:
    """Check ``body``'s fields against ``shape``; build the dataclass."""
    known = shape.required.keys() | shape.optional.keys()
    if not body.keys() <= known:
        raise _FieldError("unknown field")
    values = dict(fixed)
    for name, check in shape.required.items():
        if name not in body:
            raise _FieldError(f"missing field {name}")
        values[name] = check(name, body[name])
    for name, check in shape.optional.items():
        if name in body:
            values[name] = check(name, body[name])
    return shape.cls(**values)


def _address(body: dict[str, Any]) -> dict[str, str | None]:
    call_id = body.pop("call_id", None)
    pair_id = body.pop("pair_id", None)
    if (call_id is None) == (pair_id is None):
        raise _FieldError("exactly one of call_id and pair_id is needed")
    if call_id is not None:
        return {"call_id": _id("call_id", call_id), "pair_id": None}
    return {"call_id": None, "pair_id": _id("pair_id", pair_id)}


def parse_message(text: str) -> Request | MediaResult | SfuResult:
    """Parse one text frame of the page socket; :class:`ProtocolError` if it breaks the contract."""
    body = _decode(text)
    kind = body.pop("type", None)
    request_id = _request_id(body.get("id"))
    if not isinstance(kind, str):
        raise ProtocolError("field type must be a string", request_id=request_id)
    if kind in SFU_RESULT_TYPES:
        try:
            return parse_sfu_result(kind, body)
        except SfuResultError as exc:
            raise ProtocolError(f"{kind}: {exc}") from None
    request = REQUESTS.get(kind)
    try:
        if request is not None:
            if "id" not in body:
                raise _FieldError("missing field id")
            del body["id"]
            if request_id is None:
                raise _FieldError(
                    f"field id must be a string of <= {MAX_REQUEST_ID_CHARS} characters"
                    f" or an integer in 0..2^53"
                )
            parsed: Request = _fill(request, body, {"id": request_id})
            return parsed
        media = MEDIA_RESULTS.get(kind)
        if media is None:
            raise _FieldError("unknown type")
        result: MediaResult = _fill(media, body, _address(body))
        return result
    except _FieldError as exc:
        prefix = kind if (request is not None or kind in MEDIA_RESULTS) else "message"
        raise ProtocolError(f"{prefix}: {exc}", request_id=request_id) from None


# --- Python -> page ------------------------------------------------------------------------------


def result(request_id: RequestId, **fields: Any) -> dict[str, Any]:
    """The ``result`` reply to request ``request_id``, with the request's result fields."""
    return {"type": "result", "id": request_id, **fields}


def error(request_id: RequestId, code: ErrorCode, message: str) -> dict[str, Any]:
    """The ``error`` reply to request ``request_id``."""
    return {"type": "error", "id": request_id, "code": code, "message": message}


def encode(message: Mapping[str, Any]) -> str:
    """One message as a compact JSON text frame (ASCII only: no lone surrogate can break it)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


__all__ = [
    "MEDIA_RESULTS",
    "REQUESTS",
    "Answer",
    "ConnectionState",
    "ErrorCode",
    "GetHistory",
    "GroupDecline",
    "GroupJoin",
    "GroupLeave",
    "GroupMute",
    "GroupScreenShare",
    "HangUp",
    "Hello",
    "Hold",
    "IceCandidate",
    "ListRooms",
    "LocalCandidates",
    "LocalDescription",
    "MediaFailed",
    "MediaResult",
    "Mute",
    "OpenDm",
    "PlaceCall",
    "ProtocolError",
    "Reject",
    "Request",
    "RequestId",
    "ScreenShare",
    "SetRelayOnly",
    "UpgradeVideo",
    "encode",
    "error",
    "parse_message",
    "result",
]

"""The control data channel's messages (``control``, JSON text), strictly parsed.

Client to SFU: ``subscribe`` (which layer of a publisher's video: ``thumbnail``, ``full`` or
``none``), ``floor`` (``request`` / ``release`` the focus) and ``mute`` (whether its microphone
and camera are muted: JSON booleans). SFU to client (built with ``signaling.message``):
``speaking``, ``layer``, ``floor``, ``muted`` and ``error``. Anything else, a missing
or mistyped field, unknown keys, binary or oversized messages raise :class:`ControlError`, whose
``reason`` is safe to send back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FLOOR_ACTIONS",
    "MAX_CONTROL_ERRORS",
    "MAX_CONTROL_MESSAGE",
    "QUALITIES",
    "ControlError",
    "ControlMessage",
    "Floor",
    "Mute",
    "Subscribe",
    "parse_control_message",
]

MAX_CONTROL_MESSAGE = 4096
MAX_CONTROL_ERRORS = 20  # bad messages tolerated on one channel before it is closed
MAX_MEMBER_ID = 1024
QUALITIES = ("thumbnail", "full", "none")
FLOOR_ACTIONS = ("request", "release")


class ControlError(ValueError):
    """A control message the SFU cannot use (remote input); ``reason`` is safe to send back."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Subscribe:
    """Ask for a publisher's video at ``quality`` ("thumbnail", "full" or "none")."""

    publisher: str
    quality: str


@dataclass(frozen=True)
class Floor:
    """Ask for the room's focus (``request``) or give it up (``release``)."""

    action: str


@dataclass(frozen=True)
class Mute:
    """The sender's microphone (``audio``) and camera (``video``) are muted (True) or not."""

    audio: bool
    video: bool


ControlMessage = Subscribe | Floor | Mute

_FIELDS: dict[str, frozenset[str]] = {
    "subscribe": frozenset({"type", "publisher", "quality"}),
    "floor": frozenset({"type", "action"}),
    "mute": frozenset({"type", "audio", "video"}),
}


def _choice(obj: dict[str, Any], key: str, choices: tuple[str, ...]) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or value not in choices:
        raise ControlError(f"{key} must be one of {', '.join(choices)}")
    return value


def parse_control_message(text: str | bytes) -> ControlMessage:
    """Parse one message from a participant's control channel; :class:`ControlError` if bad."""
    if not isinstance(text, str):
        raise ControlError("messages must be text")
    if len(text) > MAX_CONTROL_MESSAGE:
        raise ControlError("message too large")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise ControlError("not JSON") from None
    if not isinstance(obj, dict):
        raise ControlError("a message must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise ControlError("unknown message type")
    if set(obj) != _FIELDS[kind]:
        raise ControlError(f"missing or unexpected fields in {kind}")
    if kind == "subscribe":
        publisher = obj["publisher"]
        if not isinstance(publisher, str) or not 0 < len(publisher) <= MAX_MEMBER_ID:
            raise ControlError("publisher must be a member id")
        return Subscribe(publisher, _choice(obj, "quality", QUALITIES))
    if kind == "mute":
        audio, video = obj["audio"], obj["video"]
        if type(audio) is not bool or type(video) is not bool:  # 0/1 or "true" are refused too
            raise ControlError("audio and video must be booleans")
        return Mute(audio, video)
    return Floor(_choice(obj, "action", FLOOR_ACTIONS))

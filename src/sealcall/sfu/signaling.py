"""The SFU's signaling messages: one JSON object per WebSocket text message, strictly parsed.

Client to SFU: ``join`` (join token and the participant's first SDP offer), ``answer`` (to an offer
of the SFU's), ``candidate`` (a trickled ICE candidate, or null at the end), ``leave``. SFU to
client: ``joined`` (the participant's ``id`` and the SFU's ``answer``), ``offer`` (renegotiation:
forwarded streams added or removed), ``tracks`` (which forwarded stream carries which member),
``left`` (a member left), ``error``. Subscriptions, who is speaking and the floor go over the
``control`` data channel (:mod:`.control`). Anything else, a missing or mistyped field, unknown
keys or oversized text raises :class:`SignalingError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_MESSAGE",
    "Answer",
    "Candidate",
    "ClientMessage",
    "Join",
    "Leave",
    "SignalingError",
    "message",
    "parse_client_message",
]

MAX_MESSAGE = 64 * 1024  # an SDP offer of a few m-lines is a few kB
MAX_SDP = 32 * 1024
MAX_FIELD = 1024


class SignalingError(ValueError):
    """A client message the SFU cannot use (remote input); ``reason`` is safe to send back."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Join:
    """Join a room with a join token (from admission) and the participant's SDP offer."""

    token: object
    offer: str


@dataclass(frozen=True)
class Answer:
    """The participant's answer to the SFU's latest renegotiation offer."""

    sdp: str


@dataclass(frozen=True)
class Candidate:
    """A trickled ICE candidate (the SDP ``candidate:`` value), None at the end of candidates."""

    candidate: str | None


@dataclass(frozen=True)
class Leave:
    """Leave the room (the WebSocket closing does the same)."""


ClientMessage = Join | Answer | Candidate | Leave

_FIELDS: dict[str, frozenset[str]] = {
    "join": frozenset({"type", "token", "offer"}),
    "answer": frozenset({"type", "sdp"}),
    "candidate": frozenset({"type", "candidate"}),
    "leave": frozenset({"type"}),
}


def _text(obj: dict[str, Any], key: str, limit: int = MAX_FIELD) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise SignalingError(f"{key} must be a non-empty string")
    if len(value) > limit:
        raise SignalingError(f"{key} is too long")
    return value


def _token(value: object) -> object:
    # A join token is a string (AdmissionService) or a small flat object (open admission, tests).
    if isinstance(value, str) and 0 < len(value) <= MAX_FIELD:
        return value
    if (
        isinstance(value, dict)
        and len(value) <= 8
        and all(
            isinstance(k, str) and isinstance(v, str) and len(v) <= MAX_FIELD
            for k, v in value.items()
        )
    ):
        return dict(value)
    raise SignalingError("token must be a string or a flat object of strings")


def parse_client_message(text: str | bytes) -> ClientMessage:
    """Parse one message from a participant; :class:`SignalingError` if it is not one."""
    if isinstance(text, bytes):
        raise SignalingError("messages must be text")
    if len(text) > MAX_MESSAGE:
        raise SignalingError("message too large")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise SignalingError("not JSON") from None
    if not isinstance(obj, dict):
        raise SignalingError("a message must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise SignalingError("unknown message type")
    if set(obj) - _FIELDS[kind]:
        raise SignalingError(f"unexpected fields in {kind}")
    if kind == "join":
        return Join(token=_token(obj.get("token")), offer=_text(obj, "offer", MAX_SDP))
    if kind == "answer":
        return Answer(sdp=_text(obj, "sdp", MAX_SDP))
    if kind == "candidate":
        if "candidate" not in obj:
            raise SignalingError("candidate is missing")
        if obj["candidate"] is None:
            return Candidate(None)
        return Candidate(_text(obj, "candidate"))
    return Leave()


def message(kind: str, **fields: Any) -> str:
    """An SFU-to-client message as JSON text."""
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))

"""Call history: one immutable item per call, the way a chat app lists calls.

The rules that turn end events into an outcome live here, once, so that the engine's
:class:`HistoryItem` and the room's record (:mod:`sealcall.calls.room_history`) always agree:

- a call counts as *answered* only when an answer was selected (or media connected) and it did
  not end in a failure that means media never flowed (``ice_failed``, ``encryption_required``);
- a callee's ``m.call.reject`` is *rejected*, or *busy* with reason ``user_busy``, or *failed* with
  a failure reason (``org.sealcall.reason: encryption_required``, ``user_media_failed``, ...);
- a caller's hang-up before an answer is *cancelled* for the caller and *missed* for the callee;
- an unanswered invite that timed out is *missed* on both sides.
"""

from dataclasses import dataclass
from enum import StrEnum

from sealcall.signaling import CallHangup, CallReject, HangupReason

from .states import Direction

# End reasons that are not hangup reasons of the spec.
REJECTED = "rejected"
ENCRYPTION_REQUIRED = "encryption_required"
# Our reason for a refusal, next to the spec's (which has no word for it).
REASON_KEY = "org.sealcall.reason"

_FAILURES = frozenset(
    {
        HangupReason.ICE_FAILED.value,
        HangupReason.ICE_TIMEOUT.value,
        HangupReason.USER_MEDIA_FAILED.value,
        HangupReason.UNKNOWN_ERROR.value,
        ENCRYPTION_REQUIRED,
    }
)
# End reasons that say media never flowed, even if an answer was selected.
_NEVER_CONNECTED = frozenset({HangupReason.ICE_FAILED.value, ENCRYPTION_REQUIRED})


class Outcome(StrEnum):
    """How a call turned out, from this side's point of view."""

    ANSWERED = "answered"
    MISSED = "missed"
    REJECTED = "rejected"
    BUSY = "busy"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class HistoryItem:
    """One call in the history.

    ``started_at`` is when the call was placed (wall-clock seconds); ``duration`` counts from
    connection to hang-up (0 for calls that never connected). ``answered_elsewhere`` marks an
    incoming call that another of our devices took. ``encrypted`` is False only for a call whose
    media flowed (or would have flowed) without frame encryption, by the user's opt-in.
    """

    call_id: str
    peer: str
    direction: Direction
    video: bool
    outcome: Outcome
    started_at: float
    duration: float
    end_reason: str
    encrypted: bool
    answered_elsewhere: bool = False


def reject_end(reject: CallReject) -> tuple[str, Outcome]:
    """The end reason and outcome of a call the callee refused with ``reject`` (either side)."""
    if reject.extra.get(REASON_KEY) == ENCRYPTION_REQUIRED:
        return ENCRYPTION_REQUIRED, Outcome.FAILED
    reason = reject.reason
    if reason is None or reason == HangupReason.USER_HANGUP.value:
        return REJECTED, Outcome.REJECTED
    if reason == HangupReason.USER_BUSY.value:
        return reason, Outcome.BUSY
    if reason == HangupReason.INVITE_TIMEOUT.value:
        return reason, Outcome.MISSED
    return reason, Outcome.FAILED if reason in _FAILURES else Outcome.REJECTED


def hangup_reason(hangup: CallHangup) -> str:
    """The end reason a hang-up gives (our ``encryption_required`` before the spec's reason)."""
    if hangup.extra.get(REASON_KEY) == ENCRYPTION_REQUIRED:
        return ENCRYPTION_REQUIRED
    return hangup.reason or HangupReason.USER_HANGUP.value


def unanswered_outcome(reason: str, *, by_caller: bool, direction: Direction) -> Outcome:
    """The outcome of a call that a hang-up with ``reason`` ended before it was answered."""
    if reason == HangupReason.USER_BUSY.value:
        return Outcome.BUSY
    if reason in _FAILURES:
        return Outcome.FAILED
    if reason == HangupReason.INVITE_TIMEOUT.value:
        return Outcome.MISSED
    if not by_caller:
        return Outcome.REJECTED  # a callee declining the old way (VoIP v0)
    return Outcome.CANCELLED if direction is Direction.OUTGOING else Outcome.MISSED


def counts_as_answered(selected: bool, reason: str) -> bool:
    """Whether a call whose answer was ``selected`` and that ended with ``reason`` was answered."""
    return selected and reason not in _NEVER_CONNECTED

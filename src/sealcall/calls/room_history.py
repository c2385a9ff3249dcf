"""Call history read back from a room's timeline: the call events themselves are the record.

:func:`calls_from_timeline` folds the call events of a DM room (oldest first) into one
:class:`RoomCallEntry` per call, the way a chat app shows call items: who called whom, audio or
video, the outcome and how long it lasted.
"""

from dataclasses import dataclass

from sealcall.signaling import (
    CallAnswer,
    CallHangup,
    CallInvite,
    CallReject,
    CallSelectAnswer,
    HangupReason,
    SignalingError,
    parse,
)
from sealcall.transport.base import TimelineEvent

from .history import Outcome


@dataclass(frozen=True)
class RoomCallEntry:
    """One call as the room's timeline records it."""

    call_id: str
    caller: str
    callee: str | None
    video: bool
    outcome: Outcome
    started_at: float
    duration: float
    end_reason: str | None

    def describe(self) -> str:
        """A one-line rendering: ``alice -> bob  video  answered  1m05s``."""
        kind = "video" if self.video else "voice"
        minutes, seconds = divmod(round(self.duration), 60)
        length = f"{minutes}m{seconds:02d}s" if self.outcome is Outcome.ANSWERED else ""
        who = f"{self.caller} -> {self.callee or '?'}"
        return f"{who}  {kind}  {self.outcome.value}  {length}".rstrip()


@dataclass
class _Fold:
    invite: CallInvite
    caller: str
    started_ms: int
    callee: str | None = None
    answered_ms: int | None = None
    ended_ms: int | None = None
    reason: str | None = None
    rejected: bool = False


def calls_from_timeline(events: list[TimelineEvent]) -> list[RoomCallEntry]:
    """Fold a room's call events (oldest first) into history entries, oldest call first.

    Malformed events are skipped. A call with no end event yet is reported by what is known:
    answered (still running) or missed.
    """
    calls: dict[str, _Fold] = {}
    for item in events:
        try:
            event = parse(item.event)
        except SignalingError:
            continue
        if isinstance(event, CallInvite):
            calls.setdefault(
                event.call_id, _Fold(event, item.sender, item.timestamp_ms, event.invitee)
            )
            continue
        fold = calls.get(event.call_id)
        if fold is None or fold.ended_ms is not None:
            continue
        if isinstance(event, CallAnswer) and fold.answered_ms is None:
            fold.answered_ms = item.timestamp_ms
            fold.callee = fold.callee or item.sender
        elif isinstance(event, CallReject) and fold.answered_ms is None:
            fold.rejected, fold.ended_ms = True, item.timestamp_ms
            fold.callee = fold.callee or item.sender
        elif isinstance(event, CallSelectAnswer):
            continue
        elif isinstance(event, CallHangup):
            fold.ended_ms = item.timestamp_ms
            fold.reason = event.reason or HangupReason.USER_HANGUP.value
    return [_entry(call_id, fold) for call_id, fold in calls.items()]


def _entry(call_id: str, fold: _Fold) -> RoomCallEntry:
    if fold.answered_ms is not None:
        outcome = Outcome.ANSWERED
    elif fold.rejected:
        outcome = Outcome.REJECTED
    elif fold.reason == HangupReason.USER_BUSY.value:
        outcome = Outcome.BUSY
    elif fold.reason in (HangupReason.USER_HANGUP.value, None) and fold.ended_ms is not None:
        outcome = Outcome.CANCELLED
    elif fold.reason in (HangupReason.INVITE_TIMEOUT.value, None):
        outcome = Outcome.MISSED
    else:
        outcome = Outcome.FAILED
    duration = 0.0
    if fold.answered_ms is not None and fold.ended_ms is not None:
        duration = max(0.0, (fold.ended_ms - fold.answered_ms) / 1000)
    return RoomCallEntry(
        call_id=call_id,
        caller=fold.caller,
        callee=fold.callee,
        video=fold.invite.has_video,
        outcome=outcome,
        started_at=fold.started_ms / 1000,
        duration=duration,
        end_reason="rejected" if fold.rejected else fold.reason,
    )

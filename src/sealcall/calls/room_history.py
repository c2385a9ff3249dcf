"""Call history read back from a room's timeline: the call events themselves are the record.

:func:`calls_from_timeline` folds the call events of a DM room (oldest first) into one
:class:`RoomCallEntry` per call, the way a chat app shows call items: who called whom, audio or
video, the outcome and how long it lasted. Outcomes follow the rules in
:mod:`sealcall.calls.history`, from the viewing user's side, so that they agree with the
:class:`~sealcall.calls.history.HistoryItem` each device made, whichever client placed the call.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

from sealcall.signaling import (
    CallAnswer,
    CallHangup,
    CallInvite,
    CallReject,
    CallSelectAnswer,
    SignalingError,
    parse,
)
from sealcall.transport.base import TimelineEvent

from .history import Outcome, counts_as_answered, hangup_reason, reject_end, unanswered_outcome
from .states import Direction

REPLACED_BY_KEY = "org.sealcall.replaced_by"


@dataclass(frozen=True)
class RoomCallEntry:
    """One call as the room's timeline records it, from the viewing user's side."""

    call_id: str
    caller: str
    callee: str | None
    direction: Direction
    video: bool
    outcome: Outcome
    started_at: float
    duration: float
    end_reason: str | None

    @property
    def peer(self) -> str | None:
        """The other party, as the viewer's own history item names it."""
        return self.callee if self.direction is Direction.OUTGOING else self.caller

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
    answers: dict[str, str] = field(default_factory=dict)  # answering party id -> its user
    responders: list[str] = field(default_factory=list)  # users that answered or rejected
    callee: str | None = None  # whose answer or reject the caller took
    selected_ms: int | None = None
    ended_ms: int | None = None
    reason: str | None = None
    ended_by_caller: bool = False
    refusal: Outcome | None = None  # set when a reject ended the call
    replaced: bool = False


def calls_from_timeline(
    events: list[TimelineEvent], viewer: str | None = None, members: Sequence[str] = ()
) -> list[RoomCallEntry]:
    """Fold a room's call events (oldest first) into history entries, oldest call first.

    ``viewer`` is the user whose history this is: calls they placed are outgoing, the others
    incoming (None: every call as its caller saw it). ``members`` (the room's) name the callee
    of a call whose invite has no ``invitee`` and that nobody answered (matrix-js-sdk's DM
    calls). Malformed events are skipped; a call merged away by glare is left out. A call with
    no end event yet is reported by what is known: answered (still running) or missed.
    """
    calls: dict[str, _Fold] = {}
    for item in events:
        try:
            event = parse(item.event)
        except SignalingError:
            continue
        if isinstance(event, CallInvite):
            calls.setdefault(event.call_id, _Fold(event, item.sender, item.timestamp_ms))
            continue
        fold = calls.get(event.call_id)
        if fold is None or fold.ended_ms is not None:
            continue
        _apply(fold, event, item)
    return [
        _entry(call_id, fold, viewer, members)
        for call_id, fold in calls.items()
        if not fold.replaced
    ]


def _apply(fold: _Fold, event: object, item: TimelineEvent) -> None:
    from_caller = item.sender == fold.caller
    if isinstance(event, CallAnswer) and not from_caller:
        fold.answers[event.party_id] = item.sender
        fold.responders.append(item.sender)
        if str(event.version) == "0" and fold.selected_ms is None:
            # VoIP v0 has no select_answer: its answer is the answer.
            fold.selected_ms, fold.callee = item.timestamp_ms, item.sender
    elif isinstance(event, CallReject) and not from_caller and fold.selected_ms is None:
        fold.responders.append(item.sender)
        fold.reason, fold.refusal = reject_end(event)
        fold.ended_ms, fold.callee = item.timestamp_ms, item.sender
    elif isinstance(event, CallSelectAnswer) and from_caller and fold.selected_ms is None:
        answerer = fold.answers.get(event.selected_party_id)
        if answerer is not None:  # (selecting a reject changes nothing: it ended the call)
            fold.selected_ms, fold.callee = item.timestamp_ms, answerer
    elif isinstance(event, CallHangup) and (
        from_caller or fold.callee in (None, item.sender)
    ):  # a third member's hang-up ends nothing
        fold.ended_ms = item.timestamp_ms
        fold.reason = hangup_reason(event)
        fold.ended_by_caller = from_caller
        fold.replaced = REPLACED_BY_KEY in event.extra
        if not from_caller and fold.callee is None:
            fold.callee = item.sender


def _callee(fold: _Fold, members: Sequence[str]) -> str | None:
    if fold.invite.invitee is not None:
        return fold.invite.invitee
    if fold.callee is not None:
        return fold.callee
    if fold.responders:
        return fold.responders[0]
    others = [m for m in members if m != fold.caller]
    return others[0] if len(others) == 1 else None


def _entry(call_id: str, fold: _Fold, viewer: str | None, members: Sequence[str]) -> RoomCallEntry:
    direction = Direction.OUTGOING if viewer in (None, fold.caller) else Direction.INCOMING
    selected = fold.selected_ms is not None
    if fold.refusal is not None:
        outcome = fold.refusal
    elif fold.ended_ms is None or fold.reason is None:
        outcome = Outcome.ANSWERED if selected else Outcome.MISSED
    elif counts_as_answered(selected, fold.reason):
        outcome = Outcome.ANSWERED
    else:
        outcome = unanswered_outcome(
            fold.reason, by_caller=fold.ended_by_caller, direction=direction
        )
    duration = 0.0
    if outcome is Outcome.ANSWERED and fold.selected_ms is not None and fold.ended_ms is not None:
        duration = max(0.0, (fold.ended_ms - fold.selected_ms) / 1000)
    return RoomCallEntry(
        call_id=call_id,
        caller=fold.caller,
        callee=_callee(fold, members),
        direction=direction,
        video=fold.invite.has_video,
        outcome=outcome,
        started_at=fold.started_ms / 1000,
        duration=duration,
        end_reason=fold.reason,
    )

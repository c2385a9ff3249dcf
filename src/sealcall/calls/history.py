"""Call history: one immutable item per call, the way a chat app lists calls."""

from dataclasses import dataclass
from enum import StrEnum

from .states import Direction


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
    incoming call that another of our devices took.
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

"""The room's floor ("I want the focus"), sans-I/O: one holder at a time, first come.

A member ``request``\\ s the floor and gets it if nobody holds it; the holder keeps it until it
``release``\\ s it or leaves. Every call returns the new holder when it changed (to be broadcast
as ``floor`` to everyone), else None. Transitions are the table ``_TABLE``: (state, event,
whether the event is the holder's) -> next holder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["FloorChange", "FloorState"]

FREE, HELD = "free", "held"
REQUEST, RELEASE, LEAVE = "request", "release", "leave"

# What becomes of the floor: "member" (the event's member holds it), "nobody", or "same".
_TABLE: Final[dict[tuple[str, str, bool], str]] = {
    (FREE, REQUEST, False): "member",
    (FREE, RELEASE, False): "same",
    (FREE, LEAVE, False): "same",
    (HELD, REQUEST, True): "same",
    (HELD, REQUEST, False): "same",  # first come: the holder keeps it
    (HELD, RELEASE, True): "nobody",
    (HELD, RELEASE, False): "same",
    (HELD, LEAVE, True): "nobody",
    (HELD, LEAVE, False): "same",
}


@dataclass(frozen=True, slots=True)
class FloorChange:
    """The floor changed hands: ``holder`` (None: nobody) is to be told to everyone."""

    holder: str | None


class FloorState:
    """Who holds the room's floor."""

    def __init__(self) -> None:
        self.holder: str | None = None

    def _event(self, event: str, member: str) -> FloorChange | None:
        state = HELD if self.holder is not None else FREE
        outcome = _TABLE[(state, event, member == self.holder)]
        if outcome == "same":
            return None
        self.holder = member if outcome == "member" else None
        return FloorChange(self.holder)

    def request(self, member: str) -> FloorChange | None:
        """``member`` asks for the floor."""
        return self._event(REQUEST, member)

    def release(self, member: str) -> FloorChange | None:
        """``member`` gives the floor up (nothing happens if it does not hold it)."""
        return self._event(RELEASE, member)

    def leave(self, member: str) -> FloorChange | None:
        """``member`` left the room."""
        return self._event(LEAVE, member)

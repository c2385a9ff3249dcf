"""Who is muted in a room (the SFU's ``mute`` / ``muted`` indicators), sans-I/O.

Each member tells the SFU whether its microphone and camera are muted; the SFU tells everyone
else (``muted``) and, when a newcomer's control channel opens, everyone's current state. It is
only an indicator: nothing is forwarded differently (a muted sender sends silence or no frames
anyway, which the SFU already sees). A member's state is forgotten when it leaves, so the map
holds at most one entry per member of the room.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MuteChange", "MuteStates"]


@dataclass(frozen=True, slots=True)
class MuteChange:
    """``member``'s mute state changed: to be told to the others as ``muted``."""

    member: str
    audio: bool
    video: bool


class MuteStates:
    """The last mute state each member of a room reported."""

    def __init__(self) -> None:
        self._states: dict[str, tuple[bool, bool]] = {}

    def set(self, member: str, audio: bool, video: bool) -> MuteChange | None:
        """``member`` reports its state: the change to broadcast, or None if it is the same."""
        if self._states.get(member) == (audio, video):
            return None
        self._states[member] = (audio, video)
        return MuteChange(member, audio, video)

    def leave(self, member: str) -> None:
        """``member`` left: its state is forgotten."""
        self._states.pop(member, None)

    def current(self, excluding: str | None = None) -> list[MuteChange]:
        """Everyone's known state (for a newcomer), but ``excluding``'s."""
        return [
            MuteChange(member, audio, video)
            for member, (audio, video) in self._states.items()
            if member != excluding
        ]

"""The transport interface the call engine needs: room events out and in, room membership."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class RoomEvent:
    """An event as it arrived from a room: its type and content (``event``), who sent it, how
    old it was, and (where the transport knows them) its id and server timestamp."""

    room_id: str
    sender: str
    event: dict[str, Any]
    age_ms: int = 0
    event_id: str = ""
    origin_server_ts: int = 0


RoomEventListener = Callable[[RoomEvent], None]


@dataclass(frozen=True)
class TimelineEvent:
    """One event read back from a room: its sender, server timestamp (ms) and the event dict."""

    sender: str
    timestamp_ms: int
    event: dict[str, Any]


class Transport(Protocol):
    """What :class:`~sealcall.session.VoIP` uses to reach other users.

    Implementations: :class:`~sealcall.transport.memory.InMemoryTransport` (tests) and the Matrix
    transport. Events must be delivered to every device in the room, the sender's own included
    (the call engine recognises its own echo by ``party_id``).
    """

    @property
    def user_id(self) -> str:
        """Our user id."""
        ...

    @property
    def device_id(self) -> str:
        """This device's id (our ``party_id`` in calls)."""
        ...

    async def send_room_event(
        self, room_id: str, event_type: str, content: dict[str, Any]
    ) -> str | None:
        """Send one event to a room (end-to-end encrypted where the room is); its event id, if
        the transport has one."""
        ...

    def add_listener(self, listener: RoomEventListener) -> None:
        """Call ``listener`` for every event that arrives from any joined room."""
        ...

    def room_members(self, room_id: str) -> list[str]:
        """The user ids joined to ``room_id``."""
        ...

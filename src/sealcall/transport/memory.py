"""An in-memory transport: rooms inside one process, with latency, reordering and duplication.

For tests and demos of the call engine without a homeserver.
"""

import asyncio
import random
import time
from collections import defaultdict
from typing import Any

from .base import RoomEvent, RoomEventListener


class InMemoryHub:
    """Rooms shared by :class:`InMemoryTransport` instances in one event loop.

    ``latency`` and ``jitter`` (seconds) delay each delivery; jitter reorders events.
    ``duplicate`` is the probability that a delivery happens twice.
    """

    def __init__(
        self, *, latency: float = 0.0, jitter: float = 0.0, duplicate: float = 0.0, seed: int = 0
    ) -> None:
        self.latency, self.jitter, self.duplicate = latency, jitter, duplicate
        self._random = random.Random(seed)  # noqa: S311 - simulated network delays, not secrets
        self._members: dict[str, list[InMemoryTransport]] = defaultdict(list)
        self.log: list[tuple[str, str, dict[str, Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def join(self, room_id: str, transport: "InMemoryTransport") -> None:
        """Put a device into a room."""
        if transport not in self._members[room_id]:
            self._members[room_id].append(transport)

    def members(self, room_id: str) -> list[str]:
        """User ids in the room."""
        return sorted({t.user_id for t in self._members[room_id]})

    def publish(self, room_id: str, sender: str, event: dict[str, Any]) -> None:
        """Deliver ``event`` to every device in the room."""
        self.log.append((room_id, sender, event))
        sent_at = time.monotonic()
        for member in list(self._members[room_id]):
            copies = 2 if self._random.random() < self.duplicate else 1
            for _ in range(copies):
                delay = self.latency + self._random.random() * self.jitter
                task = asyncio.ensure_future(
                    self._deliver(member, room_id, sender, event, sent_at, delay)
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(
        self,
        member: "InMemoryTransport",
        room_id: str,
        sender: str,
        event: dict[str, Any],
        sent_at: float,
        delay: float,
    ) -> None:
        if delay:
            await asyncio.sleep(delay)
        age_ms = int((time.monotonic() - sent_at) * 1000)
        member.deliver(RoomEvent(room_id, sender, event, age_ms))


class InMemoryTransport:
    """One device of one user on an :class:`InMemoryHub`."""

    def __init__(self, hub: InMemoryHub, user_id: str, device_id: str) -> None:
        self.hub = hub
        self.user_id = user_id
        self.device_id = device_id
        self._listeners: list[RoomEventListener] = []

    def join(self, room_id: str) -> None:
        """Join a room."""
        self.hub.join(room_id, self)

    async def send_room_event(self, room_id: str, event_type: str, content: dict[str, Any]) -> None:
        """Publish an event to the room."""
        self.hub.publish(room_id, self.user_id, {"type": event_type, "content": content})

    def add_listener(self, listener: RoomEventListener) -> None:
        """Receive every event of the rooms joined."""
        self._listeners.append(listener)

    def room_members(self, room_id: str) -> list[str]:
        """User ids in the room."""
        return self.hub.members(room_id)

    def deliver(self, event: RoomEvent) -> None:
        """Hand an arriving event to the listeners."""
        for listener in list(self._listeners):
            listener(event)

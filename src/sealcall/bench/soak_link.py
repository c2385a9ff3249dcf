"""The soak call's two processes, linked: call events and memory samples as JSON lines.

Each side of ``sealcall soak`` runs in its own process (as two ``sealcall call``/``answer``
processes would), so each process's RSS and heap are its own and neither event loop waits for
the other's encoders. :class:`LinkTransport` is the call engine's transport over that link: a
room event sent goes to the other process and, as from a homeserver, back to the sender too.
"""

import asyncio
import contextlib
import json
import os
import resource
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sealcall.session import CallSession
from sealcall.transport.base import RoomEvent, RoomEventListener

ROOM = "!soak:local"
USERS = ("@alice:soak", "@bob:soak")
MB = 1024 * 1024


def rss_bytes() -> int:
    """The resident set size of this process now (the peak where /proc is missing)."""
    with contextlib.suppress(OSError), open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@dataclass(frozen=True)
class Memory:
    """One process at one moment: its memory, frames it decrypted, its connection state."""

    rss_mb: float
    heap_mb: float
    frames_decrypted: int
    connection: str


def measure(session: CallSession | None) -> Memory:
    """This process now (the heap needs tracemalloc tracing)."""
    pc = session.pc if session is not None else None
    decrypted = 0
    if pc is not None:
        decrypted = sum(pc.receiver_tap(r).counters.frames_decrypted for r in pc.getReceivers())
    return Memory(
        rss_mb=round(rss_bytes() / MB, 2),
        heap_mb=round(tracemalloc.get_traced_memory()[0] / MB, 3),
        frames_decrypted=decrypted,
        connection=pc.connectionState if pc is not None else "none",
    )


Handler = Callable[[dict[str, Any]], None]


class LinkTransport:
    """The call engine's transport between the two soak processes (one room, two users)."""

    def __init__(
        self,
        user_id: str,
        reader: asyncio.StreamReader,
        writer: Any,  # an asyncio.StreamWriter, or a file for the child's stdout
        on_message: Handler,
    ) -> None:
        self.user_id = user_id
        self.device_id = "SOAK"
        self._reader = reader
        self._writer = writer
        self._on_message = on_message
        self._listeners: list[RoomEventListener] = []
        self._pump = asyncio.ensure_future(self._read())

    async def send_room_event(self, room_id: str, event_type: str, content: dict[str, Any]) -> None:
        """Send to the other process and deliver to ourselves (the homeserver's echo)."""
        event = {"type": event_type, "content": content}
        self.send({"room_event": {"room_id": room_id, "sender": self.user_id, "event": event}})
        asyncio.get_running_loop().call_soon(self._deliver, room_id, self.user_id, event)

    def add_listener(self, listener: RoomEventListener) -> None:
        """Receive every room event."""
        self._listeners.append(listener)

    def room_members(self, room_id: str) -> list[str]:
        """Both soak users."""
        return list(USERS)

    def send(self, message: dict[str, Any]) -> None:
        """Write one message to the other process."""
        line = (json.dumps(message) + "\n").encode()
        if isinstance(self._writer, asyncio.StreamWriter):
            self._writer.write(line)
        else:
            self._writer.write(line)
            self._writer.flush()

    def _deliver(self, room_id: str, sender: str, event: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            listener(RoomEvent(room_id, sender, event))

    async def _read(self) -> None:
        while line := await self._reader.readline():
            message = json.loads(line)
            if "room_event" in message:
                self._deliver(**message["room_event"])
            else:
                self._on_message(message)
        self._on_message({"eof": True})

    async def close(self) -> None:
        """Stop reading."""
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump


def memory_message(memory: Memory) -> dict[str, Any]:
    """A sample as the child sends it."""
    return {"memory": asdict(memory)}

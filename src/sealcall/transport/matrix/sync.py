"""The sync loop and event intake: decrypted call events out to the listeners, in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from nio import AsyncClient, Event, InviteMemberEvent, MegolmEvent, SyncError

from ..base import RoomEvent, RoomEventListener
from .keys import RoomKeys

logger = logging.getLogger(__name__)

CALL_PREFIXES = ("m.call.", "org.matrix.call.")


class SyncMixin:
    """Syncing and event intake of :class:`~sealcall.transport.matrix.MatrixTransport`."""

    client: AsyncClient
    keys: RoomKeys
    dropped_plaintext: int
    malformed: int
    _listeners: list[RoomEventListener]
    _batch_listeners: list[Callable[[], None]]
    _sync_task: asyncio.Task[None] | None
    _first_sync: asyncio.Event
    _skip_history: bool

    async def start(self, timeout: float = 30.0) -> None:
        """Start syncing; return after the first sync has been processed."""
        if self._sync_task is None:
            self._sync_task = asyncio.ensure_future(self._sync_loop())
        await asyncio.wait_for(self._first_sync.wait(), timeout)

    async def _sync_loop(self) -> None:
        client = self.client
        while True:
            try:
                response = await client.sync(
                    timeout=10_000, full_state=not self._first_sync.is_set()
                )
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # Whatever a server or the network does, the device keeps syncing.
                logger.warning("sync failed: %s", type(error).__name__)
                await asyncio.sleep(1)
                continue
            if isinstance(response, SyncError):
                logger.warning("sync failed: %s", response.message)
                await asyncio.sleep(1)
                continue
            await self._after_sync()
            for listener in list(self._batch_listeners):
                listener()

    async def _after_sync(self) -> None:
        await self.keys.upkeep()
        for room_id, event in self.keys.retry():
            if str(event.source.get("type", "")).startswith(CALL_PREFIXES):
                self._deliver(room_id, event)
        self._first_sync.set()
        self._skip_history = False

    async def stop(self) -> None:
        """Stop syncing and close the connection (the store keeps everything for a restart)."""
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
            self._sync_task = None
        await self.client.close()

    def add_listener(self, listener: RoomEventListener) -> None:
        """Receive every decrypted call event."""
        self._listeners.append(listener)

    def add_batch_listener(self, listener: Callable[[], None]) -> None:
        """Be told when a whole sync response has been delivered (MSC2746: ring only then)."""
        self._batch_listeners.append(listener)

    def _on_event(self, room: Any, event: Event) -> None:
        try:
            self._take_event(room, event)
        except Exception as error:  # a hostile event must not stop the sync
            self.malformed += 1
            logger.warning("dropped an unreadable event: %s", type(error).__name__)

    def _take_event(self, room: Any, event: Event) -> None:
        if isinstance(event, InviteMemberEvent):
            return
        if isinstance(event, MegolmEvent):
            # nio could not decrypt it (yet): ask for the key and try again after each sync.
            self.keys.park(room.room_id, event)
            return
        source = event.source
        event_type = str(source.get("type", ""))
        if not event_type.startswith(CALL_PREFIXES):
            return
        if not getattr(event, "decrypted", False):
            if room.encrypted:
                self.dropped_plaintext += 1
                logger.warning("dropped a plaintext %s in an encrypted room", event_type)
            return
        self._deliver(room.room_id, event)

    def _deliver(self, room_id: str, event: Event) -> None:
        if self._skip_history:
            return
        source = event.source
        unsigned = source.get("unsigned")
        age = unsigned.get("age") if isinstance(unsigned, dict) else None
        if not isinstance(age, int) or isinstance(age, bool) or age < 0:
            sent = source.get("origin_server_ts")
            sent = sent if isinstance(sent, int) and not isinstance(sent, bool) else 0
            age = max(0, int(time.time() * 1000) - sent)
        payload = {"type": source.get("type"), "content": source.get("content", {})}
        room_event = RoomEvent(room_id, str(event.sender), payload, age)
        for listener in list(self._listeners):
            listener(room_event)

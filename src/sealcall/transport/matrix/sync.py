"""The sync loop and event intake: decrypted call events out to the listeners, in order.

Synapse returns only the latest events of a room per sync (``limited``, with a ``prev_batch``
token): the rest of the gap since the previous sync is fetched here with ``/messages``, backwards
from ``prev_batch`` to the previous sync's position, at most :data:`MAX_GAP_PAGES` pages of
:data:`GAP_PAGE` events per room per sync. The gap's events are delivered first, oldest first,
then the sync's own timeline, then the batch listeners are told (so calls ring only after all).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from nio import (
    AsyncClient,
    Event,
    InviteMemberEvent,
    MegolmEvent,
    MessageDirection,
    RoomMessagesResponse,
    SyncError,
    SyncResponse,
)

from ..base import RoomEvent, RoomEventListener
from .guard import DeepEventGuard
from .keys import RoomKeys
from .to_device import ToDeviceMessages

logger = logging.getLogger(__name__)

CALL_PREFIXES = ("m.call.", "org.matrix.call.")
# Delivered to the listeners: call events, and group-call ringing (MSC4075 notification,
# MSC4310 decline).
DELIVERED_TYPES = (
    *CALL_PREFIXES,
    "org.matrix.msc4075.rtc.notification",
    "org.matrix.msc4310.rtc.decline",
)
# Timeline events per room in a sync (Synapse's default is 10): fewer gaps to fill.
TIMELINE_LIMIT = 50
SYNC_FILTER = {"room": {"timeline": {"limit": TIMELINE_LIMIT}}}
GAP_PAGE = 100
MAX_GAP_PAGES = 10


class SyncMixin:
    """Syncing and event intake of :class:`~sealcall.transport.matrix.MatrixTransport`."""

    client: AsyncClient
    keys: RoomKeys
    to_device: ToDeviceMessages
    dropped_plaintext: int
    malformed: int
    _listeners: list[RoomEventListener]
    _batch_listeners: list[Callable[[], None]]
    _sync_task: asyncio.Task[None] | None
    _first_sync: asyncio.Event
    _skip_history: bool
    _guard: DeepEventGuard
    _held: list[RoomEvent] | None
    _take_state: Callable[[SyncResponse], None]
    gap_events = 0
    gaps_cut = 0

    async def start(self, timeout: float = 30.0) -> None:
        """Start syncing; return after the first sync has been processed."""
        if self._sync_task is None:
            self._sync_task = asyncio.ensure_future(self._sync_loop())
        await asyncio.wait_for(self._first_sync.wait(), timeout)

    async def _sync_loop(self) -> None:
        client = self.client
        while True:
            self._guard.install(client.olm)
            self.to_device.install(client.olm)
            # Where the previous sync ended: a gap in a room's timeline is filled back to here.
            since = client.next_batch or client.loaded_sync_token
            # Events taken while nio processes the response are held until the gaps before them
            # have been delivered.
            self._held = []
            try:
                response = await client.sync(
                    timeout=10_000,
                    sync_filter=SYNC_FILTER,
                    full_state=not self._first_sync.is_set(),
                )
                if isinstance(response, SyncResponse) and since and not self._skip_history:
                    await self._fill_gaps(response, since)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # Whatever a server or the network does, the device keeps syncing.
                logger.warning("sync failed: %s", type(error).__name__)
                self._release_held()
                await asyncio.sleep(1)
                continue
            self._release_held()
            if isinstance(response, SyncError):
                logger.warning("sync failed: %s", response.message)
                await asyncio.sleep(1)
                continue
            self._take_state(response)
            await self._after_sync()
            for listener in list(self._batch_listeners):
                listener()

    async def _fill_gaps(self, response: SyncResponse, since: str) -> None:
        """Fetch and take, oldest first, the events each limited room left out since ``since``."""
        for room_id, info in response.rooms.join.items():
            timeline = info.timeline
            if not timeline.limited or not timeline.prev_batch:
                continue
            room = self.client.rooms.get(room_id)
            if room is None:
                continue
            gap: list[Any] = []
            token = timeline.prev_batch
            for _ in range(MAX_GAP_PAGES):
                page = await self.client.room_messages(
                    room_id, start=token, end=since, direction=MessageDirection.back, limit=GAP_PAGE
                )
                if not isinstance(page, RoomMessagesResponse):
                    logger.warning("filling a gap in %s failed: %s", room_id, page.message)
                    break
                gap.extend(page.chunk)
                if not page.chunk or not page.end or page.end == token:
                    break
                token = page.end
            else:
                self.gaps_cut += 1
                logger.warning(
                    "gap in %s longer than %d events: older ones skipped",
                    room_id,
                    MAX_GAP_PAGES * GAP_PAGE,
                )
            self.gap_events += len(gap)
            held, self._held = self._held, None  # gap events go out now, before the held ones
            try:
                for event in reversed(gap):
                    if isinstance(event, Event):  # as nio's callbacks: its "bad" events stay out
                        self._on_event(room, event)
            finally:
                self._held = held

    def _release_held(self) -> None:
        held, self._held = self._held, None
        for room_event in held or ():
            self._tell(room_event)

    async def _after_sync(self) -> None:
        await self.keys.upkeep()
        self.to_device.flush()  # after the key query that tells who sent them
        for room_id, event in self.keys.retry():
            if str(event.source.get("type", "")).startswith(DELIVERED_TYPES):
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

    def remove_listener(self, listener: RoomEventListener) -> None:
        """Stop calling ``listener`` (added more than once: removed everywhere)."""
        self._listeners[:] = [f for f in self._listeners if f != listener]

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
            if self._guard.was_dropped(event):
                return
            # nio could not decrypt it (yet): ask for the key and try again after each sync.
            self.keys.park(room.room_id, event)
            return
        source = event.source
        event_type = str(source.get("type", ""))
        if not event_type.startswith(DELIVERED_TYPES):
            return
        if not getattr(event, "decrypted", False):
            if room.encrypted:
                self.dropped_plaintext += 1
                logger.warning("dropped a plaintext call event in an encrypted room")
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
        event_id, stamp = source.get("event_id"), source.get("origin_server_ts")
        room_event = RoomEvent(
            room_id,
            str(event.sender),
            payload,
            age,
            event_id=event_id if isinstance(event_id, str) else "",
            origin_server_ts=stamp if isinstance(stamp, int) and not isinstance(stamp, bool) else 0,
        )
        if self._held is not None:
            self._held.append(room_event)
        else:
            self._tell(room_event)

    def _tell(self, room_event: RoomEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(room_event)
            except Exception as error:  # one listener's failure must not cost the others
                logger.warning("a listener failed on an event: %s", type(error).__name__)

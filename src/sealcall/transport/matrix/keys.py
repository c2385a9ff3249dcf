"""Key upkeep: one-time keys, device queries, to-device messages, room keys we still lack.

nio decrypts what it can while it processes a sync; an event whose Megolm key has not arrived yet
stays a :class:`~nio.MegolmEvent`. Those are kept here (bounded), the key is requested, and they
are tried again after each sync.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from nio import AsyncClient, Event, MegolmEvent

logger = logging.getLogger(__name__)

# Events waiting for their room key: a few per call in practice, so a hostile barrage is cut
# short by count and by size (oldest dropped first). Key requests are capped likewise: nio keeps
# one entry per requested session until the key comes.
MAX_UNDECRYPTED = 256
MAX_UNDECRYPTED_BYTES = 4 * 1024 * 1024
MAX_KEY_REQUESTS = 64


class RoomKeys:
    """The E2EE upkeep of one device, and the events waiting for their room key."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.pending: list[tuple[str, MegolmEvent]] = []
        self._pending_bytes = 0
        self.requests: set[asyncio.Future[Any]] = set()
        self.undecryptable = 0
        self._room_devices: dict[str, frozenset[tuple[str, str]]] = {}

    async def upkeep(self) -> None:
        """Key upkeep after a sync. Each step stands alone: one failing (nio raises when, say,
        a key claim turns out to be unnecessary) must not hold back the others, nor the end of
        the batch that lets calls ring."""
        client = self.client
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("key upload", lambda: client.keys_upload() if client.should_upload_keys else None),
            ("key query", lambda: client.keys_query() if client.should_query_keys else None),
            (
                "key claim",
                lambda: (
                    client.keys_claim(client.get_users_for_key_claiming())
                    if client.should_claim_keys
                    else None
                ),
            ),
            ("to-device messages", client.send_to_device_messages),
        ]
        for name, step in steps:
            try:
                pending = step()
                if pending is not None:
                    await pending
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.info("%s after sync failed: %s", name, type(error).__name__)

    def park(self, room_id: str, event: MegolmEvent) -> None:
        """Keep an event nio could not decrypt (yet), and ask for its key."""
        self.undecryptable += 1
        self.pending.append((room_id, event))
        self._pending_bytes += _size(event)
        while self.pending and (
            len(self.pending) > MAX_UNDECRYPTED or self._pending_bytes > MAX_UNDECRYPTED_BYTES
        ):
            self._pending_bytes -= _size(self.pending.pop(0)[1])
        if (
            len(self.requests) >= MAX_KEY_REQUESTS
            or len(self.client.outgoing_key_requests) >= MAX_KEY_REQUESTS
        ):
            return
        task = asyncio.ensure_future(self._request_key(event))
        self.requests.add(task)
        task.add_done_callback(self.requests.discard)

    async def _request_key(self, event: MegolmEvent) -> None:
        try:
            await self.client.request_room_key(event)
        except Exception as error:
            logger.debug("room key request not sent: %s", type(error).__name__)

    def retry(self) -> list[tuple[str, Event]]:
        """The kept events that can be decrypted now (room id, event), oldest first."""
        pending, self.pending = self.pending, []
        self._pending_bytes = 0
        decrypted_now: list[tuple[str, Event]] = []
        olm = self.client.olm
        for room_id, encrypted in pending:
            if olm is not None and not olm.inbound_group_store.get(
                room_id, encrypted.sender_key, encrypted.session_id
            ):
                # Its key has not come: trying would only fail (and make nio log it again).
                self.pending.append((room_id, encrypted))
                self._pending_bytes += _size(encrypted)
                continue
            try:
                decrypted = self.client.decrypt_event(encrypted)
            except Exception:  # nio raises when the key is still missing
                decrypted = encrypted
            if isinstance(decrypted, MegolmEvent) or not isinstance(decrypted, Event):
                self.pending.append((room_id, encrypted))
                self._pending_bytes += _size(encrypted)
                continue
            decrypted.decrypted = True
            decrypted_now.append((room_id, decrypted))
        return decrypted_now

    def cancel_requests(self) -> None:
        """Cancel the key requests still on their way (the device stops)."""
        for task in list(self.requests):
            task.cancel()

    async def know_member_devices(self, room: Any) -> None:
        """Make sure every member's devices are known before the room key is shared.

        A member who joined a moment ago may not have been queried yet; sharing then would
        leave their devices without the key, and they could not read the call.
        """
        client = self.client
        missing = [
            user
            for user in room.users
            if user != client.user_id and not list(client.device_store.active_user_devices(user))
        ]
        if missing and client.olm is not None:
            client.olm.users_for_key_query.update(missing)
        if client.should_query_keys:
            await client.keys_query()
        # nio shares a room's outbound Megolm session once; a device that appears later would
        # never get it. When the members' devices change, start a new session for everyone.
        devices = frozenset(
            (user, device.id)
            for user in room.users
            for device in client.device_store.active_user_devices(user)
        )
        if self._room_devices.get(room.room_id, devices) != devices and client.olm is not None:
            client.olm.outbound_group_sessions.pop(room.room_id, None)
        self._room_devices[room.room_id] = devices

    async def wait_for_member_devices(self, room_id: str, timeout: float) -> bool:
        """Wait until every other member of the room has a device we can encrypt to."""
        client = self.client
        deadline = time.monotonic() + timeout
        while True:
            room = client.rooms.get(room_id)
            if room is not None:
                await self.know_member_devices(room)
                if all(
                    list(client.device_store.active_user_devices(user))
                    for user in room.users
                    if user != client.user_id
                ):
                    return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.2)


def _size(event: MegolmEvent) -> int:
    """Roughly what a kept encrypted event costs (its JSON size; Synapse caps events at 64 KB)."""
    try:
        return len(json.dumps(event.source)) + 256
    except (TypeError, ValueError, RecursionError):
        return 65536

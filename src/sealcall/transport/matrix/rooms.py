"""Rooms: sending call events (encrypted only), membership, the call timeline, TURN servers."""

from __future__ import annotations

import asyncio
from typing import Any

from aiortc import RTCIceServer
from nio import (
    AsyncClient,
    Event,
    JoinError,
    MegolmEvent,
    RoomCreateError,
    RoomMessagesResponse,
    RoomPreset,
    RoomSendError,
)

from ..base import TimelineEvent
from .errors import MatrixTransportError, UnencryptedRoomError
from .keys import RoomKeys
from .sync import CALL_PREFIXES
from .turn_servers import TurnServers

ENCRYPTION_STATE = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}


class RoomsMixin:
    """Rooms and sending for :class:`~sealcall.transport.matrix.MatrixTransport`."""

    client: AsyncClient
    keys: RoomKeys
    turn: TurnServers

    async def send_room_event(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        """Send a call event, Megolm-encrypted; its event id. Raise if the room is not
        encrypted."""
        room = self.client.rooms.get(room_id)
        if room is None:
            raise MatrixTransportError(f"not in room {room_id}")
        if not room.encrypted:
            raise UnencryptedRoomError(
                f"{room_id} is not end-to-end encrypted: call event not sent"
            )
        await self.keys.know_member_devices(room)
        response = await self.client.room_send(
            room_id, event_type, content, ignore_unverified_devices=True
        )
        if isinstance(response, RoomSendError):
            raise MatrixTransportError(f"sending {event_type} failed: {response.message}")
        return str(response.event_id)

    async def wait_for_member_devices(self, room_id: str, timeout: float = 10.0) -> bool:
        """Wait until every other member of the room has a device we can encrypt to.

        A member who has just joined may not have published their device keys yet; a call
        placed before that could not be read on their side. False if ``timeout`` ran out.
        """
        return await self.keys.wait_for_member_devices(room_id, timeout)

    def room_members(self, room_id: str) -> list[str]:
        """The users joined to a room."""
        room = self.client.rooms.get(room_id)
        return sorted(room.users) if room is not None else []

    async def timeline(self, room_id: str, limit: int = 500) -> list[TimelineEvent]:
        """The room's recent call events, decrypted, oldest first (for call history)."""
        events: list[TimelineEvent] = []
        start = self.client.next_batch
        while len(events) < limit:
            response = await self.client.room_messages(room_id, start=start, limit=100)
            if not isinstance(response, RoomMessagesResponse) or not response.chunk:
                break
            for event in response.chunk:
                if isinstance(event, MegolmEvent):
                    decrypted = self.client.decrypt_event(event)
                    if isinstance(decrypted, MegolmEvent) or not isinstance(decrypted, Event):
                        continue
                    event = decrypted
                source = event.source
                if str(source.get("type", "")).startswith(CALL_PREFIXES):
                    payload = {"type": source.get("type"), "content": source.get("content", {})}
                    stamp = int(source.get("origin_server_ts", event.server_timestamp or 0))
                    events.append(TimelineEvent(str(event.sender), stamp, payload))
            if not response.end or response.end == start:
                break
            start = response.end
        events.sort(key=lambda e: e.timestamp_ms)
        return events

    async def create_dm(self, other_user: str) -> str:
        """Create an end-to-end encrypted direct-message room with ``other_user``."""
        response = await self.client.room_create(
            is_direct=True,
            preset=RoomPreset.trusted_private_chat,
            invite=[other_user],
            initial_state=[ENCRYPTION_STATE],
        )
        if isinstance(response, RoomCreateError):
            raise MatrixTransportError(
                f"creating a DM with {other_user} failed: {response.message}"
            )
        return str(response.room_id)

    async def join(self, room_id: str) -> None:
        """Join a room we were invited to."""
        response = await self.client.join(room_id)
        if isinstance(response, JoinError):
            raise MatrixTransportError(f"joining {room_id} failed: {response.message}")

    async def enter_room(self, room_id: str, timeout: float = 30.0) -> None:
        """Be in ``room_id`` once this returns: join it if we are invited (an invite sent just
        before may take a sync to arrive) and wait until the sync brought the room's state.
        Raises :class:`MatrixTransportError` if no invite or no room comes within ``timeout``."""
        rooms = self.client.rooms
        deadline = asyncio.get_running_loop().time() + timeout
        while room_id not in rooms:
            if room_id in self.client.invited_rooms:
                await self.join(room_id)
                while room_id not in rooms and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.05)
                break
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        if room_id not in rooms:
            raise MatrixTransportError(f"not in room {room_id}, nor invited to it")

    def invites(self) -> list[str]:
        """Rooms we are invited to."""
        return list(self.client.invited_rooms)

    def encrypted_dm_with(self, user_id: str) -> str | None:
        """An encrypted room whose only other member is ``user_id``, if we are in one."""
        own = str(self.client.user_id)
        for room_id, room in self.client.rooms.items():
            if room.encrypted and set(room.users) == {own, user_id}:
                return str(room_id)
        return None

    async def ice_servers(self) -> list[RTCIceServer]:
        """TURN servers from the homeserver (``/voip/turnServer``), kept for their ``ttl`` and
        through failed fetches (:class:`TurnServers`); none means host candidates."""
        return await self.turn.get(str(self.client.homeserver), str(self.client.access_token))

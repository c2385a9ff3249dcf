"""The Matrix transport: call events in end-to-end encrypted rooms, through matrix-nio.

matrix-nio (with vodozemac) does Olm/Megolm; its store folder keeps the device keys, the Olm and
Megolm sessions and the sync token, so a restarted client keeps decrypting and resumes where it
stopped. Call events only ever travel encrypted: sending to an unencrypted room raises, and a
plaintext call event arriving in an encrypted room is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCIceServer
from nio import (
    AsyncClient,
    AsyncClientConfig,
    Event,
    InviteMemberEvent,
    JoinError,
    LoginError,
    MegolmEvent,
    RoomCreateError,
    RoomMessagesResponse,
    RoomPreset,
    RoomSendError,
    SyncError,
)

from .base import RoomEvent, RoomEventListener, TimelineEvent

logger = logging.getLogger(__name__)

ENCRYPTION_STATE = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}
CALL_PREFIXES = ("m.call.", "org.matrix.call.")
MAX_UNDECRYPTED = 256


class MatrixTransportError(RuntimeError):
    """Login, sync, room or send failed; or a call event would have left unencrypted."""


class UnencryptedRoomError(MatrixTransportError):
    """The room does not use end-to-end encryption, so no call event is sent to it."""


@dataclass(frozen=True)
class Credentials:
    """What a restarted client needs to log in again without a password."""

    homeserver: str
    user_id: str
    device_id: str
    access_token: str = field(repr=False)


class MatrixTransport:
    """One Matrix device (a :class:`~sealcall.transport.base.Transport`) with E2EE.

    Create with :meth:`login` (password) or :meth:`from_store` (saved credentials), then
    :meth:`start` the sync loop. ``store_dir`` holds the credentials and nio's crypto store.
    """

    supports_batches = True

    def __init__(self, client: AsyncClient, store_dir: Path) -> None:
        self.client = client
        self.store_dir = store_dir
        self._listeners: list[RoomEventListener] = []
        self._batch_listeners: list[Callable[[], None]] = []
        self._undecrypted: list[tuple[str, MegolmEvent]] = []
        self._sync_task: asyncio.Task[None] | None = None
        self._first_sync = asyncio.Event()
        self._skip_history = False
        self._key_requests: set[asyncio.Future[Any]] = set()
        self.dropped_plaintext = 0
        self.malformed = 0
        self._room_devices: dict[str, frozenset[tuple[str, str]]] = {}
        self.undecryptable = 0
        client.add_event_callback(self._on_event, Event)
        self._use_write_ahead_log()

    def _use_write_ahead_log(self) -> None:
        """Put nio's crypto store into SQLite's write-ahead-log mode (kept in the file).

        nio commits to its store on the event loop after every sync response and Megolm send;
        in SQLite's default rollback-journal mode each commit costs several fsyncs, which held
        up every call of the device for tens of milliseconds at each step of a call setup. A
        write-ahead log needs one fsync per commit and is just as durable.
        """
        database = getattr(self.client.store, "database", None)
        if database is not None:
            database.execute_sql("PRAGMA journal_mode=wal")

    @property
    def user_id(self) -> str:
        """Our Matrix user id."""
        return str(self.client.user_id)

    @property
    def device_id(self) -> str:
        """This device's id (also our ``party_id`` in calls)."""
        return str(self.client.device_id)

    # -- login -----------------------------------------------------------------------------

    @staticmethod
    def _client(
        homeserver: str, user_id: str, store_dir: Path, device_id: str | None
    ) -> AsyncClient:
        store_dir.mkdir(parents=True, exist_ok=True)
        store_dir.chmod(0o700)
        config = AsyncClientConfig(store_sync_tokens=True, encryption_enabled=True)
        return AsyncClient(
            homeserver, user_id, device_id=device_id, store_path=str(store_dir), config=config
        )

    @classmethod
    async def login(
        cls,
        homeserver: str,
        user_id: str,
        password: str,
        store_dir: str | Path,
        device_name: str = "sealcall",
    ) -> MatrixTransport:
        """Log in with a password (reusing a device saved in ``store_dir`` when there is one)."""
        store = Path(store_dir)
        saved = cls.saved_credentials(store)
        if saved is not None and saved.user_id == user_id and saved.homeserver == homeserver:
            return cls.from_credentials(saved, store)
        client = cls._client(homeserver, user_id, store, None)
        response = await client.login(password, device_name=device_name)
        if isinstance(response, LoginError):
            await client.close()
            raise MatrixTransportError(f"login as {user_id} failed: {response.message}")
        credentials = Credentials(homeserver, user_id, response.device_id, response.access_token)
        cls._save_credentials(store, credentials)
        transport = cls(client, store)
        transport._skip_history = True  # a new device does not ring for calls of the past
        return transport

    @classmethod
    def from_credentials(cls, credentials: Credentials, store_dir: str | Path) -> MatrixTransport:
        """Log in with an access token (a restarted client, or a token the user gave)."""
        store = Path(store_dir)
        client = cls._client(
            credentials.homeserver, credentials.user_id, store, credentials.device_id
        )
        client.restore_login(credentials.user_id, credentials.device_id, credentials.access_token)
        cls._save_credentials(store, credentials)
        return cls(client, store)

    @staticmethod
    def saved_credentials(store_dir: str | Path) -> Credentials | None:
        """The credentials saved in ``store_dir``, if any."""
        path = Path(store_dir) / "credentials.json"
        if not path.exists():
            return None
        return Credentials(**json.loads(path.read_text()))

    @staticmethod
    def _save_credentials(store_dir: Path, credentials: Credentials) -> None:
        path = store_dir / "credentials.json"
        path.write_text(json.dumps(credentials.__dict__))
        path.chmod(0o600)

    # -- sync ------------------------------------------------------------------------------

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
        self._retry_undecrypted()
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

    # -- incoming --------------------------------------------------------------------------

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
            self.undecryptable += 1
            self._undecrypted.append((room.room_id, event))
            del self._undecrypted[:-MAX_UNDECRYPTED]
            task = asyncio.ensure_future(self._request_key(event))
            self._key_requests.add(task)
            task.add_done_callback(self._key_requests.discard)
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

    async def _request_key(self, event: MegolmEvent) -> None:
        try:
            await self.client.request_room_key(event)
        except Exception as error:
            logger.debug("room key request not sent: %s", type(error).__name__)

    def _retry_undecrypted(self) -> None:
        pending, self._undecrypted = self._undecrypted, []
        for room_id, encrypted in pending:
            try:
                decrypted = self.client.decrypt_event(encrypted)
            except Exception:  # nio raises when the key is still missing
                decrypted = encrypted
            if isinstance(decrypted, MegolmEvent) or not isinstance(decrypted, Event):
                self._undecrypted.append((room_id, encrypted))
                continue
            decrypted.decrypted = True
            if str(decrypted.source.get("type", "")).startswith(CALL_PREFIXES):
                self._deliver(room_id, decrypted)

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

    # -- outgoing ---------------------------------------------------------------------------

    async def send_room_event(self, room_id: str, event_type: str, content: dict[str, Any]) -> None:
        """Send a call event, Megolm-encrypted; raise if the room is not encrypted."""
        room = self.client.rooms.get(room_id)
        if room is None:
            raise MatrixTransportError(f"not in room {room_id}")
        if not room.encrypted:
            raise UnencryptedRoomError(
                f"{room_id} is not end-to-end encrypted: call event not sent"
            )
        await self._know_member_devices(room)
        response = await self.client.room_send(
            room_id, event_type, content, ignore_unverified_devices=True
        )
        if isinstance(response, RoomSendError):
            raise MatrixTransportError(f"sending {event_type} failed: {response.message}")

    async def _know_member_devices(self, room: Any) -> None:
        """Make sure every member's devices are known before the room key is shared.

        A member who joined a moment ago may not have been queried yet; sharing then would
        leave their devices without the key, and they could not read the call.
        """
        client = self.client
        missing = [
            user
            for user in room.users
            if user != self.user_id and not list(client.device_store.active_user_devices(user))
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

    async def wait_for_member_devices(self, room_id: str, timeout: float = 10.0) -> bool:
        """Wait until every other member of the room has a device we can encrypt to.

        A member who has just joined may not have published their device keys yet; a call
        placed before that could not be read on their side. False if ``timeout`` ran out.
        """
        deadline = time.monotonic() + timeout
        while True:
            room = self.client.rooms.get(room_id)
            if room is not None:
                await self._know_member_devices(room)
                if all(
                    list(self.client.device_store.active_user_devices(user))
                    for user in room.users
                    if user != self.user_id
                ):
                    return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.2)

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

    # -- rooms and ICE servers --------------------------------------------------------------

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

    def invites(self) -> list[str]:
        """Rooms we are invited to."""
        return list(self.client.invited_rooms)

    def encrypted_dm_with(self, user_id: str) -> str | None:
        """An encrypted room whose only other member is ``user_id``, if we are in one."""
        for room_id, room in self.client.rooms.items():
            if room.encrypted and set(room.users) == {self.user_id, user_id}:
                return str(room_id)
        return None

    async def ice_servers(self) -> list[RTCIceServer]:
        """TURN servers from the homeserver (``/voip/turnServer``); none means host candidates."""
        url = f"{self.client.homeserver}/_matrix/client/v3/voip/turnServer"
        headers = {"Authorization": f"Bearer {self.client.access_token}"}
        try:
            async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
                if response.status != 200:
                    return []
                body = await response.json()
        except (aiohttp.ClientError, OSError, ValueError):
            return []
        uris = body.get("uris") if isinstance(body, dict) else None
        if not isinstance(uris, list) or not uris:
            return []
        return [
            RTCIceServer(
                urls=[str(u) for u in uris],
                username=str(body.get("username", "")) or None,
                credential=str(body.get("password", "")) or None,
            )
        ]

"""The Matrix transport class: one logged-in device, syncing, with E2EE."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from nio import AsyncClient, Event, LoginError

from ..base import RoomEvent, RoomEventListener
from .errors import MatrixTransportError
from .guard import DeepEventGuard, quiet_nio_logs
from .keys import RoomKeys
from .login import (
    Credentials,
    new_client,
    save_credentials,
    saved_credentials,
    use_write_ahead_log,
)
from .openid import OpenIdMixin
from .rooms import RoomsMixin
from .state import StateListener, StateMixin
from .sync import SyncMixin
from .to_device import ToDeviceMessages, ToDeviceMixin
from .turn_servers import TurnServers


class MatrixTransport(SyncMixin, RoomsMixin, StateMixin, ToDeviceMixin, OpenIdMixin):
    """One Matrix device (a :class:`~sealcall.transport.base.Transport`) with E2EE.

    Create with :meth:`login` (password) or :meth:`from_credentials` (saved credentials), then
    :meth:`start` the sync loop. ``store_dir`` holds the credentials and nio's crypto store.
    """

    supports_batches = True

    def __init__(self, client: AsyncClient, store_dir: Path) -> None:
        self.client = client
        self.store_dir = store_dir
        self.keys = RoomKeys(client)
        self.turn = TurnServers()
        self.to_device = ToDeviceMessages(client)
        self.to_device.install(client.olm)
        self._state_listeners: list[tuple[frozenset[str], StateListener]] = []
        self._listeners: list[RoomEventListener] = []
        self._batch_listeners: list[Callable[[], None]] = []
        self._sync_task: asyncio.Task[None] | None = None
        self._first_sync = asyncio.Event()
        self._skip_history = False
        self.dropped_plaintext = 0
        self.malformed = 0
        self._held: list[RoomEvent] | None = None
        self._guard = DeepEventGuard(self._count_malformed)
        self._guard.install(client.olm)
        quiet_nio_logs()
        client.add_event_callback(self._on_event, Event)
        use_write_ahead_log(client)

    def _count_malformed(self) -> None:
        self.malformed += 1

    @property
    def user_id(self) -> str:
        """Our Matrix user id."""
        return str(self.client.user_id)

    @property
    def device_id(self) -> str:
        """This device's id (also our ``party_id`` in calls)."""
        return str(self.client.device_id)

    @property
    def undecryptable(self) -> int:
        """How many events arrived that could not be decrypted when they came."""
        return self.keys.undecryptable

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
        saved = saved_credentials(store)
        if saved is not None and saved.user_id == user_id and saved.homeserver == homeserver:
            return cls.from_credentials(saved, store)
        client = new_client(homeserver, user_id, store, None)
        response = await client.login(password, device_name=device_name)
        if isinstance(response, LoginError):
            await client.close()
            raise MatrixTransportError(f"login as {user_id} failed: {response.message}")
        credentials = Credentials(homeserver, user_id, response.device_id, response.access_token)
        save_credentials(store, credentials)
        transport = cls(client, store)
        transport._skip_history = True  # a new device does not ring for calls of the past
        return transport

    @classmethod
    def from_credentials(cls, credentials: Credentials, store_dir: str | Path) -> MatrixTransport:
        """Log in with an access token (a restarted client, or a token the user gave)."""
        store = Path(store_dir)
        client = new_client(
            credentials.homeserver, credentials.user_id, store, credentials.device_id
        )
        client.restore_login(credentials.user_id, credentials.device_id, credentials.access_token)
        save_credentials(store, credentials)
        return cls(client, store)

    @staticmethod
    def saved_credentials(store_dir: str | Path) -> Credentials | None:
        """The credentials saved in ``store_dir``, if any."""
        return saved_credentials(store_dir)

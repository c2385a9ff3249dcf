"""To-device messages for group calls, always Olm-encrypted, with a verified sending device.

Sending: every message is encrypted with Olm for its one recipient device (device keys queried
and one-time keys claimed first where needed). A device we cannot encrypt to gets nothing, and
:class:`UnencryptableDeviceError` names it: there is no plaintext path.

Receiving: nio decrypts Olm messages but drops every type it does not know; the messages of our
types (:data:`GROUP_TO_DEVICE_PREFIXES`) are taken from its decryption step instead. The sending
device is the one whose Curve25519 identity key the Olm session was made with (and whose Ed25519
key the payload carries), never the ``sender_device`` the payload claims. A message from a device
we do not know yet waits (bounded) until the sender's keys have been queried. A plaintext message
of our types is dropped and counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from nio import AsyncClient, UnknownToDeviceEvent

from .errors import MatrixTransportError
from .http import V3, path, request

logger = logging.getLogger(__name__)

# Types that only ever travel Olm-encrypted: MSC2746 signaling sent to devices, MatrixRTC keys
# (MSC4143) and the ringing/decline events' relatives, Element Call's keys, our own.
GROUP_TO_DEVICE_PREFIXES = (
    "m.call.",
    "org.matrix.call.",
    "org.matrix.msc4143.rtc.",
    "org.matrix.msc4075.",
    "org.matrix.msc4310.",
    "io.element.call.",
    "org.sealcall.",
)
# Messages waiting for their sender's device keys, oldest dropped first when full; and how many
# syncs (each followed by a key query) one may wait before it is dropped as from no known device.
MAX_WAITING = 256
MAX_WAITING_BYTES = 4 * 1024 * 1024
MAX_WAITING_SYNCS = 3
# Recipients per /sendToDevice request.
BATCH = 50


@dataclass(frozen=True)
class DeviceMessage:
    """A to-device message that arrived Olm-encrypted, from a device we know.

    ``sender_device`` is the device the Olm session belongs to (its identity key matched).
    """

    sender: str
    sender_device: str
    type: str
    content: dict[str, Any]


DeviceMessageListener = Callable[[DeviceMessage], None]


class UnencryptableDeviceError(MatrixTransportError):
    """Some devices could not be encrypted to (unknown device, no one-time key left): they were
    sent nothing. ``missing`` names them; ``sent`` counts the devices that did get the message."""

    def __init__(self, missing: list[tuple[str, str]], sent: int) -> None:
        names = ", ".join(f"{user} {device}" for user, device in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        super().__init__(f"no Olm session possible with {names}{more}: not sent to them")
        self.missing = missing
        self.sent = sent


@dataclass
class _Waiting:
    sender: str
    sender_key: str
    ed25519: str
    type: str
    content: dict[str, Any]
    size: int
    syncs: int = 0


class ToDeviceMessages:
    """The Olm to-device traffic of one device: sending, intake, and the listeners."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.listeners: list[DeviceMessageListener] = []
        self.waiting: deque[_Waiting] = deque()
        self._waiting_bytes = 0
        self.dropped_plaintext = 0
        self.dropped_unverified = 0
        self.dropped_overflow = 0
        self._lock = asyncio.Lock()
        client.add_to_device_callback(self._on_plaintext, UnknownToDeviceEvent)

    # -- intake ------------------------------------------------------------------------------

    def install(self, olm: Any) -> None:
        """Take our types from ``olm``'s handling of decrypted Olm payloads (once)."""
        if olm is None or getattr(olm, "_sealcall_to_device", False):
            return
        handle = olm._handle_olm_event

        def take_ours(sender: str, sender_key: str, payload: dict[str, Any]) -> Any:
            kind = payload.get("type")
            if isinstance(kind, str) and kind.startswith(GROUP_TO_DEVICE_PREFIXES):
                self._take(sender, sender_key, payload)
                return None
            return handle(sender, sender_key, payload)

        olm._handle_olm_event = take_ours
        olm._sealcall_to_device = True

    def _take(self, sender: str, sender_key: str, payload: dict[str, Any]) -> None:
        keys = payload.get("keys")
        ed25519 = keys.get("ed25519") if isinstance(keys, dict) else None
        content = payload.get("content")
        if not isinstance(ed25519, str) or not isinstance(content, dict):
            self._drop_unverified("no signing key in the payload")
            return
        try:
            size = len(json.dumps(content)) + 256
        except (TypeError, ValueError, RecursionError):
            size = MAX_WAITING_BYTES
        kind = str(payload["type"])
        self.waiting.append(_Waiting(sender, sender_key, ed25519, kind, content, size))
        self._waiting_bytes += size
        while len(self.waiting) > MAX_WAITING or self._waiting_bytes > MAX_WAITING_BYTES:
            self._waiting_bytes -= self.waiting.popleft().size
            self.dropped_overflow += 1
            logger.warning("dropped a to-device message: too many waiting for device keys")
        olm = self.client.olm
        if (
            olm is not None
            and self.client.device_store.device_from_sender_key(sender, sender_key) is None
        ):
            # A device we have not seen (or a user we do not track): query before delivering.
            olm.users_for_key_query.add(sender)

    def _on_plaintext(self, event: UnknownToDeviceEvent) -> None:
        if str(event.type).startswith(GROUP_TO_DEVICE_PREFIXES):
            self.dropped_plaintext += 1
            logger.warning("dropped a plaintext to-device message of a group-call type")

    def _drop_unverified(self, why: str) -> None:
        self.dropped_unverified += 1
        logger.warning("dropped an encrypted to-device message: %s", why)

    def flush(self) -> None:
        """Deliver the waiting messages whose sending device is known (after a sync's key query).

        A sender key with a message still waiting holds back its later ones, so each device's
        messages reach the listeners in the order they were sent.
        """
        waiting, self.waiting = self.waiting, deque()
        self._waiting_bytes = 0
        held: set[str] = set()
        store = self.client.device_store
        for item in waiting:
            device = (
                None
                if item.sender_key in held
                else store.device_from_sender_key(item.sender, item.sender_key)
            )
            if device is None:
                item.syncs += 1
                if item.syncs > MAX_WAITING_SYNCS and item.sender_key not in held:
                    self._drop_unverified("from no device the sender has published")
                    continue
                held.add(item.sender_key)
                self.waiting.append(item)
                self._waiting_bytes += item.size
                continue
            if device.ed25519 != item.ed25519:
                self._drop_unverified("signing key does not match the sending device")
                continue
            self._tell(DeviceMessage(item.sender, str(device.id), item.type, item.content))

    def _tell(self, message: DeviceMessage) -> None:
        for listener in list(self.listeners):
            try:
                listener(message)
            except Exception as error:  # one listener's failure must not cost the others
                logger.warning("a to-device listener failed: %s", type(error).__name__)

    # -- sending -----------------------------------------------------------------------------

    async def send(
        self, targets: Iterable[tuple[str, str]], event_type: str, content: dict[str, Any]
    ) -> int:
        """Olm-encrypt ``content`` for each (user, device) and send; how many devices got it.

        Raises :class:`UnencryptableDeviceError` (after sending to the others) when some could
        not be encrypted to.
        """
        if not isinstance(event_type, str) or not event_type:
            raise ValueError("a to-device message needs a type")
        if not isinstance(content, dict):
            raise TypeError("to-device content must be a JSON object")
        wanted = list(dict.fromkeys((str(user), str(device)) for user, device in targets))
        olm = self.client.olm
        if olm is None:
            raise MatrixTransportError("encryption is not set up on this device")
        async with self._lock:  # concurrent sends would claim two sessions for one device
            await self._prepare(wanted)
            messages: dict[str, dict[str, Any]] = {}
            missing: list[tuple[str, str]] = []
            for user, device_id in wanted:
                device = self._device(user, device_id)
                session = olm.session_store.get(device.curve25519) if device else None
                if device is None or session is None:
                    missing.append((user, device_id))
                    continue
                encrypted = olm._olm_encrypt(session, device, event_type, content)
                messages.setdefault(user, {})[device_id] = encrypted
        sent = 0
        batch: dict[str, dict[str, Any]] = {}
        count = 0
        for user, devices in messages.items():
            for device_id, encrypted in devices.items():
                batch.setdefault(user, {})[device_id] = encrypted
                count += 1
                if count == BATCH:
                    sent += await self._put(batch, count)
                    batch, count = {}, 0
        if count:
            sent += await self._put(batch, count)
        if missing:
            raise UnencryptableDeviceError(missing, sent)
        return sent

    def _device(self, user: str, device_id: str) -> Any:
        if user == self.client.user_id and device_id == self.client.device_id:
            return None  # Olm has no session with itself
        for device in self.client.device_store.active_user_devices(user):
            if device.id == device_id:
                return device
        return None

    async def _prepare(self, wanted: list[tuple[str, str]]) -> None:
        """Query the keys of unknown devices and claim one-time keys where no session exists."""
        client = self.client
        olm = client.olm
        assert olm is not None
        unknown = {user for user, device in wanted if self._device(user, device) is None}
        olm.users_for_key_query.update(unknown)
        # A failed query or claim leaves its devices without a session: they are named in the
        # UnencryptableDeviceError, which is the one way this fails.
        try:
            if client.should_query_keys:
                await client.keys_query()
            claim: dict[str, list[str]] = {}
            for user, device_id in wanted:
                device = self._device(user, device_id)
                if device is not None and olm.session_store.get(device.curve25519) is None:
                    claim.setdefault(user, []).append(device_id)
            if claim:
                response = await client.keys_claim(claim)
                if not hasattr(response, "one_time_keys"):
                    logger.warning("claiming one-time keys failed: %s", type(response).__name__)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.warning("preparing Olm sessions failed: %s", type(error).__name__)

    async def _put(self, batch: dict[str, dict[str, Any]], count: int) -> int:
        url = path(V3, "sendToDevice", "m.room.encrypted", uuid.uuid4().hex)
        await request(self.client, "PUT", url, {"messages": batch}, "sending to devices")
        return count


class ToDeviceMixin:
    """To-device messages for :class:`~sealcall.transport.matrix.MatrixTransport`."""

    to_device: ToDeviceMessages

    async def send_to_device(
        self,
        user_id: str,
        devices: str | Iterable[str],
        event_type: str,
        content: dict[str, Any],
    ) -> int:
        """Send ``content`` Olm-encrypted to one device or several of ``user_id``.

        Returns how many devices got it; :class:`UnencryptableDeviceError` names those that
        could not be encrypted to (the others got it).
        """
        names = [devices] if isinstance(devices, str) else list(devices)
        return await self.to_device.send([(user_id, d) for d in names], event_type, content)

    async def send_to_devices(
        self, targets: Iterable[tuple[str, str]], event_type: str, content: dict[str, Any]
    ) -> int:
        """Send ``content`` Olm-encrypted to each (user id, device id), batched."""
        return await self.to_device.send(targets, event_type, content)

    def add_to_device_listener(self, listener: DeviceMessageListener) -> None:
        """Call ``listener`` for each Olm-encrypted to-device message of a group-call type
        (:data:`GROUP_TO_DEVICE_PREFIXES`) from a known device, in the order each device sent
        them."""
        self.to_device.listeners.append(listener)

    def remove_to_device_listener(self, listener: DeviceMessageListener) -> None:
        """Stop calling ``listener`` (a listener added more than once is removed everywhere)."""
        self.to_device.listeners[:] = [f for f in self.to_device.listeners if f != listener]

    @property
    def dropped_plaintext_to_device(self) -> int:
        """Plaintext to-device messages of group-call types, dropped."""
        return self.to_device.dropped_plaintext

    @property
    def dropped_unverified_to_device(self) -> int:
        """Encrypted to-device messages dropped: no known sending device, or keys mismatched."""
        return self.to_device.dropped_unverified + self.to_device.dropped_overflow

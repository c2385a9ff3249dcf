"""Helpers for tests against a real Synapse: users, logged-in devices, DMs, VoIP instances."""

import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from sealcall.calls import CallPolicy
from sealcall.demo import open_dm, wait_for
from sealcall.homeserver import Homeserver
from sealcall.media import LOOPBACK, FrameCounter
from sealcall.session import CallSession, VoIP
from sealcall.transport import RoomEvent
from sealcall.transport.matrix import MatrixTransport
from voip_helpers import SMALL_MEDIA

E2EE = "org.sealcall.e2ee"


class MatrixDevice:
    """A logged-in Matrix device with a VoIP instance and a record of its events."""

    def __init__(
        self,
        transport: MatrixTransport,
        store: Path,
        policy: CallPolicy | None,
        ask_turn: bool = False,
    ) -> None:
        self.transport = transport
        self.store = store
        self.policy = policy
        self.ask_turn = ask_turn
        self.events: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        self.counters: dict[tuple[str, str], FrameCounter] = {}
        self.voip = self._voip()

    def _voip(self) -> VoIP:
        voip = VoIP(
            self.transport,
            policy=self.policy,
            media=SMALL_MEDIA,
            # Asked per call, as the apps do (none until the first call).
            ice_source=self.transport.ice_servers if self.ask_turn else None,
            host_addresses=LOOPBACK,
            state_dir=self.store,
        )
        for name in (
            "incoming_call",
            "call_waiting",
            "state_changed",
            "call_ended",
            "history_item",
            "remote_mute_changed",
        ):
            voip.on(name, lambda *args, name=name: self.events[name].append(args))
        voip.on("remote_media_added", self._media_added)
        return voip

    def _media_added(self, session: CallSession, track: Any, purpose: Any) -> None:
        self.counters[(session.call_id, track.kind)] = FrameCounter(track).start()

    @property
    def user_id(self) -> str:
        return self.transport.user_id

    async def restart(self) -> None:
        """Stop as a crashed device would (no hang-up) and start again from the store."""
        await self.voip.close(hang_up=False)
        await self.transport.stop()
        saved = MatrixTransport.saved_credentials(self.store)
        assert saved is not None
        self.transport = MatrixTransport.from_credentials(saved, self.store)
        self.events.clear()
        self.voip = self._voip()
        await self.transport.start()

    async def stop(self, hang_up: bool = True) -> None:
        for counter in self.counters.values():
            await counter.stop()
        await self.voip.close(hang_up=hang_up)
        await self.transport.stop()


async def device(
    server: Homeserver,
    tmp: Path,
    name: str,
    policy: CallPolicy | None = None,
    *,
    ask_turn: bool = False,
) -> MatrixDevice:
    """A fresh account on ``server``, logged in, syncing (``ask_turn``: asking for the TURN
    servers the homeserver offers before each call, as the apps do)."""
    username = f"{name}{uuid.uuid4().hex[:8]}"
    account = await server.register(username, "secret-" + username)
    store = tmp / username
    transport = await MatrixTransport.login(server.url, account.user_id, account.password, store)
    await transport.start()
    return MatrixDevice(transport, store, policy, ask_turn)


async def dm(a: MatrixDevice, b: MatrixDevice) -> str:
    return await open_dm(a.transport, b.transport)


async def ringing(device_: MatrixDevice, timeout: float = 15) -> CallSession:
    await wait_for(lambda: bool(device_.events["incoming_call"]), timeout, "a ring")
    session: CallSession = device_.events["incoming_call"][-1][0]
    return session


def without_frame_encryption(transport: Any) -> None:
    """Make the device on ``transport`` behave as an app without sealcall's frame encryption:
    it neither sends nor sees ``org.sealcall.e2ee`` (its listeners are already registered)."""
    send = transport.send_room_event

    async def send_plain(room_id: str, event_type: str, content: dict[str, Any]) -> None:
        await send(room_id, event_type, strip(content))

    def blind(listener: Any) -> Any:
        def deliver(event: RoomEvent) -> None:
            content = strip(event.event.get("content", {}))
            listener(RoomEvent(event.room_id, event.sender, {**event.event, "content": content}))

        return deliver

    transport.send_room_event = send_plain
    transport._listeners[:] = [blind(listener) for listener in transport._listeners]


def strip(content: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in content.items() if k != E2EE}

"""Helpers for end-to-end call tests: VoIP instances on an in-memory transport, real aiortc."""

import asyncio
from collections import defaultdict
from typing import Any

from sealcall.calls import CallPolicy
from sealcall.media import LOOPBACK, FrameCounter, PatternVideoTrack, SyntheticAudioTrack
from sealcall.session import CallSession, LocalMedia, VoIP
from sealcall.transport import InMemoryHub, InMemoryTransport

ROOM = "!dm:local"
SMALL_MEDIA = LocalMedia(
    microphone=SyntheticAudioTrack,
    camera=lambda: PatternVideoTrack(320, 240),
    screen=lambda: PatternVideoTrack(320, 240, fps=10),
)


class Device:
    """A VoIP instance plus a record of its callbacks and counters on remote media."""

    def __init__(
        self, hub: InMemoryHub, user_id: str, device_id: str, policy: CallPolicy | None = None
    ) -> None:
        transport = InMemoryTransport(hub, user_id, device_id)
        transport.join(ROOM)
        self.voip = VoIP(transport, policy=policy, media=SMALL_MEDIA, host_addresses=LOOPBACK)
        self.events: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        self.counters: dict[tuple[str, str], FrameCounter] = {}
        for name in (
            "incoming_call",
            "call_waiting",
            "state_changed",
            "remote_streams_changed",
            "remote_mute_changed",
            "remote_hold_changed",
            "call_ended",
            "history_item",
            "remote_media_removed",
        ):
            self.voip.on(name, self._recorder(name))
        self.voip.on("remote_media_added", self._media_added)

    def _recorder(self, name: str) -> Any:
        def record(*args: Any) -> None:
            self.events[name].append(args)

        return record

    def _media_added(self, session: CallSession, track: Any, purpose: Any) -> None:
        self.events["remote_media_added"].append((session, track, purpose))
        key = (session.call_id, f"{purpose.value}/{track.kind}")
        self.counters[key] = FrameCounter(track).start()

    def counter(self, call_id: str, kind: str, purpose: str = "m.usermedia") -> FrameCounter:
        return self.counters[(call_id, f"{purpose}/{kind}")]

    def states(self, call_id: str) -> list[str]:
        return [new.value for s, _, new in self.events["state_changed"] if s.call_id == call_id]

    async def close(self) -> None:
        for counter in self.counters.values():
            await counter.stop()
        await self.voip.close()


async def eventually(condition: Any, timeout: float = 10.0) -> None:
    """Wait for ``condition()`` to hold."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def answered_call(
    caller: Device, callee: Device, *, video: bool = False
) -> tuple[CallSession, CallSession]:
    """Place a call from ``caller``, answer it on ``callee``; return both sessions, connected."""
    session = await caller.voip.place_call(ROOM, callee.voip.transport.user_id, video=video)
    await eventually(
        lambda: any(s.call_id == session.call_id for (s,) in callee.events["incoming_call"])
    )
    incoming = next(s for (s,) in callee.events["incoming_call"] if s.call_id == session.call_id)
    await incoming.answer()
    await eventually(lambda: session.state.value == incoming.state.value == "connected")
    return session, incoming

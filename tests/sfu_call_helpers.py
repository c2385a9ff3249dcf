"""Group calls through the real SFU in tests: an in-process ``SfuServer`` with the real
``AdmissionService`` over the session's Synapse, and members' SFU-mode sessions."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import test_group_membership_session as gm
from group_call_helpers import CallDevices, group_call
from sealcall.group import MemberDevice
from sealcall.homeserver import Homeserver, free_port
from sealcall.media import FrameCounter
from sealcall.session import GroupCallSession
from sealcall.sfu.admission_service import AdmissionGate
from sealcall.sfu.server import SfuServer


@asynccontextmanager
async def running_sfu(synapse: Homeserver, account: gm.Device) -> AsyncIterator[SfuServer]:
    """The SFU on 127.0.0.1 with real admission through ``account`` (in the rooms it serves);
    its URL is ``sfu_url(server)``."""
    port = free_port()
    gate = AdmissionGate(
        account.transport, homeserver_url=synapse.url, sfu_url=f"http://127.0.0.1:{port}"
    )
    server = SfuServer(gate, port=port)
    await server.start()
    try:
        yield server
    finally:
        await server.close()
        await gate.close()


def sfu_url(server: SfuServer) -> str:
    return f"http://127.0.0.1:{server.port}"


@dataclass
class Watched:
    """A member's SFU-mode session and what it decoded of each other member, by kind."""

    session: GroupCallSession
    counters: dict[tuple[MemberDevice, str], FrameCounter] = field(default_factory=dict)
    layers: list[tuple[MemberDevice, str]] = field(default_factory=list)

    def decoded(self, member: MemberDevice, kind: str) -> int:
        counter = self.counters.get((member, kind))
        return 0 if counter is None else counter.frames

    def decrypted(self, member: MemberDevice, kind: str) -> int:
        taps = self.session.link.receiver_taps() if self.session.link is not None else {}
        return sum(t.counters.frames_decrypted for t in taps.get(member, []) if t.kind == kind)


def sfu_member_session(
    devices: CallDevices, d: gm.Device, room_id: str, server: SfuServer, **options: Any
) -> Watched:
    """A member's session that prefers ``server``, decoding every forwarded track it gets."""
    session = group_call(devices, d, room_id, sfu_url=sfu_url(server), **options)
    watched = Watched(session)

    def added(member: MemberDevice, track: Any, purpose: Any) -> None:
        watched.counters[(member, track.kind)] = FrameCounter(track).start()

    session.on("remote_media_added", added)
    session.on("layer_changed", lambda p, q: watched.layers.append((p, q)))
    return watched

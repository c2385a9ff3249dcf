"""The SFU server over the real stack: plain aiortc participants through its WebSocket on 127.0.0.1.

These tests use ``OpenAdmission`` on purpose (anyone naming a room gets in): admission itself is
tested in test_sfu_admission*.py. Media is not end-to-end encrypted here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from sealcall.media.sources import PatternVideoTrack, SyntheticAudioTrack
from sealcall.sfu.admission import Participant
from sealcall.sfu.server import Gate, OpenAdmission, SfuServer, member_id

from media_helpers import until

ROOM = "!room:example.org"


@dataclass(eq=False)
class Client:
    """A plain aiortc participant: audio + one video track out, forwarded tracks in."""

    name: str
    pc: RTCPeerConnection = field(init=False)
    ws: aiohttp.ClientWebSocketResponse | None = None
    member: str = ""
    announced: dict[str, str] = field(default_factory=dict)  # mid -> member
    ssrcs: dict[int, str] = field(default_factory=dict)  # forwarded SSRC -> member
    frames: dict[tuple[str, str], int] = field(default_factory=dict)  # (member, kind) -> frames
    messages: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    joined: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(SyntheticAudioTrack())
        self.pc.addTrack(PatternVideoTrack(160, 120, 15))

    @property
    def participant(self) -> Participant:
        return Participant(ROOM, f"@{self.name}:example.org", "DEV", "open")

    async def connect(self, session: aiohttp.ClientSession, url: str, token: object = None) -> None:
        self.ws = await session.ws_connect(url)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        if token is None:
            token = {"room_id": ROOM, "user_id": f"@{self.name}:example.org", "device_id": "DEV"}
        await self.ws.send_json(
            {"type": "join", "token": token, "offer": self.pc.localDescription.sdp}
        )
        self.tasks.append(asyncio.ensure_future(self._read()))
        await asyncio.wait_for(self.joined.wait(), 20)

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            self.messages.append(data)
            if data["type"] == "joined":
                self.member = data["member"]
                await self.pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))
                self.joined.set()
            elif data["type"] == "offer":
                await self.pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "offer"))
                await self.pc.setLocalDescription(await self.pc.createAnswer())
                await self.ws.send_json({"type": "answer", "sdp": self.pc.localDescription.sdp})
            elif data["type"] == "tracks":
                for track in data["tracks"]:
                    if track["mid"] not in self.announced:
                        self.announced[track["mid"]] = track["member"]
                        self.ssrcs[track["ssrc"]] = track["member"]
                        self._consume(track["mid"], track["member"])

    def transceiver(self, mid: str) -> RTCRtpTransceiver:
        return next(t for t in self.pc.getTransceivers() if t.mid == mid)

    def _consume(self, mid: str, member: str) -> None:
        track: MediaStreamTrack = self.transceiver(mid).receiver.track

        async def count() -> None:
            key = (member, track.kind)
            try:
                while True:
                    await track.recv()
                    self.frames[key] = self.frames.get(key, 0) + 1
            except MediaStreamError:
                pass

        self.tasks.append(asyncio.ensure_future(count()))

    async def packets_from(self, member: str) -> int:
        """RTP packets received on the forwarded streams that carry ``member``."""
        total = 0
        for t in self.pc.getTransceivers():
            for stats in (await t.receiver.getStats()).values():
                if stats.type == "inbound-rtp" and self.ssrcs.get(stats.ssrc) == member:
                    total += stats.packetsReceived
        return total

    def got(self, member: str, kind: str) -> int:
        return self.frames.get((member, kind), 0)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        await self.pc.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@dataclass
class Setup:
    server: SfuServer
    gate: OpenAdmission
    session: aiohttp.ClientSession
    clients: list[Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/ws"

    async def add(self, name: str) -> Client:
        client = Client(name)
        self.clients.append(client)
        await client.connect(self.session, self.url)
        return client


@pytest.fixture
async def sfu() -> AsyncIterator[Setup]:
    gates: list[OpenAdmission] = []

    def make_gate(on_disconnect: Any) -> Gate:
        gates.append(OpenAdmission(on_disconnect))
        return gates[0]

    server = SfuServer(make_gate, host="127.0.0.1", port=0)
    await server.start()
    session = aiohttp.ClientSession()
    setup = Setup(server, gates[0], session)
    yield setup
    for client in setup.clients:
        await client.close()
    await session.close()
    await server.close()


def everyone_hears_and_sees_everyone(clients: list[Client], frames: int = 5) -> bool:
    return all(
        c.got(o.member, kind) >= frames
        for c in clients
        for o in clients
        if o is not c
        for kind in ("audio", "video")
    )


async def test_three_participants_receive_each_other_and_a_leaver_stops(sfu: Setup) -> None:
    a, b, c = [await sfu.add(n) for n in ("alice", "bob", "carol")]
    await until(lambda: everyone_hears_and_sees_everyone([a, b, c]), timeout=30)
    # The announcements map each forwarded stream to its sender, and only to the others.
    for client in (a, b, c):
        assert sorted(client.announced.values()) == sorted(
            [o.member for o in (a, b, c) if o is not client for _ in range(2)]
        )
    room = sfu.server.rooms[ROOM]
    assert set(room.forwarder.participants()) == {a.member, b.member, c.member}

    assert c.ws is not None
    await c.ws.send_json({"type": "leave"})
    await until(lambda: c.member not in room.members)
    assert c.member not in room.forwarder.participants()
    await until(lambda: any(m.get("member") == c.member for m in a.messages if m["type"] == "left"))
    frozen = {x.name: await x.packets_from(c.member) for x in (a, b)}
    assert all(n > 0 for n in frozen.values())
    # The others keep exchanging media; nothing more of the leaver's arrives.
    base = {x.name: await x.packets_from(y.member) for x, y in ((a, b), (b, a))}
    for x, y in ((a, b), (b, a)):
        for _ in range(200):
            if await x.packets_from(y.member) > base[x.name] + 60:
                break
            await asyncio.sleep(0.05)
        assert await x.packets_from(y.member) > base[x.name] + 60
        assert await x.packets_from(c.member) == frozen[x.name]


HOSTILE: list[Any] = [
    "not json",
    "[]",
    '{"type": 5}',
    '{"type": "dance"}',
    '{"type": "answer", "sdp": "v=0"}',  # before join
    '{"type": "join", "token": {"room_id": "x"}, "offer": "v=0"}',  # refused token
    json.dumps({"type": "join", "token": [1], "offer": "v=0"}),
    json.dumps(
        {
            "type": "join",
            "token": {"room_id": ROOM, "user_id": "@eve:example.org", "device_id": "E"},
            "offer": "garbage sdp",
        }
    ),
    json.dumps({"type": "subscribe", "publisher": "x", "quality": "ultra"}),
    json.dumps({"type": "join", "token": "t", "offer": "v" * 100_000}),
    b"\x00binary",
]


async def test_hostile_messages_and_an_ended_admission(sfu: Setup) -> None:
    a, b = [await sfu.add(n) for n in ("alice", "bob")]
    await until(lambda: everyone_hears_and_sees_everyone([a, b]), timeout=30)
    bad = await sfu.session.ws_connect(sfu.url)
    errors: list[str] = []
    for item in HOSTILE:
        if bad.closed:
            bad = await sfu.session.ws_connect(sfu.url)
        if isinstance(item, bytes):
            await bad.send_bytes(item)
        else:
            await bad.send_str(item)
        reply = await bad.receive(timeout=20)
        if reply.type == aiohttp.WSMsgType.TEXT:
            errors.append(json.loads(reply.data)["type"])
        else:
            assert reply.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await bad.close()
    assert errors
    assert set(errors) == {"error"}
    assert sfu.server.bad_messages >= 8
    # A participant's own socket: a subscribe to someone not in the room is an error, not a drop.
    assert a.ws is not None
    await a.ws.send_json({"type": "subscribe", "publisher": "@nobody|X", "quality": "full"})
    await a.ws.send_json({"type": "subscribe", "publisher": b.member, "quality": "full"})
    await until(lambda: any(m["type"] == "error" for m in a.messages))
    # The real participants were served throughout.
    before = (a.got(b.member, "video"), b.got(a.member, "video"))
    await until(lambda: a.got(b.member, "video") > before[0] + 5, timeout=20)
    await until(lambda: b.got(a.member, "video") > before[1] + 5, timeout=20)

    # Bob's admission ends: he is out at once and his connection gets nothing more.
    room = sfu.server.rooms[ROOM]
    bob = room.members[b.member]
    sfu.gate.end(b.participant)
    assert b.member not in room.members
    assert b.member not in room.forwarder.participants()
    sent = bob.transport.sent
    received = room.members[a.member].transport.rtp_received
    await until(lambda: room.members[a.member].transport.rtp_received > received + 60)
    assert bob.transport.sent == sent
    await until(lambda: any(m.get("reason") == "admission_ended" for m in b.messages))
    assert member_id(b.participant) == b.member

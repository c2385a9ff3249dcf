"""The SFU server over the real stack: plain aiortc participants through its WebSocket on 127.0.0.1.

These tests use ``OpenAdmission`` on purpose (anyone naming a room gets in): admission itself is
tested in test_sfu_admission*.py. Media is not end-to-end encrypted here.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
    sdp,
)
from aiortc.mediastreams import MediaStreamError
from prometheus_client.parser import text_string_to_metric_families

from sealcall.media.sources import PatternVideoTrack, SyntheticAudioTrack
from sealcall.sfu.admission import Participant
from sealcall.sfu.rtp import RtpView
from sealcall.sfu.server import Gate, OpenAdmission, SfuServer, member_id

from media_helpers import until

ROOM = "!room:example.org"


@dataclass(eq=False)
class Client:
    """A plain aiortc participant: audio + one video track (two with ``full``) and the ``control``
    data channel out, forwarded tracks in."""

    name: str
    full: bool = False
    remb: bool = True  # False: no abs-send-time, so aiortc sends no REMB (no bandwidth limit)
    rtx: bool = True  # False: its answers to the SFU's offers keep no RTX on forwarded m-lines
    pc: RTCPeerConnection = field(init=False)
    channel: RTCDataChannel = field(init=False)
    control: list[dict[str, Any]] = field(default_factory=list)  # received on the channel
    offers: list[str] = field(default_factory=list)  # the SFU's renegotiation offers
    ws: aiohttp.ClientWebSocketResponse | None = None
    member: str = ""
    announced: dict[str, str] = field(default_factory=dict)  # mid -> member
    ssrcs: dict[int, str] = field(default_factory=dict)  # forwarded SSRC -> member
    frames: dict[tuple[str, str], int] = field(default_factory=dict)  # (member, kind) -> frames
    messages: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    joined: asyncio.Event = field(default_factory=asyncio.Event)
    tracks: list[dict[str, Any]] = field(default_factory=list)  # the latest announcement

    def __post_init__(self) -> None:
        # max-bundle: with aiortc's default (balanced), a second video track stays on a transport
        # of its own that the answer's BUNDLE group then stops.
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.pc.addTrack(SyntheticAudioTrack())
        self.pc.addTrack(PatternVideoTrack(160, 120, 15))
        if self.full:
            self.pc.addTrack(PatternVideoTrack(320, 240, 15))
        self.channel = self.pc.createDataChannel("control")
        self.channel.on("message", lambda text: self.control.append(json.loads(text)))

    def send_control(self, **fields: Any) -> None:
        self.channel.send(json.dumps(fields))

    def got_control(self, **fields: Any) -> bool:
        return any(all(m.get(k) == v for k, v in fields.items()) for m in self.control)

    @property
    def participant(self) -> Participant:
        return Participant(ROOM, f"@{self.name}:example.org", "DEV", "open")

    async def connect(self, session: aiohttp.ClientSession, url: str, token: object = None) -> None:
        self.ws = await session.ws_connect(url)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        if token is None:
            token = {"room_id": ROOM, "user_id": f"@{self.name}:example.org", "device_id": "DEV"}
        offer = self.pc.localDescription.sdp
        if not self.remb:
            offer = "".join(
                line for line in offer.splitlines(keepends=True) if "abs-send-time" not in line
            )
        await self.ws.send_json({"type": "join", "token": token, "offer": offer})
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
                self.member = data["id"]
                await self.pc.setRemoteDescription(RTCSessionDescription(data["answer"], "answer"))
                self.joined.set()
            elif data["type"] == "offer":
                self.offers.append(data["sdp"])
                await self.pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "offer"))
                await self.pc.setLocalDescription(await self.pc.createAnswer())
                answer = self.pc.localDescription.sdp
                await self.ws.send_json(
                    {"type": "answer", "sdp": answer if self.rtx else without_rtx(answer)}
                )
            elif data["type"] == "tracks":
                self.tracks = data["tracks"]
                for track in data["tracks"]:
                    if track["mid"] not in self.announced:
                        self.announced[track["mid"]] = track["member"]
                        self.ssrcs[track["ssrc"]] = track["member"]
                        self._consume(track["mid"], track["member"])

    def transceiver(self, mid: str) -> RTCRtpTransceiver:
        # The newest: aiortc, answering an offer that recycles a removed m-line under a new mid,
        # renames the m-line's old transceiver to that mid too (it assigns mids by m-line index).
        return [t for t in self.pc.getTransceivers() if t.mid == mid][-1]

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


def without_rtx(answer: str) -> str:
    """``answer`` with RTX taken out of its receive-only m-lines (the SFU's forwarded streams)."""
    head, *sections = answer.split("m=")
    for i, section in enumerate(sections):
        pts = re.findall(r"a=rtpmap:(\d+) rtx/", section) if "a=recvonly" in section else []
        lines = section.split("\r\n")
        words = lines[0].split(" ")
        lines[0] = " ".join(words[:3] + [w for w in words[3:] if w not in pts])
        dropped = tuple(f"a={a}:{pt} " for a in ("rtpmap", "fmtp") for pt in pts)
        sections[i] = "\r\n".join(line for line in lines if not line.startswith(dropped))
    return "m=".join([head, *sections])


@dataclass
class Setup:
    server: SfuServer
    gate: OpenAdmission
    session: aiohttp.ClientSession
    clients: list[Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/ws"

    async def add(self, name: str, full: bool = False, remb: bool = True) -> Client:
        client = Client(name, full, remb)
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

    ports_before = [m.port for m in sdp.SessionDescription.parse(a.offers[-1]).media]
    c_mids = [t["mid"] for t in a.tracks if t["member"] == c.member]
    assert c.ws is not None
    await c.ws.send_json({"type": "leave"})
    await until(lambda: c.member not in room.members)
    assert c.member not in room.forwarder.participants()
    await until(lambda: any(m.get("member") == c.member for m in a.messages if m["type"] == "left"))
    # The leaver's m-lines go: rejected (port 0) in the SFU's next offer, then a complete `tracks`.
    for x in (a, b):
        await until(lambda x=x: all(t["member"] != c.member for t in x.tracks))
        assert sorted(t["member"] for t in x.tracks) == [(b if x is a else a).member] * 2
    removed = sdp.SessionDescription.parse(a.offers[-1])
    assert [m.port for m in removed.media if m.rtp.muxId in c_mids] == [0, 0]
    assert not set(c_mids) & set(removed.group[0].items)
    assert {t.currentDirection for t in a.pc.getTransceivers() if t.mid in c_mids} == {"inactive"}
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
    # A newcomer's streams take the removed m-lines' places (new mids): the SDP does not grow.
    d = await sfu.add("dave")
    await until(lambda: a.got(d.member, "video") >= 3 and a.got(d.member, "audio") >= 3, timeout=30)
    recycled = sdp.SessionDescription.parse(a.offers[-1])
    assert [m.port for m in recycled.media] == ports_before
    d_mids = {t["mid"] for t in a.tracks if t["member"] == d.member}
    assert {recycled.media[i].rtp.muxId for i, m in enumerate(removed.media) if m.port == 0} == (
        d_mids
    )
    assert not d_mids & set(c_mids)


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
    json.dumps({"type": "subscribe", "publisher": "x", "quality": "full"}),  # control channel
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
    # A participant's control channel: a subscribe to someone not in the room is an error, not a
    # drop; after 20 bad messages the channel is closed (the connection stays).
    a.send_control(type="subscribe", publisher="@nobody|X", quality="full")
    await until(lambda: a.got_control(type="error", reason="unknown publisher"))
    for i in range(25):
        a.channel.send("{" * i)
    await until(lambda: a.channel.readyState == "closed", timeout=20)
    assert sum(m["type"] == "error" for m in a.control) == 20
    assert sfu.server.rooms[ROOM].drops()["bad_control"] == 20
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


async def test_control_channel_layers_and_the_floor(sfu: Setup) -> None:
    a = await sfu.add("alice", remb=False)  # no bandwidth estimate: the full layer fits
    b = await sfu.add("bob", full=True)  # thumbnail and full resolution
    c = await sfu.add("carol")
    clients = [a, b, c]
    await until(lambda: everyone_hears_and_sees_everyone(clients), timeout=30)
    # Who is speaking (RFC 6464 levels of aiortc's speech-like audio) comes on the channel.
    await until(lambda: any(m["type"] == "speaking" and m["members"] for m in c.control))
    assert not any(m["type"] == "speaking" for m in c.messages)  # not on the WebSocket
    # Each subscriber is told the layer it receives, on its control channel.
    await until(lambda: a.got_control(type="layer", publisher=b.member, quality="thumbnail"))
    a.send_control(type="subscribe", publisher=b.member, quality="full")
    await until(lambda: a.got_control(type="layer", publisher=b.member, quality="full"), timeout=20)
    room = sfu.server.rooms[ROOM]
    assert room.forwarder.layer(a.member, b.member) == "full"
    assert not c.got_control(type="layer", publisher=b.member, quality="full")
    # The floor: first come; a refused asker learns the holder; it ends on release or leave.
    a.send_control(type="floor", action="request")
    await until(lambda: all(x.got_control(type="floor", holder=a.member) for x in clients))
    c.send_control(type="floor", action="request")
    c.send_control(type="floor", action="release")  # not c's to give
    await until(lambda: sum(m == {"type": "floor", "holder": a.member} for m in c.control) == 3)
    a.send_control(type="floor", action="release")
    await until(lambda: all(x.got_control(type="floor", holder=None) for x in clients))
    c.send_control(type="floor", action="request")
    await until(lambda: b.got_control(type="floor", holder=c.member))
    assert c.ws is not None
    await c.ws.send_json({"type": "leave"})
    await until(lambda: sum(m.get("holder", "") is None for m in b.control) == 2)
    assert room.floor.holder is None


async def test_mute_indicators_reach_the_others_and_newcomers(sfu: Setup) -> None:
    a, b = [await sfu.add(n) for n in ("alice", "bob")]
    await until(lambda: everyone_hears_and_sees_everyone([a, b]), timeout=30)
    a.send_control(type="mute", audio=True, video=False)
    await until(lambda: b.got_control(type="muted", member=a.member, audio=True, video=False))
    assert not a.got_control(type="muted")  # the sender is not told its own state
    # Hostile values are errors, counted, and change nothing.
    a.send_control(type="mute", audio=0, video=False)
    a.send_control(type="mute", audio=True, video="yes")
    await until(lambda: sum(m["type"] == "error" for m in a.control) == 2)
    room = sfu.server.rooms[ROOM]
    assert room.drops()["bad_control"] == 2
    b.send_control(type="mute", audio=False, video=True)
    a.send_control(type="mute", audio=True, video=False)  # unchanged: not told again
    await until(lambda: a.got_control(type="muted", member=b.member, audio=False, video=True))
    # A newcomer is told everyone's state when its channel opens.
    c = await sfu.add("carol")
    await until(lambda: c.got_control(type="muted", member=a.member, audio=True, video=False))
    await until(lambda: c.got_control(type="muted", member=b.member, audio=False, video=True))
    assert sum(m.get("member") == a.member for m in b.control if m["type"] == "muted") == 1
    # A leaver's state is forgotten: the next newcomer hears nothing of it.
    assert a.ws is not None
    await a.ws.send_json({"type": "leave"})
    await until(lambda: a.member not in room.members)
    d = await sfu.add("dave")
    await until(lambda: d.got_control(type="muted", member=b.member, audio=False, video=True))
    assert not d.got_control(type="muted", member=a.member)


async def test_a_subscriber_with_a_real_estimator_ramps_to_the_full_layer(sfu: Setup) -> None:
    """aiortc's REMB estimator reports about 1.5x what it receives (far from a full layer while on
    the thumbnail) and nothing caps it: the SFU ramps through the clamp and it gets the full
    layer."""
    a = await sfu.add("alice")  # abs-send-time offered: aiortc's estimators send REMBs
    b = await sfu.add("bob", full=True)
    await until(lambda: everyone_hears_and_sees_everyone([a, b]), timeout=30)
    fw = sfu.server.rooms[ROOM].forwarder
    await until(lambda: fw.estimate(a.member, b.member) is not None, timeout=30)
    estimate = fw.estimate(a.member, b.member)
    assert estimate is not None
    assert estimate < 1_200_000  # the estimator's own figure, not enough for b's full layer
    a.send_control(type="subscribe", publisher=b.member, quality="full")
    await until(lambda: a.got_control(type="layer", publisher=b.member, quality="full"), timeout=30)
    frames = a.got(b.member, "video")
    await until(lambda: a.got(b.member, "video") > frames + 10)


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of the Prometheus text ``text`` (0 if absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def test_metrics_move_under_a_call_and_each_server_has_its_own(sfu: Setup) -> None:
    other = SfuServer(OpenAdmission, host="127.0.0.1", port=0)
    await other.start()
    try:
        a, b = await sfu.add("alice"), await sfu.add("bob")
        await until(lambda: everyone_hears_and_sees_everyone([a, b]), timeout=30)
        url = f"http://127.0.0.1:{sfu.server.port}/metrics"

        async def scrape(url: str = url) -> str:
            async with sfu.session.get(url) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain")
                return await response.text()

        first = await scrape()
        assert metric(first, "sfu_participants", room=ROOM) == 2
        assert metric(first, "sfu_keyframe_requests_total") >= 1  # asked when each one subscribed
        assert metric(first, "process_cpu_seconds_total") > 0
        a.channel.send("not json")
        await until(lambda: a.got_control(type="error"))
        await asyncio.sleep(0.5)  # let more packets through
        second = await scrape()
        for name in ("sfu_forwarded_packets_total", "sfu_forwarded_bytes_total"):
            assert metric(second, name) > metric(first, name) > 0
        assert metric(second, "sfu_drops_total", reason="bad_control") == 1
        # A room that empties keeps its counts in the totals.
        await a.close()
        await b.close()
        await until(lambda: ROOM not in sfu.server.rooms)
        third = await scrape()
        assert metric(third, "sfu_participants", room=ROOM) == 0
        assert metric(third, "sfu_forwarded_packets_total") >= metric(
            second, "sfu_forwarded_packets_total"
        )
        # Another server in the same process counts only its own.
        alone = await scrape(f"http://127.0.0.1:{other.port}/metrics")
        assert metric(alone, "sfu_forwarded_packets_total") == 0
        assert "sfu_participants{" not in alone
    finally:
        await other.close()


async def test_lost_forwarded_video_is_resent_as_rtx_from_the_cache(sfu: Setup) -> None:
    a, b = await sfu.add("alice"), await sfu.add("bob")
    await until(lambda: everyone_hears_and_sees_everyone([a, b]), timeout=30)
    member = sfu.server.rooms[ROOM].members[a.member]
    video = next(s for s, (_, kind) in member.publishers.items() if kind == "video")
    section = member.sections[video]
    rtx_ssrc, rtx_pt = section.local_rtx_ssrc, section.rtx_payload_type
    # Alice's answer (aiortc) kept RTX; the m-line has an RTX payload type of its own (her
    # publishing video m-line has another), which is how aiortc routes the RTX SSRC it does
    # not register, and the offer paired the SSRCs by FID.
    assert rtx_ssrc is not None
    assert rtx_pt is not None
    assert rtx_pt != member.transport.sections[1].rtx_payload_type
    assert f"a=ssrc-group:FID {video} {rtx_ssrc}" in a.offers[-1]
    # Every 10th packet of Bob's video to Alice is lost on the way: Alice NACKs, the SFU answers
    # with RTX packets (RFC 4588): own SSRC, payload type and sequence, the lost one's first.
    send, sent, lost, plain = member.transport.send_rtp, set(), set(), [0]
    osns: list[int] = []
    rtx_seqs: list[int] = []

    def lossy(data: bytes) -> None:
        seq, ssrc = int.from_bytes(data[2:4]), int.from_bytes(data[8:12])
        if ssrc == video:
            if seq in sent:
                plain[0] += 1
            else:
                sent.add(seq)
                if len(sent) % 10 == 0:
                    lost.add(seq)
                    return
        elif ssrc == rtx_ssrc:
            assert data[1] & 0x7F == rtx_pt
            offset = RtpView().load(data).payload_offset
            osns.append(int.from_bytes(data[offset : offset + 2]))
            rtx_seqs.append(seq)
        send(data)

    member.transport.send_rtp = lossy  # type: ignore[method-assign]
    frames = a.got(b.member, "video")
    await until(lambda: len(osns) >= 3, timeout=20)
    assert set(osns) <= lost
    assert plain == [0]
    assert all((y - x) % 65536 == 1 for x, y in itertools.pairwise(rtx_seqs))
    assert sfu.server.rooms[ROOM].forwarder.stats.nacks_served >= len(osns)
    # aiortc took them in on Bob's m-line (it unwraps RTX there) and the video goes on.
    # The SFU counted them as sent; wait for aiortc to have taken them in (under load it lags).
    receiver = a.transceiver(section.mid).receiver

    async def rtx_received() -> int:
        stats = (await receiver.getStats()).values()
        return max(
            (s.packetsReceived for s in stats if s.type == "inbound-rtp" and s.ssrc == rtx_ssrc),
            default=0,
        )

    for _ in range(1000):  # 20 s
        if await rtx_received() >= 3:
            break
        await asyncio.sleep(0.02)
    assert await rtx_received() >= 3
    await until(lambda: a.got(b.member, "video") > frames + 30, timeout=30)


async def test_subscriber_without_rtx_gets_plain_retransmissions(sfu: Setup) -> None:
    a = Client("alice", rtx=False)
    sfu.clients.append(a)
    await a.connect(sfu.session, sfu.url)
    b = await sfu.add("bob")
    await until(lambda: everyone_hears_and_sees_everyone([a, b]), timeout=30)
    member = sfu.server.rooms[ROOM].members[a.member]
    video = next(s for s, (_, kind) in member.publishers.items() if kind == "video")
    assert member.sections[video].rtx_payload_type is None  # her answer dropped it
    assert member.rtx == {}
    # Every 10th packet of Bob's video to Alice is lost: the SFU resends it as sent.
    send, sent, resent, other = member.transport.send_rtp, set(), [0], [0]
    ours = set(member.sections)

    def lossy(data: bytes) -> None:
        seq, ssrc = int.from_bytes(data[2:4]), int.from_bytes(data[8:12])
        other[0] += ssrc not in ours
        if ssrc == video:
            if seq in sent:
                resent[0] += 1
            else:
                sent.add(seq)
                if len(sent) % 10 == 0:
                    return
        send(data)

    member.transport.send_rtp = lossy  # type: ignore[method-assign]
    frames = a.got(b.member, "video")
    await until(lambda: resent[0] >= 3, timeout=20)
    assert other == [0]  # nothing on an RTX SSRC
    await until(lambda: a.got(b.member, "video") > frames + 30, timeout=30)


async def test_upstream_loss_is_recovered_with_the_publishers_rtx(sfu: Setup) -> None:
    a, b = await sfu.add("alice"), await sfu.add("bob")
    await until(lambda: everyone_hears_and_sees_everyone([a, b]), timeout=30)
    room = sfu.server.rooms[ROOM]
    config = room.forwarder._participants[b.member].config
    ((rtx, video),) = config.rtx_ssrcs  # Bob's thumbnail and its RTX stream (from his offer)
    # Every 10th packet of Bob's video is lost on the way to the SFU: the SFU NACKs, Bob resends.
    on_rtp, seen, resent = room.on_rtp, [0], [0]

    def lossy(member: str, data: bytes) -> None:
        ssrc = int.from_bytes(data[8:12])
        if member == b.member and ssrc == video:
            seen[0] += 1
            if seen[0] % 10 == 0:
                return
        resent[0] += member == b.member and ssrc == rtx
        on_rtp(member, data)

    room.on_rtp = lossy  # type: ignore[method-assign]
    frames = a.got(b.member, "video")
    await until(lambda: resent[0] >= 3, timeout=20)
    assert room.forwarder.stats.nacks_sent >= 3
    await until(lambda: a.got(b.member, "video") > frames + 30, timeout=30)

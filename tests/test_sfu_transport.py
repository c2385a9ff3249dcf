"""The SFU's end of a participant's WebRTC connection, against a plain aiortc peer on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from sealcall.sfu.negotiation import MediaSection, NegotiationError
from sealcall.sfu.rtcp import Pli, build_rtcp, parse_rtcp
from sealcall.sfu.rtp import RtpView, rewrite_header
from sealcall.sfu.transport import ParticipantTransport, TransportClosedError

from media_helpers import until


@dataclass
class Sfu:
    """The SFU end under test; with ``echo`` it sends each media packet back on ``echo_to``."""

    transport: ParticipantTransport = field(init=False)
    rtp: list[bytes] = field(default_factory=list)
    rtcp: list[bytes] = field(default_factory=list)
    closed: int = 0
    echo_to: dict[str, MediaSection] = field(default_factory=dict)
    echoed: int = 0

    def __post_init__(self) -> None:
        self.transport = ParticipantTransport(self._rtp, self._rtcp, on_close=self._closed)
        self._view = RtpView()

    def _rtcp(self, data: bytes) -> None:
        self.rtcp.append(data)
        # A PLI about an echoed stream goes on to the participant's own sender (as an SFU does),
        # so that its encoder sends the key frame the echo's receiver needs.
        for packet in parse_rtcp(data).packets:
            if not isinstance(packet, Pli):
                continue
            for section in self.transport.sections:
                target = self.echo_to.get(section.kind)
                if target is not None and packet.media_ssrc == target.local_ssrc:
                    media = section.remote_ssrcs[0]
                    self.transport.send_rtcp(build_rtcp([Pli(target.local_ssrc, media)]))

    def _rtp(self, data: bytes) -> None:
        self.rtp.append(data)
        view = self._view.load(data)
        for section in self.transport.sections:
            if view.ssrc in section.remote_ssrcs and view.payload_type == section.payload_type:
                target = self.echo_to.get(section.kind)
                if target is not None and target.local_ssrc is not None:
                    buf = bytearray(data)
                    rewrite_header(
                        buf,
                        view.payload_type,
                        view.sequence_number,
                        view.timestamp,
                        target.local_ssrc,
                    )
                    self.transport.send_rtp(bytes(buf))
                    self.echoed += 1

    def _closed(self) -> None:
        self.closed += 1


def participant() -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(AudioStreamTrack())
    pc.addTrack(VideoStreamTrack())
    return pc


async def join(pc: RTCPeerConnection, sfu: Sfu) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    answer = await sfu.transport.answer(offer)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(sfu.transport.wait_connected(), 10)
    return offer


@pytest.fixture
async def pair() -> AsyncIterator[tuple[RTCPeerConnection, Sfu]]:
    pc, sfu = participant(), Sfu()
    yield pc, sfu
    await pc.close()
    await sfu.transport.close()


def by_kind(sections: list[MediaSection], kind: str) -> MediaSection:
    return next(s for s in sections if s.kind == kind)


async def test_raw_rtp_and_rtcp_of_both_kinds_arrive(pair: tuple[RTCPeerConnection, Sfu]) -> None:
    pc, sfu = pair
    await join(pc, sfu)
    audio = by_kind(sfu.transport.sections, "audio")
    video = by_kind(sfu.transport.sections, "video")
    assert audio.direction == video.direction == "sendrecv"
    assert audio.audio_level_id is not None
    view = RtpView()

    def seen(section: MediaSection) -> bool:
        for data in sfu.rtp:
            view.load(data)
            if view.payload_type == section.payload_type and view.ssrc in section.remote_ssrcs:
                return True
        return False

    await until(lambda: seen(audio) and seen(video) and bool(sfu.rtcp))
    # Every packet belongs to an offered SSRC and payload type; RTCP parses with sfu/rtcp.py.
    offered = {(s.payload_type, ssrc) for s in (audio, video) for ssrc in s.remote_ssrcs}
    assert all((view.load(d).payload_type, view.ssrc) in offered for d in sfu.rtp)
    parsed = parse_rtcp(sfu.rtcp[0])
    assert parsed.packets
    assert sfu.transport.rtp_received == len(sfu.rtp)
    assert sfu.transport.dropped == 0


def remote_tracks(pc: RTCPeerConnection) -> dict[str, MediaStreamTrack]:
    tracks: dict[str, MediaStreamTrack] = {}
    pc.on("track", lambda track: tracks.setdefault(track.kind, track))
    return tracks


async def test_packets_sent_by_the_sfu_reach_the_participants_receivers(
    pair: tuple[RTCPeerConnection, Sfu],
) -> None:
    pc, sfu = pair
    tracks = remote_tracks(pc)
    await join(pc, sfu)
    for section in sfu.transport.sections:
        sfu.echo_to[section.kind] = section
    assert set(tracks) == {"audio", "video"}
    # aiortc's receivers depacketize and decode what the SFU sent: real frames come out.
    audio = await asyncio.wait_for(tracks["audio"].recv(), 10)
    video = await asyncio.wait_for(tracks["video"].recv(), 10)
    assert audio.sample_rate == 48000
    assert (video.width, video.height) == (640, 480)
    assert sfu.echoed > 0
    assert sfu.transport.sent >= sfu.echoed
    # RTCP the SFU builds itself is accepted too (the participant's stats see our SSRC's report).
    sender_ssrc = sfu.transport.sections[1].local_ssrc
    assert sender_ssrc is not None
    sfu.transport.send_rtcp(
        struct.pack("!BBHI", 0x80, 201, 1, sender_ssrc)  # empty receiver report
    )
    assert sfu.transport.dropped == 0


async def test_renegotiation_adds_a_forwarded_stream(pair: tuple[RTCPeerConnection, Sfu]) -> None:
    pc, sfu = pair
    tracks: list[MediaStreamTrack] = []
    pc.on("track", tracks.append)
    await join(pc, sfu)
    assert len(tracks) == 2
    added = sfu.transport.add_send_section("video")
    offer = await sfu.transport.create_offer()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    sfu.transport.set_answer(pc.localDescription.sdp)
    assert added in sfu.transport.sections
    assert added.direction == "sendonly"
    assert [t.kind for t in tracks] == ["audio", "video", "video"]
    sfu.echo_to["video"] = added
    frame = await asyncio.wait_for(tracks[2].recv(), 10)
    assert frame.width == 640


async def test_forwarded_video_gets_rtx_on_its_own_payload_type_where_answered(
    pair: tuple[RTCPeerConnection, Sfu],
) -> None:
    pc, sfu = pair
    await join(pc, sfu)
    first = sfu.transport.add_send_section("video")
    second = sfu.transport.add_send_section("video")
    own = sfu.transport.sections[1].rtx_payload_type
    rtx = [first.rtx_payload_type, second.rtx_payload_type]
    assert own is not None
    assert None not in rtx
    assert len({own, *rtx}) == 3  # one per video m-line: aiortc routes RTX by payload type
    assert first.local_rtx_ssrc is not None
    offer = await sfu.transport.create_offer()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    # This participant answers without RTX on the second m-line: plain retransmissions there.
    pt = second.rtx_payload_type
    answer = re.sub(rf"^(m=video .*) {pt}\r$", r"\1\r", pc.localDescription.sdp, flags=re.M)
    answer = "".join(line for line in answer.splitlines(keepends=True) if f":{pt} " not in line)
    sfu.transport.set_answer(answer)
    assert (first.rtx_payload_type, second.rtx_payload_type) == (rtx[0], None)
    assert sfu.transport.sections[1].rtx_payload_type == own


async def test_garbage_datagrams_are_dropped_and_counted(
    pair: tuple[RTCPeerConnection, Sfu],
) -> None:
    pc, sfu = pair
    await join(pc, sfu)
    host = sfu.transport.local_candidates()[0]
    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    try:
        udp.sendto(b"\x00not a packet", (host.host, host.port))  # neither DTLS nor SRTP
        udp.sendto(bytes([0x80, 0x60]) + bytes(40), (host.host, host.port))  # fails SRTP auth
        udp.sendto(bytes([0x80, 0xC8]) + bytes(40), (host.host, host.port))  # fails SRTCP auth
        await until(lambda: sfu.transport.dropped == 3)
    finally:
        udp.close()
    # The connection is unharmed: media keeps arriving.
    before = len(sfu.rtp)
    await until(lambda: len(sfu.rtp) > before + 5)


async def test_participant_closing_ends_the_sfu_end(pair: tuple[RTCPeerConnection, Sfu]) -> None:
    pc, sfu = pair
    await join(pc, sfu)
    await pc.close()
    await asyncio.wait_for(sfu.transport.wait_closed(), 10)
    await until(lambda: sfu.closed == 1)
    assert not sfu.transport.connected
    with pytest.raises(TransportClosedError):
        sfu.transport.send_rtp(struct.pack("!BBHII", 0x80, 96, 1, 0, 1234))
    await sfu.transport.close()
    assert sfu.closed == 1


async def test_sfu_closing_closes_the_participants_connection(
    pair: tuple[RTCPeerConnection, Sfu],
) -> None:
    pc, sfu = pair
    await join(pc, sfu)
    await sfu.transport.close()
    assert sfu.closed == 1
    # The DTLS close_notify reached the participant: aiortc shuts its connection down.
    await until(lambda: pc.connectionState == "closed")
    count = len(sfu.rtp)
    await asyncio.sleep(0.2)  # nothing more may arrive once closed
    assert len(sfu.rtp) == count


async def test_unusable_offers_are_refused() -> None:
    sfu = Sfu()
    with pytest.raises(NegotiationError):
        await sfu.transport.answer("this is not SDP")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    with pytest.raises(NegotiationError):
        await sfu.transport.answer(pc.localDescription.sdp)  # no audio or video m-line
    await pc.close()
    await sfu.transport.close()


async def test_trickled_candidates_are_used_until_the_end_of_candidates() -> None:
    pc, sfu = participant(), Sfu()
    await pc.setLocalDescription(await pc.createOffer())
    lines = pc.localDescription.sdp.split("\r\n")
    candidates = sorted({ln[2:] for ln in lines if ln.startswith("a=candidate:")})
    # The offer carries one dead candidate and no end-of-candidates; the real ones trickle later.
    dead = "a=candidate:dead 1 udp 2130706431 127.0.0.1 9 typ host"
    kept = [ln for ln in lines if not ln.startswith(("a=candidate:", "a=end-of-candidates"))]
    offer = "\r\n".join(ln + ("\r\n" + dead if ln.startswith("a=ice-pwd") else "") for ln in kept)
    answer = await sfu.transport.answer(offer)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    for candidate in candidates:
        await sfu.transport.add_remote_candidate(candidate)
    await sfu.transport.add_remote_candidate(None)
    trickled = {(c.split()[4], int(c.split()[5])) for c in candidates}
    assert trickled <= set(sfu.transport.remote_candidates())
    try:
        await asyncio.wait_for(sfu.transport.wait_connected(), 10)
        await until(lambda: len(sfu.rtp) > 0)
    finally:
        await pc.close()
        await sfu.transport.close()


async def test_a_send_that_would_block_is_queued_in_order_not_lost(
    pair: tuple[RTCPeerConnection, Sfu],
) -> None:
    from sealcall.bench.sfu_load import RtpCounts, count_rtp

    pc, sfu = pair
    counts = RtpCounts()

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        for transceiver in pc.getTransceivers():
            if transceiver.receiver.track is track:
                count_rtp(transceiver.receiver, track.kind, counts)

    await join(pc, sfu)
    for section in sfu.transport.sections:
        sfu.echo_to[section.kind] = section
    await until(lambda: sfu.echoed > 5)

    class WouldBlock:
        calls = 0

        def sendto(self, data: bytes, address: object) -> None:
            self.calls += 1
            raise BlockingIOError

    # The socket is full once: that packet goes through asyncio's transport (which queues), and
    # direct sends resume afterwards.
    blocked = WouldBlock()
    sfu.transport._socket = blocked
    await until(lambda: blocked.calls == 1)
    echoed = sfu.echoed
    await until(lambda: sfu.echoed > echoed + 5)
    assert blocked.calls == 1
    sfu.echo_to.clear()
    # On loopback every echoed packet arrives: none was lost on the way through the queue.
    await until(lambda: counts.total_packets == sfu.echoed)
    assert sfu.transport.dropped == 0

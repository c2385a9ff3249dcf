"""The SFU's end of a participant's WebRTC connection, against a plain aiortc peer over 127.0.0.1."""

from __future__ import annotations

import asyncio
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

from media_helpers import until
from sealcall.sfu.negotiation import MediaSection, NegotiationError
from sealcall.sfu.rtcp import parse_rtcp
from sealcall.sfu.rtp import RtpView, rewrite_header
from sealcall.sfu.transport import ParticipantTransport, TransportClosed


@dataclass
class Sfu:
    transport: ParticipantTransport = field(init=False)
    rtp: list[bytes] = field(default_factory=list)
    rtcp: list[bytes] = field(default_factory=list)
    closed: int = 0

    def __post_init__(self) -> None:
        self.transport = ParticipantTransport(
            self.rtp.append, self.rtcp.append, on_close=self._closed
        )

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

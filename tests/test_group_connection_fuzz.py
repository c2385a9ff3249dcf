"""Hostile RTCP for a group connection's senders: whatever a peer sends, only a REMB that names
the sender's SSRC sets that peer's bitrate, only PLI/FIR ask the shared encoder for a key
frame, and nothing escapes."""

import asyncio
from typing import Any

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RtcpPsfbPacket,
    pack_remb_fci,
    unpack_remb_fci,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealcall.media import LOOPBACK, GroupPeerConnection, MediaKeys, PatternVideoTrack, SenderTap
from sealcall.media.shared_encoder import SharedEncoder

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OURS = -1  # stands for the sender's own SSRC in generated SSRC lists

ssrcs = st.lists(st.one_of(st.just(OURS), st.integers(0, 2**32 - 1)), max_size=4)
remb = st.tuples(st.integers(0, 2**30), ssrcs)
fci = st.one_of(st.binary(max_size=40), remb)
packets = st.lists(
    st.tuples(st.sampled_from([RTCP_PSFB_APP, RTCP_PSFB_PLI, RTCP_PSFB_FIR, 2, 31]), fci),
    max_size=12,
)


def _fci(value: Any, ssrc: int) -> bytes:
    if isinstance(value, bytes):
        return value
    bitrate, listed = value
    return pack_remb_fci(bitrate, [ssrc if s == OURS else s for s in listed])


async def _feed(sequence: list[tuple[int, Any]]) -> None:
    keys = MediaKeys(1, bytes(32))
    video = SharedEncoder(PatternVideoTrack(32, 32), SenderTap(keys, "video"))
    pc = GroupPeerConnection(MediaKeys(), host_addresses=LOOPBACK)
    try:
        sender = pc.add_shared(video)
        assert sender is not None
        subscription = sender.track
        requests = video.counters.keyframe_requests
        expected_bitrate: int | None = None
        for fmt, value in sequence:
            data = _fci(value, sender._ssrc)
            packet = RtcpPsfbPacket(fmt=fmt, ssrc=7, media_ssrc=sender._ssrc, fci=data)
            await sender._handle_rtcp_packet(packet)
            if fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                requests += 1
            elif fmt == RTCP_PSFB_APP:
                try:
                    bitrate, named = unpack_remb_fci(data)
                except ValueError:
                    continue
                if sender._ssrc in named:
                    expected_bitrate = bitrate
            assert video.counters.keyframe_requests == requests
            assert video._bitrates.get(id(subscription)) == expected_bitrate
            assert 250_000 <= video.target_bitrate <= 1_500_000
    finally:
        await pc.close()
        await video.stop()


@SETTINGS
@given(packets)
def test_hostile_rtcp_only_does_what_it_says(sequence: list[tuple[int, Any]]) -> None:
    asyncio.run(_feed(sequence))

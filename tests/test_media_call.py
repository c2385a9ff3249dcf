"""Encrypted audio and video between two real aiortc peer connections over loopback."""

import asyncio
import os

from aiortc import RTCRtpSender
from aiortc.codecs.vpx import DEFAULT_BITRATE

from sealcall.media import MediaKeys, PatternVideoTrack, SyntheticAudioTrack
from sealcall.media.stats import StatsCollector

from media_helpers import Endpoint, av_call, call_keys, connect, encrypted, plain, until


def frames_sent(endpoint: Endpoint, kind: str) -> int:
    pc = endpoint.pc
    return sum(
        pc.sender_tap(s).counters.frames_encrypted for s in pc.getSenders() if s.kind == kind
    )


async def test_encrypted_call_decodes_at_least_90_percent() -> None:
    a, b = av_call()
    try:
        await connect(a, b)
        # Only loopback host candidates, and only codecs that can be encrypted, were offered.
        sdp = a.pc.localDescription.sdp
        candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate")]
        assert candidates
        assert all(" 127.0.0.1 " in c for c in candidates)
        rtpmaps = {line.split()[1].split("/")[0] for line in sdp.splitlines() if "a=rtpmap" in line}
        assert rtpmaps == {"opus", "VP8", "H264", "rtx"}
        await asyncio.sleep(3)
        for kind in ("audio", "video"):
            sent = frames_sent(a, kind)
            assert sent > (100 if kind == "audio" else 60)
            assert b.counter(kind).frames >= 0.9 * sent, kind
        assert b.counter("video").last_size == (320, 240)
        for receiver in b.pc.getReceivers():
            assert b.pc.receiver_tap(receiver).counters.frames_dropped == 0
        stats = await StatsCollector(b.pc).collect()
        assert {s.kind for s in stats.inbound} == {"audio", "video"}
    finally:
        await a.close()
        await b.close()


async def test_h264_call_is_encrypted_end_to_end() -> None:
    keys_a, keys_b = call_keys()
    a, b = encrypted(keys_a), encrypted(keys_b)
    a.pc.addTrack(PatternVideoTrack(320, 240))
    for transceiver in a.pc.getTransceivers():
        caps = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences([c for c in caps if c.mimeType == "video/H264"])
    try:
        await connect(a, b)
        await until(lambda: bool(b.counters) and b.counter("video").frames >= 20, timeout=10)
        receiver = b.pc.getReceivers()[0]
        counters = b.pc.receiver_tap(receiver).counters
        assert counters.frames_decrypted >= 20
        assert counters.frames_dropped == 0
        assert "H264" in b.pc.remoteDescription.sdp
    finally:
        await a.close()
        await b.close()


async def test_wrong_key_decodes_nothing_and_recovers_when_the_right_key_arrives() -> None:
    key = os.urandom(32)
    keys_a = MediaKeys(0, key)
    wrong = MediaKeys(0, os.urandom(32))
    wrong.add_receive_key(0, os.urandom(32))  # not the caller's key
    a, b = encrypted(keys_a), encrypted(wrong)
    a.pc.addTrack(PatternVideoTrack(320, 240))
    try:
        await connect(a, b)
        await asyncio.sleep(2.5)
        receiver = b.pc.getReceivers()[0]
        tap = b.pc.receiver_tap(receiver)
        assert b.counter("video").frames == 0
        assert tap.counters.frames_dropped > 30
        assert set(tap.counters.drop_reasons) == {"AuthenticationError"}
        # At most one key-frame request per half second, and the decoder thread is still alive.
        assert 1 <= tap.counters.keyframe_requests <= 7
        assert receiver._RTCRtpReceiver__decoder_thread.is_alive()

        # The right key arrives late: the picture is back within a second, from a key frame.
        wrong.add_receive_key(0, key)
        recovered = await until(lambda: b.counter("video").frames > 0, timeout=3)
        assert recovered < 1.0
        assert tap.counters.keyframes_decrypted >= 1
    finally:
        await a.close()
        await b.close()


async def test_key_rotation_mid_call_loses_at_most_a_few_frames() -> None:
    keys_a, keys_b = call_keys(grace_period=0.5)
    a, b = encrypted(keys_a), encrypted(keys_b)
    a.pc.addTrack(SyntheticAudioTrack())
    a.pc.addTrack(PatternVideoTrack(320, 240))
    try:
        await connect(a, b)
        await until(lambda: len(b.counters) == 2 and b.counter("video").frames > 10)
        new_key = b"\x42" * 32
        keys_b.add_receive_key(1, new_key, retire_others=True)
        keys_a.set_send_key(1, new_key)
        before = {k: b.counter(k).frames for k in ("audio", "video")}
        await asyncio.sleep(1.5)
        assert keys_b.receive_kids() == [1]  # the old key expired after its grace window
        for kind in ("audio", "video"):
            assert b.counter(kind).frames > before[kind] + 20
        dropped = sum(b.pc.receiver_tap(r).counters.frames_dropped for r in b.pc.getReceivers())
        assert dropped <= 3
    finally:
        await a.close()
        await b.close()


async def test_connections_never_mix_keys_and_plain_ones_stay_plain() -> None:
    pairs = [call_keys("one"), call_keys("two")]
    ends = [(encrypted(ka), encrypted(kb)) for ka, kb in pairs]
    plain_a, plain_b = plain(), plain()
    plain_a.pc.addTrack(PatternVideoTrack(160, 120))
    for a, _ in ends:
        a.pc.addTrack(PatternVideoTrack(160, 120))
    try:
        for a, b in [*ends, (plain_a, plain_b)]:
            await connect(a, b)
        await asyncio.sleep(2)
        for _, b in ends:
            receiver = b.pc.getReceivers()[0]
            counters = b.pc.receiver_tap(receiver).counters
            assert counters.frames_decrypted > 20
            assert counters.frames_dropped == 0
            assert b.counter("video").frames > 20
        # The plain pair uses aiortc's own classes, untouched, and decodes plain VP8.
        assert type(plain_a.pc.getSenders()[0]) is RTCRtpSender
        assert plain_b.counter("video").frames > 20
    finally:
        for a, b in [*ends, (plain_a, plain_b)]:
            await a.close()
            await b.close()


async def test_remb_still_drives_the_encoder_bitrate() -> None:
    keys_a, keys_b = call_keys()
    a, b = encrypted(keys_a), encrypted(keys_b)
    sender = a.pc.addTrack(PatternVideoTrack(320, 240))
    try:
        await connect(a, b)

        def bitrate() -> int | None:
            encoder = sender._RTCRtpSender__encoder
            return None if encoder is None else encoder.target_bitrate

        await until(lambda: bitrate() not in (None, DEFAULT_BITRATE), timeout=10)
    finally:
        await a.close()
        await b.close()

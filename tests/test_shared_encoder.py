"""Encode once, send to all: one shared encoder per kind fanned out over real aiortc connections."""

import asyncio
import os
from typing import Any

import pytest
from aiortc import RTCRtpSender
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

from sealcall.e2ee.codecs import Codec, is_key_frame
from sealcall.media import (
    LOOPBACK,
    CallbackOpener,
    MediaKeys,
    PatternVideoTrack,
    SenderTap,
    SyntheticAudioTrack,
    negotiate,
)
from sealcall.media.crypto_taps import ReceiverTap
from sealcall.media.group_connection import GroupPeerConnection
from sealcall.media.shared_encoder import (
    AUDIO_FRAMES_QUEUED,
    VIDEO_FRAMES_QUEUED,
    SharedEncoder,
    UnsubscribedError,
)
from sealcall.sframe import SFrameError

from media_helpers import Endpoint, until

KID = 7


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def opener(key: bytes) -> MediaKeys:
    """What a member holds for one sender: its key under its KID, receive only."""
    keys = MediaKeys()
    keys.add_receive_key(KID, key)
    return keys


def encoders(key: bytes, clock: ManualClock | None = None) -> tuple[SharedEncoder, SharedEncoder]:
    send_keys = MediaKeys(KID, key)
    audio = SharedEncoder(SyntheticAudioTrack(), SenderTap(send_keys, "audio"))
    video = SharedEncoder(
        PatternVideoTrack(160, 120),
        SenderTap(send_keys, "video"),
        clock=clock or ManualClock(),
    )
    return audio, video


class Pair:
    """One of the sender's mesh connections and the far end that receives on it."""

    def __init__(self, far_key: bytes) -> None:
        self.near = GroupPeerConnection(MediaKeys(), host_addresses=LOOPBACK)
        self.far = Endpoint(GroupPeerConnection(opener(far_key), host_addresses=LOOPBACK))

    def far_tap(self, kind: str) -> ReceiverTap:
        far = self.far.pc
        assert isinstance(far, GroupPeerConnection)
        (transceiver,) = [t for t in far.getTransceivers() if t.kind == kind]
        return far.receiver_tap(transceiver.receiver)

    def far_receiver(self, kind: str) -> Any:
        (transceiver,) = [t for t in self.far.pc.getTransceivers() if t.kind == kind]
        return transceiver.receiver

    def near_sender(self, kind: str) -> RTCRtpSender:
        (transceiver,) = [t for t in self.near.getTransceivers() if t.kind == kind]
        return transceiver.sender

    async def close(self) -> None:
        await self.near.close()
        await self.far.close()


def record_audio_levels(receiver: Any) -> list[Any]:
    """The audio-level header extension of every RTP packet ``receiver`` gets (None if absent)."""
    levels: list[Any] = []
    handle = receiver._handle_rtp_packet

    async def recording(packet: Any, arrival_time_ms: int) -> None:
        levels.append(packet.extensions.audio_level)
        await handle(packet, arrival_time_ms)

    receiver._handle_rtp_packet = recording
    return levels


async def fan_out(shared: list[SharedEncoder], far_keys: list[bytes]) -> list[Pair]:
    pairs = [Pair(key) for key in far_keys]
    for pair in pairs:
        for encoder in shared:
            pair.near.add_shared(encoder)
    await asyncio.gather(*(negotiate(p.near, p.far.pc) for p in pairs))
    return pairs


def keyframes_decrypted(taps: list[ReceiverTap]) -> list[int]:
    return [tap.counters.keyframes_decrypted for tap in taps]


def all_above(now: list[int], before: list[int]) -> bool:
    return all(a > b for a, b in zip(now, before, strict=True))


async def close(pairs: list[Pair], shared: list[SharedEncoder]) -> None:
    for pair in pairs:
        await pair.close()
    for encoder in shared:
        await encoder.stop()


async def test_one_encoder_per_kind_feeds_three_connections_that_all_decrypt() -> None:
    key = os.urandom(32)
    audio, video = encoders(key)
    pairs = await fan_out([audio, video], [key, key, key, os.urandom(32)])
    right, wrong = pairs[:3], pairs[3]
    audio_levels = record_audio_levels(right[0].far_receiver("audio"))
    try:
        await until(
            lambda: (
                all(
                    p.far_tap(kind).counters.frames_decrypted > 10
                    and p.far.counter(kind).frames > 5
                    for p in right
                    for kind in ("audio", "video")
                )
                and all(
                    wrong.far_tap(kind).counters.frames_dropped > 10 for kind in ("audio", "video")
                )
            ),
            timeout=20,
        )
        for encoder in (audio, video):
            # Pausing settles the counters: once a frame was read while paused, no frame is
            # between the encoder and the subscriptions.
            encoder.tap.set_paused(True)
            paused = encoder.counters.frames_paused
            await until(lambda e=encoder, p=paused: e.counters.frames_paused > p)
            counters = encoder.counters
            # Each captured frame was encoded once and protected once, however many
            # connections carry it.
            not_encoded = (
                counters.frames_idle + counters.frames_paused + counters.frames_without_key
            )
            assert counters.frames_encoded == counters.frames_captured - not_encoded
            assert encoder.tap.counters.frames_encrypted == counters.packets_sent
            assert len(encoder.subscribers) == 4
            for pair in pairs:
                assert pair.far_tap(encoder.kind).counters.frames_received <= counters.packets_sent
        # No RTP audio-level header tells anyone on the path when we speak.
        assert audio_levels
        assert set(audio_levels) == {None}
        # A member with the wrong key decrypts nothing, and nothing reaches its decoders.
        for kind in ("audio", "video"):
            assert wrong.far_tap(kind).counters.frames_decrypted == 0
            assert wrong.far.counter(kind).frames == 0
    finally:
        await close(pairs, [audio, video])
    assert audio.subscribers == []
    assert video.subscribers == []


async def test_pause_stops_every_connection_and_video_resumes_with_a_key_frame() -> None:
    key = os.urandom(32)
    audio, video = encoders(key)
    pairs = await fan_out([video], [key, key])
    try:
        taps = [p.far_tap("video") for p in pairs]
        await until(lambda: all(t.counters.frames_decrypted > 5 for t in taps), timeout=20)
        video.tap.set_paused(True)
        await until(lambda: video.counters.frames_paused >= 10)
        sent = video.counters.packets_sent
        received = [t.counters.frames_received for t in taps]
        keyframes = keyframes_decrypted(taps)
        await until(lambda: video.counters.frames_paused >= 20)
        assert video.counters.packets_sent == sent
        assert [t.counters.frames_received for t in taps] == received
        video.tap.set_paused(False)
        await until(lambda: all_above(keyframes_decrypted(taps), keyframes))
    finally:
        await close(pairs, [audio, video])


async def test_key_frame_requests_from_three_peers_force_one_key_frame() -> None:
    key = os.urandom(32)
    clock = ManualClock()
    audio, video = encoders(key, clock)
    pairs = await fan_out([video], [key, key, key])
    try:
        taps = [p.far_tap("video") for p in pairs]
        await until(lambda: all(t.counters.frames_decrypted > 5 for t in taps), timeout=20)
        clock.now += 10  # the start's key frame is long past
        before = video.counters.keyframe_requests
        forced = video.counters.keyframes_forced
        coalesced = video.counters.requests_coalesced
        keyframes = keyframes_decrypted(taps)
        for pair in pairs:  # a real RTCP PLI from each peer, with no time passing between them
            ssrc = pair.near_sender("video")._ssrc
            await pair.far_receiver("video")._send_rtcp_pli(ssrc)
        await until(lambda: video.counters.keyframe_requests - before >= 3)
        await until(lambda: all_above(keyframes_decrypted(taps), keyframes))
        requests = video.counters.keyframe_requests - before
        assert video.counters.keyframes_forced - forced == 1
        assert video.counters.requests_coalesced - coalesced == requests - 1
    finally:
        await close(pairs, [audio, video])


async def test_the_lowest_remb_sets_the_bitrate_until_that_peer_leaves() -> None:
    key = os.urandom(32)
    audio, video = encoders(key)
    pairs = await fan_out([video], [key, key])
    try:
        taps = [p.far_tap("video") for p in pairs]
        await until(lambda: all(t.counters.frames_decrypted > 0 for t in taps), timeout=20)
        for pair, bitrate in zip(pairs, (300_000, 1_000_000), strict=True):
            receiver = pair.far_receiver("video")
            # Only our figures: the far end's own bandwidth estimate stays out of this test.
            receiver._RTCRtpReceiver__remote_bitrate_estimator = None
            remb = RtcpPsfbPacket(
                fmt=RTCP_PSFB_APP,
                ssrc=receiver._RTCRtpReceiver__rtcp_ssrc,
                media_ssrc=0,
                fci=pack_remb_fci(bitrate, [pair.near_sender("video")._ssrc]),
            )
            await receiver._send_rtcp(remb)
        # Each far end's own REMB arrives before ours (same path, sent earlier), none after.
        await until(lambda: sorted(video._bitrates.values()) == [300_000, 1_000_000])
        assert video.target_bitrate == 300_000
        await pairs[0].near.close()  # closing a connection unsubscribes it
        assert len(video.subscribers) == 1
        assert video.target_bitrate == 1_000_000
    finally:
        await close(pairs, [audio, video])


async def test_an_answer_reuses_offered_transceivers_and_only_shared_frames_are_sent() -> None:
    key_a, key_b = os.urandom(32), os.urandom(32)
    _, video_b = encoders(key_b)
    audio_b = SharedEncoder(SyntheticAudioTrack(), SenderTap(MediaKeys(KID, key_b), "audio"))
    # A decrypts through a function, as a session hands over its key ring for one member device.
    ring = opener(key_b)
    a = Endpoint(GroupPeerConnection(CallbackOpener(ring.unprotect), host_addresses=LOOPBACK))
    b = GroupPeerConnection(opener(key_a), host_addresses=LOOPBACK)
    a.pc.addTrack(PatternVideoTrack(160, 120))  # a raw track: a group connection refuses it
    try:
        await a.pc.setLocalDescription(await a.pc.createOffer())
        offered = {
            line.split()[1].split("/")[0]
            for line in a.pc.localDescription.sdp.splitlines()
            if line.startswith("a=rtpmap:")
        }
        assert offered == {"VP8", "rtx"}  # nothing that could not be protected, nor H.264
        await b.setRemoteDescription(a.pc.localDescription)
        assert b.add_shared(audio_b, answering=True) is None  # no audio offered
        sender = b.add_shared(video_b, answering=True)
        assert sender is not None
        assert b.add_shared(video_b) is sender
        await b.setLocalDescription(await b.createAnswer())
        await a.pc.setRemoteDescription(b.localDescription)
        a_tap = a.pc.receiver_tap(a.pc.getTransceivers()[0].receiver)  # type: ignore[attr-defined]
        b_tap = b.receiver_tap(b.getTransceivers()[0].receiver)
        await until(lambda: a_tap.counters.frames_decrypted > 10, timeout=20)
        assert b_tap.counters.frames_received == 0
        assert audio_b.subscribers == []
        assert len(video_b.subscribers) == 1
        b.remove_shared(video_b)
        assert video_b.subscribers == []
    finally:
        await a.close()
        await b.close()
        await video_b.stop()
        await audio_b.stop()


# Without connections: the encoder and its subscriptions alone.


async def read(track: MediaStreamTrack) -> bytes:
    return bytes(await asyncio.wait_for(track.recv(), 10))


async def drain(track: MediaStreamTrack) -> None:
    """Read until the track ends (raises)."""
    while True:
        await read(track)


async def test_requests_within_the_interval_are_coalesced() -> None:
    key = os.urandom(32)
    clock = ManualClock()
    audio, video = encoders(key, clock)
    try:
        subscription = video.subscribe()  # asks for a key frame: the first one is forced
        assert not video.request_keyframe()  # already due
        await read(subscription)
        await until(lambda: video.counters.keyframes_forced == 1)
        clock.now = 0.5
        assert not video.request_keyframe()
        clock.now = 1.0
        assert video.request_keyframe()
        await until(lambda: video.counters.keyframes_forced == 2)
        assert video.counters.keyframe_requests == 4
        assert video.counters.requests_coalesced == 2
        assert not audio.request_keyframe()  # audio has no key frames
    finally:
        await video.stop()
        await audio.stop()


async def test_a_late_subscriber_starts_at_the_next_key_frame_the_interval_allows() -> None:
    key = os.urandom(32)
    clock = ManualClock()
    _, video = encoders(key, clock)
    keys = opener(key)
    first = video.subscribe()
    try:
        assert is_key_frame(Codec.VP8, keys.unprotect(Codec.VP8, await read(first)))
        clock.now = 0.2
        late = video.subscribe()  # its key frame request is coalesced with the first one's
        for _ in range(5):
            assert not is_key_frame(Codec.VP8, keys.unprotect(Codec.VP8, await read(first)))
        assert late.frames_queued == 0  # delta frames it could not decode were never queued
        assert video.counters.frames_before_keyframe >= 5
        clock.now = 1.0
        assert is_key_frame(Codec.VP8, keys.unprotect(Codec.VP8, await read(late)))
        assert video.counters.keyframes_forced == 2
    finally:
        await video.stop()


async def test_frames_wait_for_the_send_key_and_the_first_one_sent_is_a_key_frame() -> None:
    key = os.urandom(32)
    send_keys = MediaKeys()  # the group key has not come yet
    video = SharedEncoder(PatternVideoTrack(160, 120), SenderTap(send_keys, "video"))
    subscription = video.subscribe()
    try:
        await until(lambda: video.counters.frames_without_key >= 3)
        assert video.counters.frames_encoded == 0
        send_keys.set_send_key(KID, key)
        frame = opener(key).unprotect(Codec.VP8, await read(subscription))
        assert is_key_frame(Codec.VP8, frame)
    finally:
        await video.stop()


class FailOnce(MediaKeys):
    """Keys whose next protection fails when asked (as an exhausted SFrame counter would)."""

    fail_next = False

    def protect(self, codec: Codec, frame: bytes) -> bytes:
        if self.fail_next:
            self.fail_next = False
            raise SFrameError("refused for the test")
        return super().protect(codec, frame)


async def test_after_a_frame_could_not_be_protected_the_next_one_is_a_key_frame() -> None:
    send_keys = FailOnce(KID, os.urandom(32))
    video = SharedEncoder(PatternVideoTrack(160, 120), SenderTap(send_keys, "video"))
    subscription = video.subscribe()
    try:
        await read(subscription)
        await until(lambda: video.counters.frames_encoded >= 3)
        assert video.counters.keyframes == 1
        send_keys.fail_next = True
        await until(lambda: video.tap.counters.frames_failed == 1)
        await until(lambda: video.counters.keyframes == 2)
        assert video.counters.keyframes_forced == 1  # no peer asked: the encoder knew
    finally:
        await video.stop()


async def test_resume_starts_with_a_key_frame_and_pause_encodes_nothing() -> None:
    key = os.urandom(32)
    _, video = encoders(key)
    keys = opener(key)
    subscription = video.subscribe()
    try:
        for _ in range(5):
            await read(subscription)
        video.tap.set_paused(True)
        await until(lambda: video.counters.frames_paused >= 1)
        while subscription.frames_queued:  # frames encoded before the pause
            await read(subscription)
        encoded = video.counters.frames_encoded
        await until(lambda: video.counters.frames_paused >= 5)
        assert subscription.frames_queued == 0
        assert video.counters.frames_encoded == encoded
        video.tap.set_paused(False)
        frame = keys.unprotect(Codec.VP8, await read(subscription))
        assert is_key_frame(Codec.VP8, frame)
        assert not is_key_frame(Codec.VP8, keys.unprotect(Codec.VP8, await read(subscription)))
    finally:
        await video.stop()


@pytest.mark.parametrize("kind", ["audio", "video"])
async def test_a_subscriber_never_read_stays_bounded(kind: str) -> None:
    key = os.urandom(32)
    audio, video = encoders(key)
    encoder = audio if kind == "audio" else video
    capacity = AUDIO_FRAMES_QUEUED if kind == "audio" else VIDEO_FRAMES_QUEUED
    idle = encoder.subscribe()
    try:
        await until(lambda: encoder.counters.packets_sent >= capacity + 10, timeout=20)
        assert idle.frames_queued == capacity
        assert encoder.counters.frames_dropped_slow == encoder.counters.packets_sent - capacity
    finally:
        await audio.stop()
        await video.stop()
    # The encoder stopped: so did the subscription, once its queued frames are read (the end
    # marker took the oldest one's place).
    for _ in range(capacity - 1):
        await read(idle)
    with pytest.raises(UnsubscribedError):
        await read(idle)


async def test_the_lowest_reported_bitrate_wins_within_the_encoders_limits() -> None:
    _, video = encoders(os.urandom(32))
    first, second, third = video.subscribe(), video.subscribe(), video.subscribe()
    try:
        video.report_bitrate(first, 1_000_000)
        video.report_bitrate(second, 300_000)
        assert video.target_bitrate == 300_000
        video.report_bitrate(third, 10_000)
        assert video.target_bitrate == 250_000  # VP8's floor
        video.unsubscribe(third)
        assert video.target_bitrate == 300_000
        second.stop()
        assert video.target_bitrate == 1_000_000
        video.report_bitrate(second, 1)  # no longer a subscriber: ignored
        assert video.target_bitrate == 1_000_000
    finally:
        await video.stop()


async def test_wrong_or_garbage_frames_never_reach_the_decoder() -> None:
    pc = GroupPeerConnection(opener(os.urandom(32)), host_addresses=LOOPBACK)
    try:
        receiver = pc.addTransceiver("video").receiver
        decoder_queue = receiver._RTCRtpReceiver__decoder_queue
        (vp8,) = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.name == "VP8"]
        wrong_key = MediaKeys(KID, os.urandom(32))
        key_frame = b"\x10\x02\x00\x9d\x01\x2a" + bytes(100)
        for data in (b"", os.urandom(3), os.urandom(200), wrong_key.protect(Codec.VP8, key_frame)):
            decoder_queue.put((vp8, JitterFrame(data, timestamp=0)))
        assert decoder_queue.qsize() == 0
        counters = pc.receiver_tap(receiver).counters
        assert counters.frames_dropped == 4
        assert counters.frames_decrypted == 0
    finally:
        await pc.close()


async def test_closing_a_connection_unsubscribes_even_before_it_started_sending() -> None:
    audio, video = encoders(os.urandom(32))
    pc = GroupPeerConnection(MediaKeys(), host_addresses=LOOPBACK)
    try:
        pc.add_shared(audio)
        pc.add_shared(video)
        assert len(audio.subscribers) == 1
        assert len(video.subscribers) == 1
        await pc.close()
        assert audio.subscribers == []
        assert video.subscribers == []
    finally:
        await audio.stop()
        await video.stop()


async def test_when_the_source_ends_so_do_the_subscriptions() -> None:
    source = PatternVideoTrack(160, 120)
    video = SharedEncoder(source, SenderTap(MediaKeys(KID, os.urandom(32)), "video"))
    subscription = video.subscribe()
    await read(subscription)
    source.stop()
    await until(lambda: video.subscribers == [])
    with pytest.raises(UnsubscribedError):
        await drain(subscription)
    with pytest.raises(UnsubscribedError):
        await read(video.subscribe())  # a late subscriber gets an ended track
    await video.stop()

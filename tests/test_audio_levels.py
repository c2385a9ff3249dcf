"""Levels of decoded remote audio, measured on the far side of a real aiortc connection."""

import asyncio
import logging
import math

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamTrack

from sealcall.group import SpeakingChanged, SpeakingDetector
from sealcall.media import (
    LOOPBACK,
    EncryptedPeerConnection,
    FrameCounter,
    PatternVideoTrack,
    PeerConnection,
    SyntheticAudioTrack,
    frame_level_dbov,
    frames_dropped,
    meter_audio_levels,
    meter_errors,
    negotiate,
)
from sealcall.media.remote_tracks import AUDIO_FRAMES_KEPT

from media_helpers import call_keys, until

RATE = 48_000


def s16_frame(samples: np.ndarray, layout: str = "mono") -> av.AudioFrame:
    pcm = np.round(samples).astype(np.int16).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout=layout)
    frame.sample_rate = RATE
    return frame


def sine(amplitude: float, n: int = 960, frequency: float = 1000.0) -> np.ndarray:
    return amplitude * np.sin(2 * math.pi * frequency * np.arange(n) / RATE)


def test_frame_levels_of_known_signals() -> None:
    assert frame_level_dbov(s16_frame(sine(32767))) == pytest.approx(-3.01, abs=0.02)
    assert frame_level_dbov(s16_frame(sine(32767 / 2))) == pytest.approx(-9.03, abs=0.02)
    assert frame_level_dbov(s16_frame(sine(32767 / 100))) == pytest.approx(-43.01, abs=0.05)
    square = np.where(np.arange(960) % 48 < 24, 32767.0, -32768.0)
    assert frame_level_dbov(s16_frame(square)) == pytest.approx(0.0, abs=0.01)
    assert frame_level_dbov(s16_frame(np.zeros(960))) == -127.0
    assert frame_level_dbov(s16_frame(sine(1e-3) + 0.0)) == -127.0  # rounds to zeros
    # Stereo interleaved, as aiortc's Opus decoder gives it: both channels count.
    left = sine(32767)
    stereo = np.stack([left, np.zeros_like(left)], axis=1).ravel()
    assert frame_level_dbov(s16_frame(stereo, "stereo")) == pytest.approx(-6.02, abs=0.02)
    # Planar float, full scale 1.0.
    fltp = av.AudioFrame.from_ndarray(
        sine(1.0).astype(np.float32).reshape(1, -1), format="fltp", layout="mono"
    )
    assert frame_level_dbov(fltp) == pytest.approx(-3.01, abs=0.02)
    u8 = av.AudioFrame.from_ndarray(np.full((1, 960), 128, np.uint8), format="u8", layout="mono")
    with pytest.raises(ValueError, match="cannot measure u8"):
        frame_level_dbov(u8)


async def test_the_far_side_meters_speech_and_silence_whether_or_not_a_track_is_read() -> None:
    keys_a, keys_b = call_keys()
    a = EncryptedPeerConnection(keys_a, host_addresses=LOOPBACK)
    b = EncryptedPeerConnection(keys_b, host_addresses=LOOPBACK)
    a.addTrack(SyntheticAudioTrack("speech"))
    a.addTrack(SyntheticAudioTrack("silence"))
    tracks: list[MediaStreamTrack] = []
    speech_levels: list[float] = []
    silence_levels: list[float] = []
    detector = SpeakingDetector()
    changes: list[SpeakingChanged] = []
    loop = asyncio.get_running_loop()

    def on_track(track: MediaStreamTrack) -> None:
        tracks.append(track)
        if len(tracks) == 1:  # the speech track: metered before its frames flow
            meter_audio_levels(track, speech_levels.append)
            meter_audio_levels(
                track, lambda dbov: changes.extend(detector.level("speech", dbov, loop.time()))
            )

    b.on("track", on_track)
    reader: FrameCounter | None = None
    try:
        await negotiate(a, b)
        await until(lambda: len(tracks) == 2)
        speech, silent = tracks
        reader = FrameCounter(speech).start()  # the speech track is read, the silent one not
        # The silent track is metered only once its frames flow (and are being dropped unread).
        await until(lambda: frames_dropped(silent) > 0)
        meter_audio_levels(silent, silence_levels.append)
        meter_audio_levels(
            silent, lambda dbov: changes.extend(detector.level("silence", dbov, loop.time()))
        )
        # Well past the frames an unread track holds: levels come per decoded frame, not per read.
        await until(
            lambda: len(speech_levels) > 150 and len(silence_levels) > 4 * AUDIO_FRAMES_KEPT
        )
        assert reader.frames > 100
        assert max(speech_levels) > -30.0
        loud = sum(level > -50.0 for level in speech_levels) / len(speech_levels)
        assert loud > 0.25  # syllables, four a second, with pauses between phrases
        assert max(silence_levels) < -80.0
        assert {(c.source, c.speaking) for c in changes} <= {("speech", True), ("speech", False)}
        assert ("speech", True) in {(c.source, c.speaking) for c in changes}
        assert detector.loudest() == "speech"
        assert meter_errors(speech) == meter_errors(silent) == 0
    finally:
        if reader is not None:
            await reader.stop()
        await a.close()
        await b.close()


async def test_a_failing_level_callback_neither_breaks_the_track_nor_other_callbacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = PeerConnection(host_addresses=LOOPBACK), PeerConnection(host_addresses=LOOPBACK)
    a.addTrack(SyntheticAudioTrack("tone"))
    a.addTrack(PatternVideoTrack(160, 120))
    tracks: list[MediaStreamTrack] = []
    levels: list[float] = []

    def broken(dbov: float) -> None:
        raise RuntimeError("a buggy application")

    def on_track(track: MediaStreamTrack) -> None:
        tracks.append(track)
        if track.kind == "audio":
            meter_audio_levels(track, broken)
            meter_audio_levels(track, levels.append)

    b.on("track", on_track)
    try:
        with caplog.at_level(logging.WARNING, logger="sealcall.media.audio_levels"):
            await negotiate(a, b)
            await until(lambda: len(levels) > 50)
            audio = next(t for t in tracks if t.kind == "audio")
            video = next(t for t in tracks if t.kind == "video")
            with pytest.raises(ValueError, match="only an audio track"):
                meter_audio_levels(video, levels.append)
            frame = await asyncio.wait_for(audio.recv(), 5)  # the track still delivers
            assert isinstance(frame, av.AudioFrame)
            assert meter_errors(audio) >= 50
            # A 0.3 full-scale tone is -13.5 dBov; aiortc's encoder spreads mono over two
            # channels at -3 dB each, so it decodes at about -16.5 dBov.
            assert -18.5 < levels[-1] < -14.5
        failures = [r for r in caplog.records if "audio level callback failed" in r.message]
        assert len(failures) == 1
        assert "buggy" not in caplog.text  # the callback's message is not logged
    finally:
        await a.close()
        await b.close()


def test_only_remote_tracks_can_be_metered() -> None:
    with pytest.raises(TypeError, match="not a remote track"):
        meter_audio_levels(SyntheticAudioTrack(), lambda dbov: None)

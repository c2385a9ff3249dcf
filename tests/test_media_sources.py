"""Media sources and sinks: synthetic signals, recording to and playing from files, capture."""

import asyncio
import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from sealcall.media import (
    CaptureUnavailableError,
    FileRecorder,
    PatternVideoTrack,
    SyntheticAudioTrack,
    camera_source,
    file_source,
    microphone_source,
    microphone_unavailable_reason,
    screen_source,
)
from sealcall.media.stats import StatsCollector

from media_helpers import av_call, call_keys, connect, encrypted, until


async def test_synthetic_video_moves_and_is_paced() -> None:
    track = PatternVideoTrack(64, 48, fps=50)
    start = time.monotonic()
    frames = [await track.recv() for _ in range(6)]
    assert time.monotonic() - start >= 0.09  # five frame periods of 20 ms
    pictures = [f.to_ndarray(format="gray") for f in frames]
    assert all(p.shape == (48, 64) for p in pictures)
    assert all(not np.array_equal(x, y) for x, y in itertools.pairwise(pictures))
    assert [f.pts for f in frames] == [i * 1800 for i in range(6)]


async def test_synthetic_audio_speech_has_pauses_and_tone_is_steady() -> None:
    speech, tone = SyntheticAudioTrack("speech"), SyntheticAudioTrack("tone")
    # 3 s of speech-like signal: syllables and a pause between phrases.
    levels = [float(np.abs((await speech.recv()).to_ndarray()).mean()) for _ in range(150)]
    assert min(levels) < 50 < max(levels)
    tone_frame = (await tone.recv()).to_ndarray()
    assert tone_frame.shape == (1, 960)
    assert np.abs(tone_frame).max() > 5000
    with pytest.raises(ValueError, match="signal"):
        SyntheticAudioTrack("noise")


async def test_record_to_file_then_play_it_back_encrypted(tmp_path: Path) -> None:
    recording = tmp_path / "call.mkv"
    keys_a, keys_b = call_keys()
    a, b = encrypted(keys_a), encrypted(keys_b)
    recorder = FileRecorder(recording)
    b.pc.on("track", recorder.add_track)
    a.pc.addTrack(SyntheticAudioTrack("tone"))
    a.pc.addTrack(PatternVideoTrack(160, 120))
    try:
        await connect(a, b)
        await recorder.start()
        await asyncio.sleep(2)
        await recorder.stop()
    finally:
        await a.close()
        await b.close()
    with av.open(str(recording)) as container:
        kinds = sorted(s.type for s in container.streams)
        video_frames = sum(1 for _ in container.decode(video=0))
    assert kinds == ["audio", "video"]
    assert video_frames > 20

    # The recorded file is now a source: play it into a new encrypted call.
    keys_c, keys_d = call_keys()
    c, d = encrypted(keys_c), encrypted(keys_d)
    player = file_source(recording)
    assert player.video is not None
    c.pc.addTrack(player.video)
    try:
        await connect(c, d)
        await until(lambda: bool(d.counters) and d.counter("video").frames > 15, timeout=10)
        assert d.counter("video").last_size == (160, 120)
    finally:
        await c.close()
        await d.close()
    with pytest.raises(FileNotFoundError):
        file_source(tmp_path / "missing.mkv")


def test_camera_and_microphone_capture_or_say_why_not() -> None:
    device = "/dev/video0"
    if os.path.exists(device):
        assert camera_source(device).video is not None
    else:
        with pytest.raises(CaptureUnavailableError, match="no camera"):
            camera_source(device)
    with pytest.raises(CaptureUnavailableError, match="does not exist"):
        camera_source("/dev/no-such-camera")
    reason = microphone_unavailable_reason()
    if reason is None:
        assert microphone_source().audio is not None
    else:
        assert reason.startswith("no microphone")
        with pytest.raises(CaptureUnavailableError, match=reason):
            microphone_source()


@pytest.fixture
def virtual_display() -> Iterator[str]:
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb is not installed (.ci/run installs it): no screen to capture")
    display = ":97"
    process = subprocess.Popen(
        [xvfb, display, "-screen", "0", "320x240x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not Path("/tmp/.X11-unix/X97").exists():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("Xvfb did not start")
            time.sleep(0.05)
        yield display
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_screen_capture_is_shared_encrypted(virtual_display: str) -> None:
    with pytest.raises(CaptureUnavailableError, match="no X server"):
        screen_source(":93")
    player = screen_source(virtual_display, size="320x240", fps=10)
    keys_a, keys_b = call_keys()
    a, b = encrypted(keys_a), encrypted(keys_b)
    assert player.video is not None
    a.pc.add_screen_share(player.video)
    try:
        await connect(a, b)
        await until(lambda: bool(b.counters) and b.counter("video").frames > 5, timeout=10)
        assert b.counter("video").last_size == (320, 240)
        assert a.pc.sender_tap(a.pc.getSenders()[0]).counters.frames_encrypted > 5
    finally:
        player.video.stop()
        await a.close()
        await b.close()


async def test_stats_report_rtt_and_bitrate() -> None:
    a, b = av_call()
    sender_stats, receiver_stats = StatsCollector(a.pc), StatsCollector(b.pc)
    try:
        await connect(a, b)
        await sender_stats.collect()
        await receiver_stats.collect()
        await asyncio.sleep(3)
        out = await sender_stats.collect()
        inbound = await receiver_stats.collect()
    finally:
        await a.close()
        await b.close()
    video_out = next(s for s in out.outbound if s.kind == "video")
    video_in = next(s for s in inbound.inbound if s.kind == "video")
    assert video_out.frames_encrypted >= video_in.frames_decrypted > 60
    assert video_out.packets_sent >= video_out.frames_encrypted
    assert video_out.bytes_sent > video_out.bytes_encrypted  # RTP payload adds descriptors
    assert video_out.bitrate_bps is not None
    assert video_out.bitrate_bps > 50_000
    assert video_in.bitrate_bps is not None
    assert video_in.bitrate_bps > 50_000
    assert video_in.frames_dropped == 0
    assert any(s.round_trip_time is not None for s in out.outbound)

"""Local controls on a live encrypted connection change what the far side receives."""

import asyncio

import pytest

from sealcall.media import PatternVideoTrack, SyntheticAudioTrack, negotiate
from sealcall.media.stats import StatsCollector

from media_helpers import av_call, call_keys, connect, encrypted, until


async def test_mute_camera_off_and_screen_share() -> None:
    a, b = av_call()
    try:
        await connect(a, b)
        await until(lambda: len(b.counters) == 2 and b.counter("video").frames > 5)
        audio, camera = b.counter("audio"), b.counter("video")

        # Microphone mute: audio stops arriving; unmute: it is back.
        a.pc.set_microphone_muted(True)
        await asyncio.sleep(0.8)
        assert not audio.active(within=0.5)
        assert camera.active()
        muted_at = audio.frames
        await asyncio.sleep(0.5)
        assert audio.frames == muted_at
        a.pc.set_microphone_muted(False)
        await until(lambda: audio.frames > muted_at + 10, timeout=3)

        # Camera off: no more video frames, and the far side can tell; on again: video resumes
        # at once because the first frame after the pause is a key frame.
        receiver_tap = b.pc.receiver_tap(b.pc.getReceivers()[1])
        keyframes = receiver_tap.counters.keyframes_decrypted
        a.pc.set_camera_enabled(False)
        await asyncio.sleep(0.8)
        assert not camera.active(within=0.5)
        stats = await StatsCollector(b.pc).collect()
        video_in = next(s for s in stats.inbound if s.kind == "video")
        assert video_in.seconds_since_last_frame is not None
        assert video_in.seconds_since_last_frame > 0.5
        outbound = await StatsCollector(a.pc).collect()
        assert next(s for s in outbound.outbound if s.role == "camera").paused
        off_at = camera.frames
        a.pc.set_camera_enabled(True)
        await until(lambda: camera.frames > off_at + 5, timeout=3)
        assert receiver_tap.counters.keyframes_decrypted > keyframes

        # Screen share: a second video track arrives after renegotiation...
        a.pc.add_screen_share(PatternVideoTrack(160, 120, fps=10))
        await negotiate(a.pc, b.pc)
        await until(lambda: len(b.counters) == 3)
        screen = b.counter("video", 1)
        await until(lambda: screen.frames > 5, timeout=5)
        assert screen.last_size == (160, 120)
        assert camera.last_size == (320, 240)
        assert [s.role for s in (await StatsCollector(a.pc).collect()).outbound] == [
            "microphone",
            "camera",
            "screenshare",
        ]

        # ...and stops after the next renegotiation, while the camera goes on.
        assert a.pc.remove_screen_share()
        await negotiate(a.pc, b.pc)
        await asyncio.sleep(0.8)
        assert not screen.active(within=0.5)
        assert camera.active()
        assert b.pc.getTransceivers()[2].currentDirection == "inactive"
        assert not a.pc.remove_screen_share()
    finally:
        await a.close()
        await b.close()


async def test_screen_share_rules() -> None:
    keys_a, _ = call_keys()
    a = encrypted(keys_a)
    try:
        with pytest.raises(ValueError, match="video"):
            a.pc.add_screen_share(SyntheticAudioTrack())
        a.pc.add_screen_share(PatternVideoTrack(160, 120))
        with pytest.raises(ValueError, match="already"):
            a.pc.add_screen_share(PatternVideoTrack(160, 120))
    finally:
        await a.close()

"""Remote tracks nobody reads hold only their newest frames; a long call's memory stays flat."""

import asyncio

import av
import pytest

from sealcall.bench.soak import run as soak
from sealcall.media import (
    LatestFrames,
    PatternVideoTrack,
    SyntheticAudioTrack,
    frames_dropped,
    frames_unread,
)
from sealcall.media.remote_tracks import AUDIO_FRAMES_KEPT, VIDEO_FRAMES_KEPT

from media_helpers import av_call, connect, plain, until


async def test_latest_frames_keeps_the_newest_and_always_takes_the_end_marker() -> None:
    queue = LatestFrames(3)
    for i in range(10):
        await queue.put(i)
    assert queue.qsize() == 3
    assert queue.frames_dropped == 7
    queue.put_nowait(None)  # the end of the track gets in even when full
    assert [queue.get_nowait() for _ in range(3)] == [8, 9, None]
    with pytest.raises(ValueError):
        LatestFrames(0)


@pytest.mark.parametrize("encrypted", [True, False])
async def test_unread_remote_tracks_hold_only_their_newest_frames(encrypted: bool) -> None:
    a, b = av_call()
    if not encrypted:
        a, b = plain(), plain()
        a.pc.addTrack(SyntheticAudioTrack())
        a.pc.addTrack(PatternVideoTrack(320, 240))
    tracks = []
    b.pc.on("track", tracks.append)  # kept, never read
    try:
        await connect(a, b)
        await until(lambda: len(tracks) == 2 and all(frames_dropped(t) > 30 for t in tracks))
        by_kind = {t.kind: t for t in tracks}
        assert frames_unread(by_kind["video"]) <= VIDEO_FRAMES_KEPT
        assert frames_unread(by_kind["audio"]) <= AUDIO_FRAMES_KEPT
        # A late reader starts at the newest frames, not at the first one of the call.
        video = by_kind["video"]
        dropped = frames_dropped(video)
        frame = await asyncio.wait_for(video.recv(), 5)
        assert isinstance(frame, av.VideoFrame)
        assert frame.pts is not None and frame.pts > (dropped - 1) * 3000  # 90 kHz, 30 fps
    finally:
        await a.close()
        await b.close()


async def test_a_minute_long_video_call_stops_growing_after_ten_seconds() -> None:
    """Neither side reads its remote tracks: heap and RSS stay flat while frames keep flowing."""
    report = await soak(1.0, interval=5.0, warmup=10.0, width=320, height=240, alice_reads=False)
    samples = report["samples"]
    assert isinstance(samples, list)
    first = next(s for s in samples if s["seconds"] >= 10.0)
    last = samples[-1]
    assert last["seconds"] >= 55.0
    assert report["call_state_at_end"] == "connected"
    for direction in ("frames_alice_to_bob", "frames_bob_to_alice"):
        assert last[direction] - first[direction] > 500, direction  # media kept flowing
    # Before the bound each unread side kept ~165 bytes of Python heap (and a decoded picture
    # outside it) per frame: +1.3 MB of heap and +270 MB of RSS from 10 s to 60 s here.
    assert last["heap_mb"] - first["heap_mb"] < 0.4
    assert last["rss_mb"] - first["rss_mb"] < 60

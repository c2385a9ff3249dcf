"""Remote tracks nobody reads hold only their newest frames; a long call's memory stays flat."""

import asyncio
import json
import statistics
import subprocess
import sys

import av
import pytest
from aiortc.mediastreams import MediaStreamTrack

from sealcall.bench.soak import run as soak
from sealcall.demo import RemoteMediaReader
from sealcall.media import (
    LOOPBACK,
    EncryptedPeerConnection,
    LatestFrames,
    PatternVideoTrack,
    PeerConnection,
    SyntheticAudioTrack,
    frames_dropped,
    frames_unread,
    negotiate,
)
from sealcall.media.remote_tracks import AUDIO_FRAMES_KEPT, VIDEO_FRAMES_KEPT
from sealcall.session import CallSession, VoIP
from sealcall.transport import InMemoryHub, InMemoryTransport
from voip_helpers import ROOM, SMALL_MEDIA

from media_helpers import call_keys, until


async def test_latest_frames_keeps_the_newest_and_always_takes_the_end_marker() -> None:
    queue = LatestFrames(3)
    for i in range(10):
        await queue.put(i)
    assert queue.qsize() == 3
    assert queue.frames_dropped == 7
    queue.put_nowait(None)  # the end of the track gets in even when full
    assert [queue.get_nowait() for _ in range(3)] == [8, 9, None]
    with pytest.raises(ValueError, match="at least one frame"):
        LatestFrames(0)


@pytest.mark.parametrize("encrypted", [True, False])
async def test_unread_remote_tracks_hold_only_their_newest_frames(encrypted: bool) -> None:
    if encrypted:
        keys_a, keys_b = call_keys()
        a: PeerConnection = EncryptedPeerConnection(keys_a, host_addresses=LOOPBACK)
        b: PeerConnection = EncryptedPeerConnection(keys_b, host_addresses=LOOPBACK)
    else:
        a, b = PeerConnection(host_addresses=LOOPBACK), PeerConnection(host_addresses=LOOPBACK)
    a.addTrack(SyntheticAudioTrack())
    a.addTrack(PatternVideoTrack(320, 240))
    tracks: list[MediaStreamTrack] = []
    b.on("track", tracks.append)  # kept, never read
    try:
        await negotiate(a, b)
        await until(lambda: len(tracks) == 2 and all(frames_dropped(t) > 30 for t in tracks))
        by_kind = {t.kind: t for t in tracks}
        assert frames_unread(by_kind["video"]) <= VIDEO_FRAMES_KEPT
        assert frames_unread(by_kind["audio"]) <= AUDIO_FRAMES_KEPT
        # A late reader starts at the newest frames, not at the first one of the call.
        video = by_kind["video"]
        dropped = frames_dropped(video)
        frame = await asyncio.wait_for(video.recv(), 5)
        assert isinstance(frame, av.VideoFrame)
        assert frame.pts is not None
        assert frame.pts > (dropped - 1) * 3000  # 90 kHz, 30 fps
    finally:
        await a.close()
        await b.close()


async def test_remote_media_reader_reads_every_track_of_a_call_and_forgets_it_when_it_ends() -> (
    None
):
    hub = InMemoryHub()
    voips = []
    for user in ("@alice:local", "@bob:local"):
        transport = InMemoryTransport(hub, user, "D")
        transport.join(ROOM)
        voips.append(VoIP(transport, media=SMALL_MEDIA, host_addresses=LOOPBACK))
    alice, bob = voips
    reader = RemoteMediaReader(bob)
    incoming: list[CallSession] = []
    bob.on("incoming_call", incoming.append)
    try:
        call = await alice.place_call(ROOM, "@bob:local", video=True)
        await until(lambda: bool(incoming))
        await incoming[0].answer()
        await until(lambda: reader.frames(call.call_id) > 100)
        tracks = [c.track for c in reader.counters[call.call_id]]
        assert sorted(t.kind for t in tracks) == ["audio", "video"]
        await until(lambda: all(c.frames > 10 for c in reader.counters[call.call_id]))
        await call.hangup()
        await until(lambda: call.call_id not in reader.counters)
        assert all(t.readyState == "ended" for t in tracks)
    finally:
        await reader.stop()
        await alice.close()
        await bob.close()


async def test_a_minute_long_video_call_stops_growing_after_ten_seconds() -> None:
    """Neither side reads its remote tracks: heap and RSS stay flat while frames keep flowing."""
    report = await soak(1.0, interval=5.0, warmup=10.0, width=320, height=240, alice_reads=False)
    samples = report["samples"]
    assert isinstance(samples, list)
    after_warmup = [s for s in samples if s["seconds"] >= 10.0]
    assert len(after_warmup) >= 9
    assert after_warmup[-1]["seconds"] >= 55.0
    assert report["call_state_at_end"] == "connected"
    assert report["media_flowing_at_end"] is True
    first, last = after_warmup[0], after_warmup[-1]
    for direction in ("frames_alice_to_bob", "frames_bob_to_alice"):
        assert last[direction] - first[direction] > 500, direction  # media kept flowing

    def growth(field: str) -> float:
        # Median of the last three samples against the first three: a leak grows steadily, a
        # moment's backlog on a loaded machine does not count.
        early = statistics.median(s[field] for s in after_warmup[:3])
        late = statistics.median(s[field] for s in after_warmup[-3:])
        return float(late - early)

    # Before the bound each unread side kept ~165 bytes of Python heap (and a decoded picture
    # outside it) per frame: some +0.5 MB of heap and +200 MB of RSS by this measure.
    for side in ("alice", "bob"):
        assert growth(f"{side}_heap_mb") < 0.25, side
        assert growth(f"{side}_rss_mb") < 40, side


def test_soak_command_prints_samples_growth_and_frames_as_json_under_loss() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sealcall",
            "soak",
            "--json",
            "--minutes",
            "0.05",
            "--interval",
            "1",
            "--loss",
            "20",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    report = json.loads(out)
    samples = report["samples"]
    assert len(samples) >= 3
    assert samples[-1]["seconds"] >= 3.0
    for side in ("alice", "bob"):
        assert all(s[f"{side}_rss_mb"] > 0 for s in samples)
        assert all(s[f"{side}_heap_mb"] > 0 for s in samples)
        assert isinstance(report[side]["rss_mb_per_minute"], float)
        assert isinstance(report[side]["heap_mb_per_minute"], float)
    assert report["frames_alice_to_bob"] > samples[0]["frames_alice_to_bob"]
    assert report["frames_bob_to_alice"] > samples[0]["frames_bob_to_alice"]
    assert report["call_state_at_end"] == "connected"
    assert report["media_flowing_at_end"] is True  # through a fifth of the packets lost
    assert report["loss"] == 0.2

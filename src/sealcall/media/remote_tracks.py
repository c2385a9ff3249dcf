"""Remote tracks that hold only their newest frames, so a track nobody reads costs no memory.

aiortc's decoder thread puts every decoded frame of a remote track into an unbounded queue that
only the track's reader drains: a track nobody reads (an application that shows no video, a
command-line call) grows by every frame it receives, about 14 MB/s for 640x480 video. Here each
remote track of our peer connections gets a :class:`LatestFrames` queue instead, installed per
receiver just before aiortc starts its decoder thread: it keeps the newest few frames and drops
the oldest, as a video element shows the latest picture. A reader that keeps up loses nothing.
"""

import asyncio
from typing import Any, cast

from aiortc import RTCRtpReceiver
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters

# Unread decoded frames a remote track holds: a few video frames (about 130 ms at 30 fps,
# 1.8 MB at 640x480) and half a second of audio (25 frames of 20 ms), so a reader that pauses
# briefly (a slow event loop, a recorder encoding) still gets everything.
VIDEO_FRAMES_KEPT = 4
AUDIO_FRAMES_KEPT = 25


class LatestFrames(asyncio.Queue[Any]):
    """A frame queue that never holds more than ``capacity`` frames: the oldest make way.

    ``put`` never waits (aiortc's decoder thread schedules one ``put`` per frame on the event
    loop, which must not pile up). The end-of-track marker (None) always gets in.
    ``frames_dropped`` counts the frames that were never read.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a remote track must hold at least one frame")
        super().__init__()
        self.capacity = capacity
        self.frames_dropped = 0

    def put_nowait(self, item: Any) -> None:
        while self.qsize() >= self.capacity:
            self.get_nowait()
            self.frames_dropped += 1
        super().put_nowait(item)

    async def put(self, item: Any) -> None:
        self.put_nowait(item)


def frames_dropped(track: MediaStreamTrack) -> int:
    """Frames of a remote ``track`` dropped unread because its reader fell behind (or is none)."""
    queue = getattr(track, "_queue", None)
    return queue.frames_dropped if isinstance(queue, LatestFrames) else 0


def frames_unread(track: MediaStreamTrack) -> int:
    """Decoded frames a remote ``track`` holds for its reader now."""
    queue = getattr(track, "_queue", None)
    return queue.qsize() if isinstance(queue, asyncio.Queue) else 0


def bound_track(track: MediaStreamTrack) -> None:
    """Make an aiortc remote track's frame queue a :class:`LatestFrames`, in place.

    In place, because a reader may already wait on the queue (aiortc announces a track before
    its receiver starts): a new queue would leave that reader waiting forever.
    """
    queue = getattr(track, "_queue", None)
    if type(queue) is not asyncio.Queue:
        return  # already bounded, or not an aiortc remote track
    capacity = VIDEO_FRAMES_KEPT if track.kind == "video" else AUDIO_FRAMES_KEPT
    bounded = cast(LatestFrames, queue)
    bounded.__class__ = LatestFrames
    bounded.capacity = capacity
    bounded.frames_dropped = 0
    while bounded.qsize() > capacity:  # nothing is decoded before the receiver starts
        bounded.get_nowait()
        bounded.frames_dropped += 1


class BoundedRtpReceiver(RTCRtpReceiver):
    """An RTP receiver whose remote track keeps only its newest frames; installed per receiver
    by changing its class (no module of aiortc is patched)."""

    async def receive(self, parameters: RTCRtpReceiveParameters) -> None:
        # aiortc hands the track's queue to the decoder thread when the receiver starts.
        if self._track is not None:
            bound_track(self._track)
        await super().receive(parameters)


def bound_receiver(receiver: RTCRtpReceiver) -> None:
    """Make ``receiver``'s remote track keep only its newest frames."""
    if type(receiver) is RTCRtpReceiver:
        receiver.__class__ = BoundedRtpReceiver

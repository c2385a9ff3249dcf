"""Media sinks: consume a remote track and discard, count, or record its frames."""

import asyncio
import contextlib
import time
from pathlib import Path

import av
from aiortc.contrib.media import MediaRecorder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack


class FrameCounter:
    """Consumes a track and counts its decoded frames (the null sink with a tally).

    ``active`` tells whether frames are still arriving: the far side's view of a camera that
    was turned off or a microphone that was muted.
    """

    def __init__(self, track: MediaStreamTrack) -> None:
        self.track = track
        self.frames = 0
        self.first_frame_time: float | None = None
        self.last_frame_time: float | None = None
        self.last_size: tuple[int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> "FrameCounter":
        """Start consuming in the background."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await self.track.recv()
                now = time.monotonic()
                if self.first_frame_time is None:
                    self.first_frame_time = now
                self.last_frame_time = now
                self.frames += 1
                if isinstance(frame, av.VideoFrame):
                    self.last_size = (frame.width, frame.height)

    def active(self, within: float = 0.5) -> bool:
        """True if a frame arrived in the last ``within`` seconds."""
        last = self.last_frame_time
        return last is not None and time.monotonic() - last <= within

    async def stop(self) -> None:
        """Stop consuming."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class FileRecorder:
    """Records remote tracks to a media file (the container follows the file name's suffix)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._recorder = MediaRecorder(str(self.path))

    def add_track(self, track: MediaStreamTrack) -> None:
        """Record ``track`` too (call before :meth:`start`)."""
        self._recorder.addTrack(track)

    async def start(self) -> None:
        """Begin writing."""
        await self._recorder.start()

    async def stop(self) -> None:
        """Finish the file."""
        await self._recorder.stop()

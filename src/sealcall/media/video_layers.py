"""Two layers of one camera for an SFU: the full picture and a thumbnail.

A member in an SFU call publishes its camera twice (docs/sfu-protocol.md, section 4): a
thumbnail (about 320x180) that everyone receives, and the full resolution for those who ask.
:class:`CameraLayers` reads the camera once and hands each frame to both layers' tracks; the
thumbnail's frames are scaled down (never up). Each layer holds only its newest frames, so a slow
encoder never makes the other wait or the camera pile up. The camera stops when both layers stopped.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from .remote_tracks import LatestFrames

THUMBNAIL_SIZE = (320, 180)
FRAMES_KEPT = 2


class LayerTrack(MediaStreamTrack):
    """One layer of a :class:`CameraLayers`: the camera's frames, scaled to ``size`` if given."""

    kind = "video"

    def __init__(self, layers: CameraLayers, size: tuple[int, int] | None) -> None:
        super().__init__()
        self.layers = layers
        self.size = size
        self.queue = LatestFrames(FRAMES_KEPT)

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self.layers.start()
        frame: VideoFrame | None = await self.queue.get()
        if frame is None:
            super().stop()
            raise MediaStreamError
        if self.size is None:
            return frame
        width, height = self.size
        if frame.width <= width and frame.height <= height:
            return frame  # already thumbnail-sized: never scaled up
        scaled = frame.reformat(width=width, height=height)
        scaled.pts, scaled.time_base = frame.pts, frame.time_base
        return scaled

    def stop(self) -> None:
        super().stop()
        self.layers.stopped(self)


class CameraLayers:
    """Reads ``camera`` once for :attr:`full` and :attr:`thumbnail` (see the module docstring)."""

    def __init__(
        self, camera: MediaStreamTrack, thumbnail_size: tuple[int, int] = THUMBNAIL_SIZE
    ) -> None:
        if camera.kind != "video":
            raise ValueError("camera layers need a video track")
        self.camera = camera
        self.full = LayerTrack(self, None)
        self.thumbnail = LayerTrack(self, thumbnail_size)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start reading the camera (the first ``recv`` of a layer does)."""
        if self._task is None and self.camera.readyState == "live":
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        layers = (self.full, self.thumbnail)
        try:
            while True:
                frame: Any = await self.camera.recv()
                for layer in layers:
                    if layer.readyState == "live":
                        layer.queue.put_nowait(frame)
        except MediaStreamError:
            pass
        finally:
            for layer in layers:
                layer.queue.put_nowait(None)

    def stopped(self, layer: LayerTrack) -> None:
        """A layer stopped: once both have, stop the camera."""
        if self.full.readyState == "ended" and self.thumbnail.readyState == "ended":
            if self._task is not None:
                self._task.cancel()
                self._task = None
            self.camera.stop()

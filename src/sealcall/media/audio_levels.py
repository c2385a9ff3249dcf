"""The level of each decoded frame of a remote audio track, for who-is-speaking.

Measured locally from the decoded audio: the mesh sends no RTP audio-level headers (they would
tell a relay when we speak). Decoded frames are whole in one place only: a remote track's frame
queue, which aiortc's decoder thread fills on the event loop. :func:`meter_audio_levels` makes
that queue (already a :class:`~sealcall.media.remote_tracks.LatestFrames`) measure every frame
on its way in, so the levels come whether or not anyone reads the track, and at the rate frames
are decoded (50 a second).
"""

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any, cast

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

from .remote_tracks import LatestFrames, bound_track

logger = logging.getLogger(__name__)

SILENCE_DBOV = -127.0

# Full scale of each sample format PyAV hands out, as RFC 6464 and WebRTC measure dBov: a
# full-scale square wave is 0 dBov, a full-scale sine -3 dBov.
_FULL_SCALE = {
    "s16": 32768.0,
    "s16p": 32768.0,
    "s32": 2147483648.0,
    "s32p": 2147483648.0,
    "flt": 1.0,
    "fltp": 1.0,
    "dbl": 1.0,
    "dblp": 1.0,
}

LevelCallback = Callable[[float], None]


def frame_level_dbov(frame: av.AudioFrame) -> float:
    """The RMS level of ``frame`` in dBov, all channels together: 0 for a full-scale square
    wave, about -3 for a full-scale sine, -127 for silence (and anything quieter).

    Raises ValueError for a sample format this does not measure (8-bit, 64-bit integers).
    """
    full_scale = _FULL_SCALE.get(frame.format.name)
    if full_scale is None:
        raise ValueError(f"cannot measure {frame.format.name} audio")
    samples = frame.to_ndarray().astype(np.float32, copy=False).ravel()
    if samples.size == 0:
        return SILENCE_DBOV
    mean_square = float(np.dot(samples, samples)) / samples.size / (full_scale * full_scale)
    if not mean_square > 0.0:  # silence, or NaN from a float frame
        return SILENCE_DBOV
    return min(0.0, max(SILENCE_DBOV, 10.0 * math.log10(mean_square)))


class MeteredFrames(LatestFrames):
    """A remote audio track's frame queue that reports the level of every frame put in.

    ``meter_errors`` counts levels a callback failed on (and frames that could not be
    measured); the first failure is logged, the rest only counted.
    """

    meters: list[LevelCallback]
    meter_errors: int

    def put_nowait(self, item: Any) -> None:
        if item is not None:
            self._measure(item)
        super().put_nowait(item)

    def _measure(self, frame: av.AudioFrame) -> None:
        try:
            dbov = frame_level_dbov(frame)
        except Exception as error:  # a frame we cannot measure is skipped
            self._failed("measuring an audio frame", error)
            return
        for meter in self.meters:
            try:
                meter(dbov)
            except Exception as error:  # the track goes on whatever it raised
                self._failed("an audio level callback", error)

    def _failed(self, what: str, error: Exception) -> None:
        if not self.meter_errors:
            logger.warning(
                "%s failed (%s); later failures on this track are only counted",
                what,
                type(error).__name__,
            )
        self.meter_errors += 1


def meter_audio_levels(track: MediaStreamTrack, on_level: LevelCallback) -> None:
    """Call ``on_level(dbov)`` on the event loop for every decoded frame of ``track``.

    ``track`` is a remote audio track of an aiortc peer connection (ours bound its frame
    queue; another's is bound here). Install it before or after frames flow; more than one
    callback may be installed. A callback that raises does not harm the track: the first
    failure is logged, every one counted (:func:`meter_errors`).
    """
    if track.kind != "audio":
        raise ValueError("only an audio track has audio levels")
    queue = getattr(track, "_queue", None)
    if not isinstance(queue, asyncio.Queue):
        raise TypeError("not a remote track of a peer connection")
    if type(queue) is asyncio.Queue:
        bound_track(track)  # what our PeerConnection's receiver does when it starts
    if isinstance(queue, MeteredFrames):
        metered = queue
    elif type(queue) is LatestFrames:
        metered = cast(MeteredFrames, queue)
        metered.__class__ = MeteredFrames  # in place: the decoder thread holds this queue
        metered.meters = []
        metered.meter_errors = 0
    else:
        raise TypeError("this track's frame queue cannot be metered")
    metered.meters.append(on_level)


def meter_errors(track: MediaStreamTrack) -> int:
    """Level callbacks that failed on ``track`` (and frames that could not be measured)."""
    queue = getattr(track, "_queue", None)
    return queue.meter_errors if isinstance(queue, MeteredFrames) else 0

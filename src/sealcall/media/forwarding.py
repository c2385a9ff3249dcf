"""Forwarding encoded frames without decoding them: what a relay or an SFU does.

:func:`forward_encoded` turns an RTP receiver into a source of ``av.Packet`` objects holding the
frames exactly as they arrived (for an encrypted call: ciphertext). A sender given the resulting
track packetizes them again with ``Encoder.pack`` without ever decoding.
"""

from __future__ import annotations

import asyncio
import fractions
import queue
from typing import Any

import av
from aiortc import RTCRtpReceiver
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .jitter import BufferedFrame


class ForwardedTrack(MediaStreamTrack):
    """A track of encoded packets taken from a receiver's reassembled frames."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.frames: list[bytes] = []
        self.keep_frames = True
        self._queue: asyncio.Queue[av.Packet[Any] | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()

    def _push(self, data: bytes, timestamp: int, clock_rate: int) -> None:
        if self.keep_frames:
            self.frames.append(data)
        packet = av.Packet(data)
        packet.pts = timestamp
        packet.time_base = fractions.Fraction(1, clock_rate)
        self._queue.put_nowait(packet)

    def _end(self) -> None:
        self._queue.put_nowait(None)

    async def recv(self) -> av.Packet[Any]:
        packet = await self._queue.get()
        if packet is None:
            self.stop()
            raise MediaStreamError
        return packet


class _ForwardingQueue(queue.Queue[Any]):
    """Stands in for a receiver's decoder queue: frames go to a track instead of a decoder."""

    def __init__(self, track: ForwardedTrack) -> None:
        super().__init__()
        self._track = track

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            self._track._end()
            super().put(item, block, timeout)
            return
        codec, encoded_frame = item
        if isinstance(encoded_frame, BufferedFrame) and encoded_frame.concealed:
            return  # a stand-in for a lost frame, for a decoder: nothing to forward
        self._track._push(encoded_frame.data, encoded_frame.timestamp, codec.clockRate)


def forward_encoded(receiver: RTCRtpReceiver, kind: str) -> ForwardedTrack:
    """Take ``receiver``'s encoded frames (before any decoding) as a forwardable track.

    Call before the receiver starts (in the peer connection's ``track`` event handler).
    """
    track = ForwardedTrack(kind)
    setattr(receiver, "_RTCRtpReceiver__decoder_queue", _ForwardingQueue(track))  # noqa: B010
    return track

"""aiortc encoders that encrypt each encoded frame before it is packetized.

Each subclass hooks the one place where its codec holds a whole encoded frame: VP8 just before
``_packetize``, H.264 just before the Annex B stream is split into NAL units, Opus on the packets
the encoder returns. Bitrate control (``target_bitrate``, fed by REMB) and forced key frames (PLI)
are the parent's, untouched.
"""

import logging
from collections.abc import Iterator
from typing import Any

from aiortc.codecs.base import Encoder
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av.frame import Frame

from sealcall.e2ee.codecs import Codec

from .crypto_taps import SenderTap, codec_for

logger = logging.getLogger(__name__)

EncodeResult = tuple[list[bytes], Any]


class _TapEncoder(Encoder):
    """Pause and key-frame handling shared by the encrypting encoders (put first in the bases)."""

    _tap: SenderTap

    def encode(self, frame: Frame, force_keyframe: bool = False) -> EncodeResult:
        if self._tap.paused:
            self._tap.counters.frames_paused += 1
            return [], None
        keyframe = force_keyframe or self._tap.take_keyframe_request()
        return super().encode(frame, keyframe)  # type: ignore[safe-super]

    def pack(self, packet: Any) -> EncodeResult:
        if self._tap.paused:
            return [], None
        return super().pack(packet)  # type: ignore[safe-super]


class EncryptingVp8Encoder(_TapEncoder, Vp8Encoder):
    """VP8 with every frame SFrame-protected (10 clear bytes on key frames, 3 on delta frames)."""

    def __init__(self, tap: SenderTap) -> None:
        Vp8Encoder.__init__(self)
        self._tap = tap

    def _packetize(self, buffer: bytes, picture_id: int) -> list[bytes]:  # type: ignore[override]
        if not buffer:
            return []
        protected = self._tap.protect(Codec.VP8, buffer)
        return [] if protected is None else Vp8Encoder._packetize(protected, picture_id)


class EncryptingH264Encoder(_TapEncoder, H264Encoder):
    """H.264 with every access unit SFrame-protected; the result is still valid Annex B."""

    def __init__(self, tap: SenderTap) -> None:
        H264Encoder.__init__(self)
        self._tap = tap

    def _split_bitstream(self, buf: bytes) -> Iterator[bytes]:  # type: ignore[override]
        if not buf:
            return iter(())
        protected = self._tap.protect(Codec.H264, buf)
        return iter(()) if protected is None else H264Encoder._split_bitstream(protected)


class EncryptingOpusEncoder(_TapEncoder, OpusEncoder):
    """Opus with every packet SFrame-protected (the TOC byte stays clear)."""

    def __init__(self, tap: SenderTap) -> None:
        OpusEncoder.__init__(self)
        self._tap = tap

    def _protect_all(self, result: EncodeResult) -> EncodeResult:
        payloads, timestamp = result
        protected = [self._tap.protect(Codec.OPUS, p) for p in payloads]
        return [p for p in protected if p is not None], timestamp

    def encode(self, frame: Frame, force_keyframe: bool = False) -> EncodeResult:
        return self._protect_all(super().encode(frame, force_keyframe))

    def pack(self, packet: Any) -> EncodeResult:
        return self._protect_all(super().pack(packet))


class RefusingEncoder(Encoder):
    """Stands in for a codec that cannot be protected: sends nothing rather than plaintext."""

    def __init__(self, mime_type: str) -> None:
        logger.error("refusing to send %s media: it cannot be end-to-end encrypted", mime_type)

    def encode(self, frame: Frame, force_keyframe: bool = False) -> EncodeResult:
        return [], None

    def pack(self, packet: Any) -> EncodeResult:
        return [], None


def encrypting_encoder(codec: RTCRtpCodecParameters, tap: SenderTap) -> Encoder:
    """The encrypting encoder for a negotiated codec (a refusing one if it cannot be protected)."""
    kind = codec_for(codec.mimeType)
    if kind is Codec.VP8:
        return EncryptingVp8Encoder(tap)
    if kind is Codec.H264:
        return EncryptingH264Encoder(tap)
    if kind is Codec.OPUS:
        return EncryptingOpusEncoder(tap)
    return RefusingEncoder(codec.mimeType)

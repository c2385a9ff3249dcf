"""Codec-aware frame protection: SFrame over an encoded frame, keeping what must stay readable.

A packetizer or SFU must still read a few bytes of each encoded frame. Those stay in the clear and
are authenticated as SFrame metadata; the rest is encrypted. The protected frame is
``clear prefix || SFrame ciphertext``:

- Opus: the TOC byte (1 byte).
- VP8: the frame tag, plus on key frames the start code and dimensions (RFC 6386 section 9.1):
  10 bytes on key frames, 3 on delta frames.
- H.264: every NAL unit before the first slice, and that slice's NAL header; the ciphertext is
  escaped (see :mod:`sealcall.e2ee.h264`) so it can contain no start code.

These are the clear prefixes browsers' E2EE (Jitsi, LiveKit, SimpleX) keep, so a browser using
``RTCRtpScriptTransform`` can apply the same rule.
"""

from enum import StrEnum

from sealcall.sframe.errors import FrameFormatError
from sealcall.sframe.receiver import SFrameReceiver
from sealcall.sframe.sender import SFrameSender

from . import h264


class Codec(StrEnum):
    """The codecs whose frames can be protected; values are the lower-case codec names."""

    OPUS = "opus"
    VP8 = "vp8"
    H264 = "h264"

    @classmethod
    def from_mime(cls, mime_type: str) -> "Codec":
        """Map ``audio/opus``, ``video/VP8``, ``video/H264`` (any case) to a :class:`Codec`."""
        name = mime_type.rsplit("/", 1)[-1].lower()
        try:
            return cls(name)
        except ValueError:
            raise FrameFormatError(f"no frame protection for codec {mime_type!r}") from None


VP8_KEY_FRAME_PREFIX = 10
VP8_DELTA_FRAME_PREFIX = 3
OPUS_PREFIX = 1


def vp8_prefix_length(frame: bytes) -> int:
    """The clear prefix of a VP8 frame: 10 bytes for a key frame, 3 for a delta frame."""
    if not frame:
        raise FrameFormatError("empty VP8 frame")
    # Bit 0 of the frame tag is the inverse key-frame flag (RFC 6386 section 9.1).
    length = VP8_DELTA_FRAME_PREFIX if frame[0] & 0x01 else VP8_KEY_FRAME_PREFIX
    if len(frame) < length:
        raise FrameFormatError(
            f"VP8 frame of {len(frame)} bytes is shorter than its {length}-byte header"
        )
    return length


def vp8_is_key_frame(frame: bytes) -> bool:
    """True if ``frame`` (plain or protected) is a VP8 key frame."""
    return bool(frame) and not frame[0] & 0x01


def is_key_frame(codec: Codec, frame: bytes) -> bool:
    """True for a VP8 key frame or an H.264 access unit with an IDR slice; Opus has none."""
    if codec is Codec.VP8:
        return vp8_is_key_frame(frame)
    if codec is Codec.H264:
        return h264.has_idr(frame)
    return False


def vp8_dimensions(frame: bytes) -> tuple[int, int]:
    """Width and height of a VP8 key frame, read from its (clear) first 10 bytes."""
    if not vp8_is_key_frame(frame) or len(frame) < VP8_KEY_FRAME_PREFIX:
        raise FrameFormatError("not a VP8 key frame")
    if frame[3:6] != b"\x9d\x01\x2a":
        raise FrameFormatError("VP8 key frame without its start code")
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    return width, height


# Above this size a memoryview slice is cheaper than copying the frame's tail.
_VIEW_THRESHOLD = 2048


def _tail(frame: bytes, start: int) -> bytes | memoryview:
    """``frame[start:]``, without a copy for large frames."""
    return memoryview(frame)[start:] if len(frame) > _VIEW_THRESHOLD else frame[start:]


def protect_frame(codec: Codec, sender: SFrameSender, frame: bytes) -> bytes:
    """Encrypt one encoded frame of ``codec``: ``clear prefix || SFrame ciphertext``."""
    if codec is Codec.OPUS:
        if not frame:
            raise FrameFormatError("empty Opus frame")
        prefix = frame[:OPUS_PREFIX]
        return sender.encrypt(prefix, _tail(frame, OPUS_PREFIX), prefix)
    if codec is Codec.VP8:
        n = vp8_prefix_length(frame)
        prefix = frame[:n]
        return sender.encrypt(prefix, _tail(frame, n), prefix)
    if codec is Codec.H264:
        n, metadata = h264.split_clear(frame)
        sealed = sender.encrypt(metadata, _tail(frame, n))
        return frame[:n] + h264.escape(sealed)
    raise FrameFormatError(f"no frame protection for codec {codec!r}")


def unprotect_frame(codec: Codec, receiver: SFrameReceiver, data: bytes) -> bytes:
    """Decrypt a frame made by :func:`protect_frame`; return the exact original frame.

    Raises a subclass of :class:`~sealcall.sframe.errors.SFrameError` for any bad input.
    """
    if codec is Codec.OPUS:
        if not data:
            raise FrameFormatError("empty Opus frame")
        prefix = data[:OPUS_PREFIX]
        return receiver.decrypt(prefix, _tail(data, OPUS_PREFIX), prefix)[2]
    if codec is Codec.VP8:
        n = vp8_prefix_length(data)
        prefix = data[:n]
        return receiver.decrypt(prefix, _tail(data, n), prefix)[2]
    if codec is Codec.H264:
        n, metadata = h264.split_clear(data)
        return receiver.decrypt(metadata, h264.unescape(data[n:]), data[:n])[2]
    raise FrameFormatError(f"no frame protection for codec {codec!r}")

"""The VP8 RTP payload descriptor (RFC 7741) and the clear VP8 payload header an SFU may read.

SFrame keeps the first 10 bytes of a VP8 key frame (3 of a delta frame) in the clear by design,
so at the start of partition 0 the SFU can see the key-frame bit and, on key frames, the
dimensions. Everything after them is ciphertext and is never looked at.
"""

from __future__ import annotations

__all__ = [
    "NO_VALUE",
    "Vp8Descriptor",
    "Vp8Error",
    "parse_vp8",
    "rewrite_picture_id",
    "rewrite_tl0picidx",
]

NO_VALUE = -1
_START_CODE = b"\x9d\x01\x2a"


class Vp8Error(ValueError):
    """A malformed VP8 payload descriptor or payload header (remote input)."""


class Vp8Descriptor:
    """A parsed VP8 payload descriptor (reusable: ``load`` per packet); absent fields are -1."""

    __slots__ = (
        "header_size",
        "height",
        "is_keyframe",
        "keyidx",
        "layer_sync",
        "non_reference",
        "partition_id",
        "picture_id",
        "picture_id_offset",
        "picture_id_wide",
        "start_of_partition",
        "tid",
        "tl0picidx",
        "tl0picidx_offset",
        "width",
    )

    def __init__(self) -> None:
        self.non_reference = False
        self.start_of_partition = False
        self.partition_id = 0
        self.picture_id = NO_VALUE
        self.picture_id_offset = NO_VALUE
        self.picture_id_wide = False
        self.tl0picidx = NO_VALUE
        self.tl0picidx_offset = NO_VALUE
        self.tid = NO_VALUE
        self.layer_sync = False
        self.keyidx = NO_VALUE
        self.header_size = 0
        self.is_keyframe = False
        self.width = 0
        self.height = 0

    @property
    def is_frame_start(self) -> bool:
        """S=1 and PID=0: this packet begins a frame and carries the VP8 payload header."""
        return self.start_of_partition and self.partition_id == 0

    def load(
        self, buf: bytes | bytearray | memoryview, start: int = 0, end: int = -1
    ) -> Vp8Descriptor:
        """Parse the descriptor in ``buf[start:end]`` (absolute offsets; ``end`` -1 = the end).

        Offsets recorded here are absolute too, so a rewriter can patch the forwarded copy in place.
        A padding-only RTP packet (bandwidth probes) has no descriptor: check for an empty payload
        first.
        Raises ``Vp8Error`` if the descriptor or a frame-start payload header is truncated.
        """
        if end < 0:
            end = len(buf)
        if start >= end:
            raise Vp8Error("VP8 payload is empty")
        b0 = buf[start]
        i = start + 1
        self.non_reference = bool(b0 & 0x20)
        self.start_of_partition = bool(b0 & 0x10)
        self.partition_id = b0 & 0x07
        self.picture_id = self.picture_id_offset = NO_VALUE
        self.picture_id_wide = False
        self.tl0picidx = self.tl0picidx_offset = NO_VALUE
        self.tid = self.keyidx = NO_VALUE
        self.layer_sync = False
        if b0 & 0x80:
            if i >= end:
                raise Vp8Error("VP8 descriptor truncated after X")
            x = buf[i]
            i += 1
            if x & 0x80:  # I: picture id, 7 or 15 bits (M bit)
                if i >= end:
                    raise Vp8Error("VP8 picture id truncated")
                p = buf[i]
                self.picture_id_offset = i
                if p & 0x80:
                    if i + 1 >= end:
                        raise Vp8Error("VP8 15-bit picture id truncated")
                    self.picture_id = ((p & 0x7F) << 8) | buf[i + 1]
                    self.picture_id_wide = True
                    i += 2
                else:
                    self.picture_id = p
                    i += 1
            if x & 0x40:  # L: TL0PICIDX
                if i >= end:
                    raise Vp8Error("VP8 TL0PICIDX truncated")
                self.tl0picidx = buf[i]
                self.tl0picidx_offset = i
                i += 1
            if x & 0x30:  # T or K: TID|Y|KEYIDX
                if i >= end:
                    raise Vp8Error("VP8 TID/KEYIDX truncated")
                t = buf[i]
                if x & 0x20:
                    self.tid = t >> 6
                    self.layer_sync = bool(t & 0x20)
                if x & 0x10:
                    self.keyidx = t & 0x1F
                i += 1
        self.header_size = i - start
        self.is_keyframe = False
        self.width = self.height = 0
        if b0 & 0x17 == 0x10:  # S=1, PID=0: the VP8 payload header follows
            if i + 3 > end:
                raise Vp8Error("VP8 payload header truncated")
            if not buf[i] & 0x01:  # P bit: 0 = key frame (RFC 6386 section 9.1)
                if i + 10 > end:
                    raise Vp8Error("VP8 key-frame header truncated")
                if bytes(buf[i + 3 : i + 6]) != _START_CODE:
                    raise Vp8Error("VP8 key-frame start code missing")
                self.is_keyframe = True
                self.width = (buf[i + 6] | (buf[i + 7] << 8)) & 0x3FFF
                self.height = (buf[i + 8] | (buf[i + 9] << 8)) & 0x3FFF
        return self


def parse_vp8(buf: bytes | bytearray | memoryview, start: int = 0, end: int = -1) -> Vp8Descriptor:
    """Parse a VP8 payload descriptor into a new ``Vp8Descriptor``; raises ``Vp8Error``."""
    return Vp8Descriptor().load(buf, start, end)


def rewrite_picture_id(buf: bytearray, offset: int, wide: bool, picture_id: int) -> None:
    """Write ``picture_id`` at ``offset`` in place, keeping the sender's 7- or 15-bit width."""
    if wide:
        buf[offset] = 0x80 | ((picture_id >> 8) & 0x7F)
        buf[offset + 1] = picture_id & 0xFF
    else:
        buf[offset] = picture_id & 0x7F


def rewrite_tl0picidx(buf: bytearray, offset: int, value: int) -> None:
    """Write TL0PICIDX at ``offset`` in place (8 bits, wrapping)."""
    buf[offset] = value & 0xFF

"""RTP (RFC 3550) header view over bytes, header extensions (RFC 8285), audio level (RFC 6464).

The view never copies the payload: it records offsets into the buffer it was loaded with. One
``RtpView`` can be reused for every packet of a stream (``load``), so the forwarding path allocates
nothing per packet but the small tuples ``struct`` returns. Rewriting works in place on a
``bytearray`` (the forwarding path copies the packet once, then patches the header).
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Mapping

__all__ = [
    "MID_URI",
    "ONE_BYTE_PROFILE",
    "RtpError",
    "RtpView",
    "extension_id_table",
    "is_rtcp",
    "parse_rtp",
    "remap_extension_ids",
    "rewrite_header",
    "set_marker",
    "split_audio_level",
]

ONE_BYTE_PROFILE = 0xBEDE
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"  # RFC 8843: per connection, never forwarded
_TWO_BYTE_MASK = 0xFFF0
_TWO_BYTE_PROFILE = 0x1000
_FIXED = struct.Struct("!BBHII")
_HEADER_REWRITE = struct.Struct("!BHII")
_EXT_HEADER = struct.Struct("!HH")


class RtpError(ValueError):
    """A malformed RTP packet (remote input): the only exception the parsers raise."""


class RtpView:
    """A parsed RTP header: fields plus offsets into ``buf``; the payload is never copied."""

    __slots__ = (
        "buf",
        "csrc_count",
        "ext_end",
        "ext_profile",
        "ext_start",
        "marker",
        "padding_size",
        "payload_end",
        "payload_offset",
        "payload_type",
        "sequence_number",
        "ssrc",
        "timestamp",
    )

    def __init__(self) -> None:
        self.buf: bytes | bytearray | memoryview = b""
        self.marker = False
        self.payload_type = 0
        self.sequence_number = 0
        self.timestamp = 0
        self.ssrc = 0
        self.csrc_count = 0
        self.ext_profile = -1
        self.ext_start = 0
        self.ext_end = 0
        self.payload_offset = 0
        self.payload_end = 0
        self.padding_size = 0

    def load(self, buf: bytes | bytearray | memoryview) -> RtpView:
        """Parse the header of ``buf`` into this view (reused per packet); raise ``RtpError``."""
        n = len(buf)
        if n < 12:
            raise RtpError("RTP packet shorter than its fixed header")
        b0, b1, seq, ts, ssrc = _FIXED.unpack_from(buf, 0)
        if b0 & 0xC0 != 0x80:
            raise RtpError("RTP version is not 2")
        cc = b0 & 0x0F
        off = 12 + 4 * cc
        if off > n:
            raise RtpError("RTP CSRC list runs past the packet")
        if b0 & 0x10:
            if off + 4 > n:
                raise RtpError("RTP extension header runs past the packet")
            profile, words = _EXT_HEADER.unpack_from(buf, off)
            start = off + 4
            off = start + 4 * words
            if off > n:
                raise RtpError("RTP header extension runs past the packet")
            self.ext_profile = profile
            self.ext_start = start
            self.ext_end = off
        else:
            self.ext_profile = -1
            self.ext_start = self.ext_end = off
        end = n
        pad = 0
        if b0 & 0x20:
            pad = buf[n - 1]
            if pad == 0 or off + pad > n:
                raise RtpError("RTP padding count is invalid")
            end = n - pad
        self.buf = buf
        self.marker = b1 >= 0x80
        self.payload_type = b1 & 0x7F
        self.sequence_number = seq
        self.timestamp = ts
        self.ssrc = ssrc
        self.csrc_count = cc
        self.payload_offset = off
        self.payload_end = end
        self.padding_size = pad
        return self

    @property
    def version(self) -> int:
        """Always 2 for a loaded packet (other versions are refused)."""
        return 2

    @property
    def padding(self) -> bool:
        """Whether the P bit was set."""
        return self.padding_size > 0

    @property
    def has_extension(self) -> bool:
        """Whether the X bit was set."""
        return self.ext_profile >= 0

    @property
    def csrcs(self) -> tuple[int, ...]:
        """The contributing sources (a new tuple; not for the hot path)."""
        return struct.unpack_from(f"!{self.csrc_count}I", self.buf, 12)

    @property
    def payload(self) -> memoryview:
        """The payload without padding, as a view into the buffer (no copy)."""
        return memoryview(self.buf)[self.payload_offset : self.payload_end]

    def extension_range(self, ext_id: int) -> tuple[int, int] | None:
        """Offsets ``(start, end)`` of extension element ``ext_id``'s data, or None if absent.

        Handles the RFC 8285 one-byte (0xBEDE, ids 1..14) and two-byte (0x100X, ids 1..255)
        forms; other profiles carry no addressable elements. Raises ``RtpError`` on an element
        that runs past the extension block.
        """
        profile = self.ext_profile
        buf = self.buf
        i = self.ext_start
        end = self.ext_end
        if profile == ONE_BYTE_PROFILE:
            while i < end:
                b = buf[i]
                if b == 0:  # padding between elements
                    i += 1
                    continue
                eid = b >> 4
                if eid == 15:  # reserved: stop parsing (RFC 8285 section 4.2)
                    return None
                start = i + 1
                stop = start + (b & 0x0F) + 1
                if stop > end:
                    raise RtpError("RTP one-byte extension element runs past its block")
                if eid == ext_id:
                    return start, stop
                i = stop
            return None
        if profile & _TWO_BYTE_MASK == _TWO_BYTE_PROFILE:
            while i < end:
                eid = buf[i]
                if eid == 0:
                    i += 1
                    continue
                if i + 1 >= end:
                    raise RtpError("RTP two-byte extension element runs past its block")
                start = i + 2
                stop = start + buf[i + 1]
                if stop > end:
                    raise RtpError("RTP two-byte extension element runs past its block")
                if eid == ext_id:
                    return start, stop
                i = stop
        return None

    def extension(self, ext_id: int) -> bytes | None:
        """The data of extension element ``ext_id`` (a copy), or None if absent."""
        r = self.extension_range(ext_id)
        if r is None:
            return None
        return bytes(self.buf[r[0] : r[1]])

    def extensions(self) -> dict[int, bytes]:
        """Every addressable extension element by id (first occurrence wins; not hot path)."""
        ids = range(1, 15) if self.ext_profile == ONE_BYTE_PROFILE else range(1, 256)
        found: dict[int, bytes] = {}
        for eid in ids:
            data = self.extension(eid)
            if data is not None:
                found[eid] = data
        return found

    def audio_level(self, ext_id: int) -> int:
        """RFC 6464 audio level: ``-1`` if absent, else the byte: bit 7 = voice, bits 0..6 = -dBov.

        An int rather than a tuple so that the speaking detector allocates nothing per packet;
        ``split_audio_level`` turns it into ``(voice, level)``.
        """
        r = self.extension_range(ext_id)
        if r is None:
            return -1
        if r[1] - r[0] < 1:
            raise RtpError("RTP audio-level extension is empty")
        return self.buf[r[0]]


def extension_id_table(
    sender: Mapping[str, int], receiver: Mapping[str, int], hide: Collection[str] = ()
) -> bytes | None:
    """A 256-byte map from a sender's RFC 8285 extension ids to a receiver's (None: not needed).

    Each side negotiated its own ids (URI -> id) with the SFU. An element whose URI the receiver
    also negotiated gets the receiver's id; any other element, and those of the URIs in ``hide``
    (the sender's MID means nothing on the receiver's connection), gets an id the receiver did not
    negotiate, which it ignores (RFC 8285 section 4.1; 15, "stop parsing", if all of 1..14 are
    taken).
    """
    if dict(sender) == dict(receiver) and not any(uri in sender for uri in hide):
        return None  # same ids, nothing hidden: the block can go as it is
    taken = set(receiver.values())
    unused = next((i for i in range(1, 15) if i not in taken), 15)
    table = bytearray([unused]) * 256
    table[0] = 0
    by_id = {eid: uri for uri, eid in sender.items()}
    for eid, uri in by_id.items():
        if 0 < eid < 256 and uri not in hide and 0 < receiver.get(uri, 0) < 256:
            table[eid] = receiver[uri]
    return bytes(table)


def remap_extension_ids(view: RtpView, table: bytes) -> bytes:
    """A copy of ``view``'s extension block with each element's id mapped through ``table``.

    Same length, so it can replace the block in place. Anything past a malformed element (one
    that runs past the block) becomes padding, so no stray id reaches the receiver.
    """
    block = bytearray(view.buf[view.ext_start : view.ext_end])
    end = len(block)
    i = 0
    if view.ext_profile == ONE_BYTE_PROFILE:
        while i < end:
            b = block[i]
            if b == 0:
                i += 1
                continue
            eid = b >> 4
            if eid == 15:
                break
            stop = i + (b & 0x0F) + 2
            if stop > end:
                block[i:] = bytes(end - i)
                break
            new = table[eid]
            block[i] = (new if new < 15 else 15) << 4 | (b & 0x0F)
            i = stop
    elif view.ext_profile & _TWO_BYTE_MASK == _TWO_BYTE_PROFILE:
        while i < end:
            eid = block[i]
            if eid == 0:
                i += 1
                continue
            stop = i + 2 + (block[i + 1] if i + 1 < end else end)
            if stop > end:
                block[i:] = bytes(end - i)
                break
            block[i] = table[eid]
            i = stop
    return bytes(block)


def split_audio_level(value: int) -> tuple[bool, int]:
    """``(voice activity, level in -dBov 0..127)`` from ``RtpView.audio_level``'s byte."""
    return value >= 0x80, value & 0x7F


def parse_rtp(buf: bytes | bytearray | memoryview) -> RtpView:
    """Parse ``buf`` into a new ``RtpView``; raises ``RtpError`` if malformed."""
    return RtpView().load(buf)


def rewrite_header(
    buf: bytearray, payload_type: int, sequence_number: int, timestamp: int, ssrc: int
) -> None:
    """Write payload type (marker kept), sequence number, timestamp and SSRC into ``buf``."""
    _HEADER_REWRITE.pack_into(
        buf,
        1,
        (buf[1] & 0x80) | (payload_type & 0x7F),
        sequence_number & 0xFFFF,
        timestamp & 0xFFFFFFFF,
        ssrc & 0xFFFFFFFF,
    )


def set_marker(buf: bytearray, marker: bool) -> None:
    """Set or clear the marker bit in place."""
    buf[1] = (buf[1] | 0x80) if marker else (buf[1] & 0x7F)


def is_rtcp(buf: bytes | bytearray | memoryview) -> bool:
    """RFC 5761 demultiplexing: RTCP packet types 192..223 fall where RTP's M+PT byte would."""
    return len(buf) >= 2 and 192 <= buf[1] <= 223

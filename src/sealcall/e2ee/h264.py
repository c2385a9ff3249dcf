"""H.264 Annex B helpers for frame protection: NAL unit scanning and emulation prevention.

The protected frame must still be a valid Annex B byte stream, so that a packetizer (which splits
at start codes) and an SFU (which reads NAL headers) keep working. Ciphertext is therefore escaped
with the H.264 emulation-prevention rule (ITU-T H.264 section 7.4.1: a 0x03 after every two zero
bytes that precede a byte <= 0x03), and closed with an rbsp_stop_one_bit byte (0x80) so that the
NAL unit never ends in a zero byte a depacketizer might take as part of the next start code.
"""

import itertools
import re

from sealcall.sframe.errors import FrameFormatError

START_CODE = b"\x00\x00\x01"
# NAL unit types 1..5 carry coded slices (VCL); the first one marks where encryption starts.
_VCL_TYPES = frozenset(range(1, 6))
_IDR_TYPE = 5
_STOP_BYTE = 0x80
# Regular expressions scan in C; bytes.find on a two-byte needle is slower in CPython.
_NEEDS_ESCAPE = re.compile(b"\x00\x00(?=[\x00-\x03])")
_EMULATION = re.compile(b"\x00\x00\x03")


def nal_units(frame: bytes) -> list[tuple[int, int]]:
    """Return ``(start, end)`` of each NAL unit's payload (after its start code), in order.

    Trailing zero bytes (``trailing_zero_8bits`` or the first byte of a 4-byte start code) are not
    part of a unit.
    """
    units: list[tuple[int, int]] = []
    pos = frame.find(START_CODE)
    while pos != -1:
        start = pos + 3
        pos = frame.find(START_CODE, start)
        end = len(frame) if pos == -1 else pos
        while end > start and frame[end - 1] == 0:
            end -= 1
        units.append((start, end))
    return units


def _first_slice(frame: bytes) -> list[int] | None:
    """Start offsets of the NAL units up to and including the first slice, or None if none."""
    starts: list[int] = []
    pos = frame.find(START_CODE)
    while pos != -1:
        start = pos + 3
        starts.append(start)
        if start < len(frame) and frame[start] & 0x1F in _VCL_TYPES:
            return starts
        pos = frame.find(START_CODE, start)
    return None


def has_idr(frame: bytes) -> bool:
    """True if the access unit's first slice is an IDR slice (NAL type 5)."""
    starts = _first_slice(frame)
    return starts is not None and frame[starts[-1]] & 0x1F == _IDR_TYPE


def split_clear(frame: bytes) -> tuple[int, bytes]:
    """Find the clear prefix of an Annex B access unit.

    The clear part runs through the one-byte header of the first slice NAL unit (or, in a frame
    without slices, of the last NAL unit). Returns ``(prefix_length, metadata)`` where
    ``metadata`` is the clear part in a canonical form — each unit behind a 3-byte start code,
    trailing zeros dropped — so that a depacketizer that rewrites start codes cannot break the
    authentication. Only the bytes before the first slice are scanned.
    """
    starts = _first_slice(frame)
    if starts is None:
        # No slice: the last unit carries the ciphertext. Rare (parameter sets alone).
        units = nal_units(frame)
        if not units:
            raise FrameFormatError("H.264 frame has no Annex B start code")
        starts = [start for start, _ in units]
    if frame[: starts[0] - 3].strip(b"\x00"):
        raise FrameFormatError("H.264 frame has bytes other than zeros before its first start code")
    last = starts[-1]
    if last >= len(frame) or frame[last] == 0:
        raise FrameFormatError("H.264 NAL unit without a header byte")
    parts = []
    for start, following in itertools.pairwise(starts):
        end = following - 3
        while end > start and frame[end - 1] == 0:
            end -= 1
        parts.append(START_CODE + frame[start:end])
    parts.append(START_CODE + frame[last : last + 1])
    return last + 1, b"".join(parts)


def escape(data: bytes | bytearray) -> bytes:
    """Apply emulation prevention to ``data`` and append the stop byte."""
    return _NEEDS_ESCAPE.sub(b"\x00\x00\x03", data) + b"\x80"


def unescape(data: bytes | bytearray | memoryview) -> bytes:
    """Undo :func:`escape`: drop trailing zeros and the stop byte, remove emulation bytes."""
    end = len(data)
    while end > 0 and data[end - 1] == 0:
        end -= 1
    if end == 0 or data[end - 1] != _STOP_BYTE:
        raise FrameFormatError("H.264 protected payload lacks its stop byte")
    return _EMULATION.sub(b"\x00\x00", data[: end - 1])

"""The SFrame header (RFC 9605 section 4.3): a config byte, then the KID and CTR in big-endian.

Config byte layout: ``X K K K Y C C C``. With ``X = 0`` the KID (< 8) sits in ``K``; with ``X = 1``,
``K + 1`` KID bytes follow. ``Y``/``C`` do the same for the counter. Values always take the minimal
encoding on the way out; on the way in any length is accepted because the header is authenticated
as AAD, so a non-minimal encoding cannot be used to forge anything.
"""

from .errors import HeaderError

MAX_VALUE = 2**64 - 1

BytesLike = bytes | bytearray | memoryview


def _field(value: int, name: str) -> tuple[int, bytes]:
    """Return (3-bit-plus-flag nibble, trailing bytes) for one header field."""
    if value < 8:
        if value < 0:
            raise HeaderError(f"{name} must be >= 0, got {value}")
        return value, b""
    if value > MAX_VALUE:
        raise HeaderError(f"{name} must be < 2**64, got {value}")
    length = (value.bit_length() + 7) >> 3
    return 0x08 | (length - 1), value.to_bytes(length, "big")


def encode_header(kid: int, ctr: int) -> bytes:
    """Encode the SFrame header for ``kid`` and ``ctr`` (each 0 .. 2**64-1) in minimal form."""
    kid_nibble, kid_bytes = _field(kid, "KID")
    ctr_nibble, ctr_bytes = _field(ctr, "CTR")
    return bytes(((kid_nibble << 4) | ctr_nibble,)) + kid_bytes + ctr_bytes


def decode_header(data: BytesLike) -> tuple[int, int, int]:
    """Parse the header at the start of ``data``: return ``(kid, ctr, header_length)``.

    Raises :class:`HeaderError` when ``data`` is empty or shorter than the header it announces.
    """
    if not data:
        raise HeaderError("empty frame: no SFrame header")
    config = data[0]
    if not config & 0x88:
        # The common case in a call's first frames and for small KIDs: everything in one byte.
        return config >> 4, config & 0x07, 1
    end = 1
    if config & 0x80:
        kid_len = ((config >> 4) & 0x07) + 1
        kid = int.from_bytes(data[end : end + kid_len], "big")
        end += kid_len
    else:
        kid = (config >> 4) & 0x07
    if config & 0x08:
        ctr_len = (config & 0x07) + 1
        ctr = int.from_bytes(data[end : end + ctr_len], "big")
        end += ctr_len
    else:
        ctr = config & 0x07
    if end > len(data):
        raise HeaderError(f"truncated SFrame header: needs {end} bytes, frame has {len(data)}")
    return kid, ctr, end

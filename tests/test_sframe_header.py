"""SFrame header edge cases beyond the RFC vectors."""

import pytest

from sealcall.sframe import HeaderError, decode_header, encode_header

MAX = 2**64 - 1


@pytest.mark.parametrize(("kid", "ctr"), [(-1, 0), (0, -1), (2**64, 0), (0, 2**64)])
def test_out_of_range_values_are_rejected(kid: int, ctr: int) -> None:
    with pytest.raises(HeaderError):
        encode_header(kid, ctr)


def test_largest_values_take_eight_bytes_each() -> None:
    header = encode_header(MAX, MAX)
    assert len(header) == 17
    assert decode_header(header) == (MAX, MAX, 17)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x80", b"\x08", b"\xff" + b"\x00" * 15, b"\x8f" + b"\x01" * 3],
)
def test_truncated_headers_raise_header_error(data: bytes) -> None:
    with pytest.raises(HeaderError):
        decode_header(data)


def test_non_minimal_encoding_is_accepted_on_input() -> None:
    # KID 1 written in an extended one-byte field; the header is authenticated, so this is safe.
    assert decode_header(b"\x80\x01") == (1, 0, 2)

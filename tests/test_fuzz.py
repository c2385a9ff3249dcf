"""Hostile input: only SFrameError (and its subclasses) may escape the parsers and decryptors."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealcall.e2ee import Codec, h264, protect_frame, unprotect_frame
from sealcall.sframe import (
    CipherSuite,
    HeaderError,
    SFrameError,
    SFrameReceiver,
    SFrameSender,
    decode_header,
    decrypt,
    encode_header,
)

KEY = bytes(range(16))
U64 = st.integers(min_value=0, max_value=2**64 - 1)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(U64, U64)
def test_header_round_trip(kid: int, ctr: int) -> None:
    header = encode_header(kid, ctr)
    assert decode_header(header + b"payload") == (kid, ctr, len(header))


@SETTINGS
@given(st.binary(max_size=40))
def test_decode_header_raises_only_header_error(data: bytes) -> None:
    try:
        kid, ctr, length = decode_header(data)
    except HeaderError:
        return
    assert 0 <= kid < 2**64
    assert 0 <= ctr < 2**64
    assert 1 <= length <= min(17, len(data))


@SETTINGS
@given(st.sampled_from(list(CipherSuite)), st.binary(max_size=80), st.binary(max_size=8))
def test_decrypt_garbage_raises_only_sframe_error(suite: int, data: bytes, meta: bytes) -> None:
    with pytest.raises(SFrameError):
        decrypt(suite, KEY, meta, data)


@SETTINGS
@given(st.integers(min_value=-(2**70), max_value=2**70), st.binary(max_size=64))
def test_decrypt_any_suite_id_raises_only_sframe_error(suite: int, data: bytes) -> None:
    with pytest.raises(SFrameError):
        decrypt(suite, KEY, b"", data)


@SETTINGS
@given(st.sampled_from(list(CipherSuite)), st.binary(min_size=0, max_size=200), st.data())
def test_any_bit_flip_is_detected(suite: int, payload: bytes, data: st.DataObject) -> None:
    sender = SFrameSender(300, KEY, suite, first_ctr=70000)
    receiver = SFrameReceiver(suite)
    receiver.add_key(300, KEY)
    frame = bytearray(sender.encrypt(b"meta", payload))
    bit = data.draw(st.integers(min_value=0, max_value=len(frame) * 8 - 1))
    frame[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(SFrameError):
        receiver.decrypt(b"meta", bytes(frame))
    # The receiver is unharmed: the genuine next frame still decrypts.
    assert receiver.decrypt(b"meta", sender.encrypt(b"meta", payload))[2] == payload


FRAME_PREFIXES = {
    Codec.OPUS: st.binary(min_size=1, max_size=300),
    Codec.VP8: st.binary(min_size=10, max_size=300),
    Codec.H264: st.builds(
        lambda units: b"".join(b"\x00\x00\x00\x01" + u for u in units),
        st.lists(
            st.binary(min_size=1, max_size=60).filter(lambda u: u[0] & 0x1F), min_size=1, max_size=4
        ),
    ),
}


@SETTINGS
@given(st.sampled_from(list(Codec)), st.binary(max_size=300))
def test_unprotect_garbage_raises_only_sframe_error(codec: Codec, data: bytes) -> None:
    receiver = SFrameReceiver()
    receiver.add_key(1, KEY)
    with pytest.raises(SFrameError):
        unprotect_frame(codec, receiver, data)


@SETTINGS
@given(st.sampled_from(list(Codec)), st.data())
def test_protect_round_trip_and_tamper(codec: Codec, data: st.DataObject) -> None:
    frame = data.draw(FRAME_PREFIXES[codec])
    sender = SFrameSender(1, KEY)
    receiver = SFrameReceiver()
    receiver.add_key(1, KEY)
    try:
        sealed = protect_frame(codec, sender, frame)
    except SFrameError:
        return  # e.g. a VP8 key-frame tag on a frame shorter than 10 bytes
    position = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1))
    tampered = bytearray(sealed)
    tampered[position] ^= data.draw(st.integers(min_value=1, max_value=255))
    try:
        restored = unprotect_frame(codec, receiver, bytes(tampered))
    except SFrameError:
        pass
    else:
        # Only bytes a depacketizer may rewrite (start-code zeros) can change without detection.
        assert codec is Codec.H264
        assert [restored[s:e] for s, e in h264.nal_units(restored)] == [
            frame[s:e] for s, e in h264.nal_units(frame)
        ]
        return
    assert unprotect_frame(codec, receiver, sealed) == frame


@SETTINGS
@given(st.binary(max_size=400))
def test_h264_escape_round_trip_has_no_start_code(data: bytes) -> None:
    escaped = h264.escape(data)
    assert b"\x00\x00\x01" not in escaped
    assert b"\x00\x00\x00" not in escaped
    assert not escaped.endswith(b"\x00")
    assert h264.unescape(escaped) == data
    assert h264.unescape(escaped + b"\x00\x00") == data

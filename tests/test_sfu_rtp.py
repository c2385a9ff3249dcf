"""The SFU's RTP header view and VP8 descriptor: RFC byte examples, aiortc cross-checks, fuzzing."""

import struct

import pytest
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealcall.sfu.rtp import (
    MID_URI,
    RtpError,
    RtpView,
    extension_id_table,
    is_rtcp,
    parse_rtp,
    remap_extension_ids,
    rewrite_header,
    set_marker,
    split_audio_level,
)
from sealcall.sfu.vp8 import Vp8Error, parse_vp8, rewrite_picture_id, rewrite_tl0picidx

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# RFC 3550 fixed header: V=2, X=1, M=1, PT=100, seq 0x1234, ts 0xDEADBEEF, SSRC 0x11223344;
# RFC 8285 one-byte extension block (0xBEDE, 2 words): id 1 len 1 (audio level 0xAA: voice, 42),
# id 2 len 3, one padding byte between elements, one padding byte at the end.
ONE_BYTE = (
    bytes([0x90, 0xE4, 0x12, 0x34, 0xDE, 0xAD, 0xBE, 0xEF, 0x11, 0x22, 0x33, 0x44])
    + bytes([0xBE, 0xDE, 0x00, 0x02])
    + bytes([0x10, 0xAA, 0x00, 0x22, 0x01, 0x02, 0x03, 0x00])
    + b"hello"
)


def test_fixed_header_and_one_byte_extensions() -> None:
    v = parse_rtp(ONE_BYTE)
    assert (v.version, v.marker, v.payload_type) == (2, True, 100)
    assert (v.sequence_number, v.timestamp, v.ssrc) == (0x1234, 0xDEADBEEF, 0x11223344)
    assert v.csrcs == ()
    assert not v.padding
    assert v.has_extension
    assert v.payload_offset == 24
    assert bytes(v.payload) == b"hello"
    assert v.extension(1) == b"\xaa"
    assert v.extension(2) == b"\x01\x02\x03"
    assert v.extension(3) is None
    assert v.extensions() == {1: b"\xaa", 2: b"\x01\x02\x03"}
    assert v.audio_level(1) == 0xAA
    assert split_audio_level(v.audio_level(1)) == (True, 42)
    assert v.audio_level(3) == -1


def test_two_byte_extensions_csrcs_and_padding() -> None:
    # CC=2, X=1, P=1; RFC 8285 two-byte form (0x1000): id 5 empty, id 7 two bytes, padding.
    packet = (
        bytes([0xB2, 0x08, 0xFF, 0xFF, 0, 0, 0, 1, 0, 0, 0, 2])
        + struct.pack("!II", 0xCAFE, 0xBEEF)
        + bytes([0x10, 0x00, 0x00, 0x02])
        + bytes([0x05, 0x00, 0x07, 0x02, 0xAA, 0xBB, 0x00, 0x00])
        + b"xyz"
        + b"\x00\x00\x03"
    )
    v = parse_rtp(packet)
    assert (v.marker, v.payload_type, v.sequence_number) == (False, 8, 0xFFFF)
    assert v.csrcs == (0xCAFE, 0xBEEF)
    assert v.extension(5) == b""
    assert v.extension(7) == b"\xaa\xbb"
    assert v.extension(1) is None
    assert v.padding
    assert v.padding_size == 3
    assert bytes(v.payload) == b"xyz"


def test_one_byte_id_15_stops_parsing() -> None:
    packet = bytearray(ONE_BYTE)
    packet[16] = 0xF0  # id 15 (reserved) where id 1 was: the rest is not read
    assert parse_rtp(packet).extension(2) is None


def test_view_is_reusable_and_does_not_copy() -> None:
    view = RtpView()
    buf = bytearray(ONE_BYTE)
    view.load(buf)
    buf[-1] = ord("!")
    assert bytes(view.payload) == b"hell!"
    view.load(bytes([0x80, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]))
    assert not view.has_extension
    assert view.extension(1) is None
    assert bytes(view.payload) == b""


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        ONE_BYTE[:11],
        bytes([0x40]) + ONE_BYTE[1:],  # version 1
        bytes([0x8F]) + ONE_BYTE[1:24],  # 15 CSRCs in a 24-byte packet
        ONE_BYTE[:14],  # extension header cut
        ONE_BYTE[:20],  # extension block cut
        bytes([0xA0]) + ONE_BYTE[1:12] + b"ab\x00",  # padding count 0
        bytes([0xA0]) + ONE_BYTE[1:12] + b"ab\x09",  # padding longer than the payload
    ],
)
def test_malformed_packets_raise_rtp_error(packet: bytes) -> None:
    with pytest.raises(RtpError):
        parse_rtp(packet)


def test_extension_element_overrunning_its_block_raises_on_lookup() -> None:
    packet = bytearray(ONE_BYTE)
    packet[19] = 0x2F  # id 2 claims 16 bytes in an 8-byte block
    view = parse_rtp(packet)
    assert view.extension(1) == b"\xaa"  # found before the bad element
    with pytest.raises(RtpError):
        view.extension(2)


def test_rewrite_header_in_place_keeps_marker_and_payload() -> None:
    buf = bytearray(ONE_BYTE)
    rewrite_header(buf, 96, 0x1_0005, 0x1_0000_0007, 0xAABBCCDD)
    v = parse_rtp(buf)
    assert (v.marker, v.payload_type, v.sequence_number) == (True, 96, 5)
    assert (v.timestamp, v.ssrc) == (7, 0xAABBCCDD)
    assert buf[12:] == ONE_BYTE[12:]
    set_marker(buf, False)
    assert not parse_rtp(buf).marker
    assert parse_rtp(buf).payload_type == 96


def test_rtcp_demultiplexing() -> None:
    assert is_rtcp(bytes([0x81, 201, 0, 1]))
    assert not is_rtcp(ONE_BYTE)


def _aiortc_map() -> HeaderExtensionsMap:
    m = HeaderExtensionsMap()
    m.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(
                    id=1, uri="urn:ietf:params:rtp-hdrext:ssrc-audio-level"
                ),
                RTCRtpHeaderExtensionParameters(
                    id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
                ),
            ]
        )
    )
    return m


@SETTINGS
@given(
    pt=st.integers(0, 127),
    marker=st.booleans(),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    level=st.none() | st.tuples(st.booleans(), st.integers(0, 127)),
    send_time=st.none() | st.integers(0, 0xFFFFFF),
    payload=st.binary(max_size=64),
)
def test_matches_aiortc(
    pt: int,
    marker: bool,
    seq: int,
    ts: int,
    ssrc: int,
    csrcs: list[int],
    level: tuple[bool, int] | None,
    send_time: int | None,
    payload: bytes,
) -> None:
    ref = RtpPacket(pt, int(marker), seq, ts, ssrc, payload)
    ref.csrc = csrcs
    ref.extensions.audio_level = level
    ref.extensions.abs_send_time = send_time
    wire = ref.serialize(_aiortc_map())
    v = parse_rtp(wire)
    assert (v.payload_type, v.marker, v.sequence_number) == (pt, marker, seq)
    assert (v.timestamp, v.ssrc, list(v.csrcs)) == (ts, ssrc, csrcs)
    assert bytes(v.payload) == payload
    got = v.audio_level(1)
    assert (None if got < 0 else split_audio_level(got)) == level
    raw = v.extension(3)
    assert (None if raw is None else int.from_bytes(raw, "big")) == send_time
    # And aiortc reads our in-place rewrite.
    buf = bytearray(wire)
    rewrite_header(buf, 111, seq + 7, ts + 9, ssrc ^ 1)
    back = RtpPacket.parse(bytes(buf), _aiortc_map())
    assert (back.payload_type, back.marker) == (111, marker)
    assert back.sequence_number == (seq + 7) % 65536
    assert (back.timestamp, back.ssrc, back.payload) == ((ts + 9) % 2**32, ssrc ^ 1, payload)


@SETTINGS
@given(st.binary(max_size=80))
def test_fuzz_rtp_raises_only_rtp_error(data: bytes) -> None:
    try:
        v = parse_rtp(data)
    except RtpError:
        return
    assert 12 <= v.payload_offset <= v.payload_end <= len(data)
    for eid in range(256):
        try:
            v.extension(eid)
            v.audio_level(eid)
        except RtpError:
            pass


@SETTINGS
@given(st.binary(max_size=40), st.sampled_from([0xBEDE, 0x1000, 0x1003]))
def test_fuzz_extension_blocks_raise_only_rtp_error(block: bytes, profile: int) -> None:
    block += b"\x00" * (-len(block) % 4)
    packet = bytes([0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    packet += struct.pack("!HH", profile, len(block) // 4) + block
    v = parse_rtp(packet)
    for eid in range(256):
        try:
            data = v.extension(eid)
        except RtpError:
            continue
        assert data is None or len(data) <= len(block)


LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def test_extension_ids_are_mapped_to_the_receivers_and_mid_is_hidden() -> None:
    # ONE_BYTE's sender: id 1 audio level, id 2 abs-send-time (and its MID on 3, unused here).
    sender = {LEVEL: 1, SEND_TIME: 2, MID_URI: 3}
    receiver = {MID_URI: 1, LEVEL: 2, SEND_TIME: 3}  # aiortc-style ids
    table = extension_id_table(sender, receiver, hide=[MID_URI])
    assert table is not None
    view = parse_rtp(ONE_BYTE)
    block = remap_extension_ids(view, table)
    packet = ONE_BYTE[: view.ext_start] + block + ONE_BYTE[view.ext_end :]
    remapped = parse_rtp(packet)
    assert remapped.extensions() == {2: b"\xaa", 3: b"\x01\x02\x03"}
    assert bytes(remapped.payload) == b"hello"
    # The sender's MID, or an id the receiver never negotiated, goes to an id the receiver ignores.
    assert extension_id_table({MID_URI: 1}, receiver, hide=[MID_URI]) == bytes([0, 4] + [4] * 254)
    assert extension_id_table(sender, sender) is None  # the same ids: nothing to do
    two_byte = bytes([0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 1, 1, 1, 0x7F, 0])
    remapped = parse_rtp(two_byte[:16] + remap_extension_ids(parse_rtp(two_byte), table))
    assert remapped.extensions() == {2: b"\x7f"}


@SETTINGS
@given(
    st.binary(max_size=40),
    st.sampled_from([0xBEDE, 0x1000, 0x1003, 0x1234]),
    st.dictionaries(st.sampled_from([LEVEL, SEND_TIME, MID_URI, "x"]), st.integers(1, 255)),
    st.dictionaries(st.sampled_from([LEVEL, SEND_TIME, MID_URI, "x"]), st.integers(1, 14)),
)
def test_fuzz_remapped_blocks_keep_their_size_and_carry_only_receiver_ids(
    block: bytes, profile: int, sender: dict[str, int], receiver: dict[str, int]
) -> None:
    block += b"\x00" * (-len(block) % 4)
    packet = bytes([0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    packet += struct.pack("!HH", profile, len(block) // 4) + block
    table = extension_id_table(sender, receiver, hide=[MID_URI])
    if table is None:
        return
    view = parse_rtp(packet)
    out = remap_extension_ids(view, table)
    assert len(out) == len(block)
    remapped = parse_rtp(packet[:16] + out)
    if profile == 0x1234:
        assert out == block
        return
    known = {eid for uri, eid in receiver.items() if uri != MID_URI}
    for eid in range(1, 256):
        try:
            found = remapped.extension(eid) is not None
        except RtpError:
            continue
        assert not found or eid in known or eid not in receiver.values()


# --- VP8 (RFC 7741) -------------------------------------------------------------------------

# X=1, S=1, PID=0; I, L, T set; 15-bit picture id 0x1234; TL0PICIDX 5; TID=1, Y=1.
# Then the VP8 key-frame header (RFC 6386 9.1): P=0, start code, 640 (scale bits set) x 480.
VP8_KEY = bytes([0x90, 0xE0, 0x92, 0x34, 0x05, 0x60]) + bytes(
    [0x50, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x42, 0xE0, 0x01]
)


def test_vp8_key_frame_descriptor() -> None:
    d = parse_vp8(VP8_KEY + b"ciphertext")
    assert d.start_of_partition
    assert d.partition_id == 0
    assert d.is_frame_start
    assert (d.picture_id, d.picture_id_wide, d.picture_id_offset) == (0x1234, True, 2)
    assert (d.tl0picidx, d.tid, d.layer_sync, d.keyidx) == (5, 1, True, -1)
    assert d.header_size == 6
    assert d.is_keyframe
    assert (d.width, d.height) == (640, 480)


def test_vp8_delta_frame_and_continuation() -> None:
    # 7-bit picture id 17, K only (KEYIDX 3); a delta frame: P=1, only 3 clear bytes needed.
    delta = parse_vp8(bytes([0x90, 0x90, 17, 0x03, 0x31, 0x00, 0x00]))
    assert (delta.picture_id, delta.picture_id_wide, delta.keyidx, delta.tid) == (17, False, 3, -1)
    assert delta.is_frame_start
    assert not delta.is_keyframe
    # S=0: not the start of a partition; what follows is ciphertext and is not read.
    cont = parse_vp8(bytes([0x00, 0xFF]))
    assert not cont.is_frame_start
    assert not cont.is_keyframe
    assert cont.picture_id == -1


def test_vp8_offsets_are_absolute_within_an_rtp_packet() -> None:
    packet = ONE_BYTE[:24] + VP8_KEY
    view = parse_rtp(packet)
    d = parse_vp8(packet, view.payload_offset, view.payload_end)
    assert d.picture_id_offset == 26
    assert d.tl0picidx_offset == 28
    assert d.is_keyframe


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x80",  # X without its byte
        b"\x80\x80",  # I without the picture id
        b"\x80\x80\x80",  # 15-bit picture id cut
        b"\x80\x40",  # L without TL0PICIDX
        b"\x80\x20",  # T without TID
        b"\x10\x00\x00",  # frame start without its 3-byte header
        b"\x10\x00\x00\x00\x9d\x01\x2a\x00\x00\x00",  # key frame cut at 9 bytes
        b"\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",  # key frame without start code
    ],
)
def test_vp8_malformed_raises_vp8_error(payload: bytes) -> None:
    with pytest.raises(Vp8Error):
        parse_vp8(payload)


@SETTINGS
@given(
    start=st.booleans(),
    pid=st.integers(0, 7),
    picture_id=st.none() | st.integers(0, 0x7FFF),
    tl0=st.none() | st.integers(0, 255),
    tid=st.none() | st.tuples(st.integers(0, 3), st.integers(0, 1)),
    keyidx=st.none() | st.integers(0, 31),
)
def test_vp8_matches_aiortc_descriptor(
    start: bool,
    pid: int,
    picture_id: int | None,
    tl0: int | None,
    tid: tuple[int, int] | None,
    keyidx: int | None,
) -> None:
    wire = bytes(VpxPayloadDescriptor(int(start), pid, picture_id, tl0, tid, keyidx))
    d = parse_vp8(wire + b"\x01\x00\x00")  # a delta-frame header where one is read
    assert d.header_size == len(wire)
    assert (d.start_of_partition, d.partition_id) == (start, pid)
    assert d.picture_id == (-1 if picture_id is None else picture_id)
    assert d.tl0picidx == (-1 if tl0 is None else tl0)
    assert (d.tid, d.layer_sync) == ((-1, False) if tid is None else (tid[0], bool(tid[1])))
    assert d.keyidx == (-1 if keyidx is None else keyidx)
    # Rewriting the picture id keeps the sender's width, and aiortc reads it back.
    if picture_id is not None:
        buf = bytearray(wire)
        rewrite_picture_id(buf, d.picture_id_offset, d.picture_id_wide, picture_id + 200)
        if tl0 is not None:
            rewrite_tl0picidx(buf, d.tl0picidx_offset, tl0 + 3)
        back, _ = VpxPayloadDescriptor.parse(bytes(buf))
        mod = 0x8000 if d.picture_id_wide else 0x80
        assert back.picture_id == (picture_id + 200) % mod
        assert back.tl0picidx == (None if tl0 is None else (tl0 + 3) % 256)


@SETTINGS
@given(st.binary(max_size=24))
def test_fuzz_vp8_raises_only_vp8_error(data: bytes) -> None:
    try:
        d = parse_vp8(data)
    except Vp8Error:
        return
    assert 1 <= d.header_size <= len(data)
    assert 0 <= d.width < 16384
    assert 0 <= d.height < 16384

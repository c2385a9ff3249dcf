"""The SFU's compound RTCP: hand-built RFC bytes, aiortc cross-checks, round trips, fuzzing."""

import contextlib
import struct

import pytest
from aiortc.rtp import (
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    pack_remb_fci,
    unpack_remb_fci,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealcall.sfu.rtcp import (
    Bye,
    Fir,
    FirEntry,
    Nack,
    Pli,
    ReceiverReport,
    Remb,
    ReportBlock,
    RtcpError,
    SenderReport,
    SourceDescription,
    build_rtcp,
    parse_rtcp,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
u32 = st.integers(0, 0xFFFFFFFF)


def test_hand_built_rr_with_one_report_block() -> None:
    # RFC 3550 6.4.2: V=2 RC=1 PT=201 length=7; SSRC; one block with 25% lost, -3 cumulative.
    wire = bytes([0x81, 201, 0, 7]) + struct.pack("!I", 0x01020304)
    wire += struct.pack("!IIIIII", 0xAABBCCDD, (64 << 24) | 0xFFFFFD, 0x0001FFFF, 12, 34, 56)
    parsed = parse_rtcp(wire)
    assert parsed.skipped == 0
    assert parsed.packets == (
        ReceiverReport(0x01020304, (ReportBlock(0xAABBCCDD, 64, -3, 0x0001FFFF, 12, 34, 56),)),
    )
    assert build_rtcp(parsed.packets) == wire


def test_hand_built_pli_fir_nack_remb() -> None:
    pli = bytes([0x81, 206, 0, 2]) + struct.pack("!II", 1, 2)
    fir = bytes([0x84, 206, 0, 4]) + struct.pack("!IIIB3x", 1, 0, 9, 7)
    # NACK PID 0xFFFE with BLP bits 0 and 2: 0xFFFE, 0xFFFF, 0x0001 (wraps).
    nack = bytes([0x81, 205, 0, 3]) + struct.pack("!IIHH", 1, 2, 0xFFFE, 0b101)
    # REMB: 1 SSRC, exponent 3, mantissa 0x12345 -> 0x12345 << 3 b/s.
    remb = bytes([0x8F, 206, 0, 5]) + struct.pack("!II", 1, 0) + b"REMB"
    remb += bytes([1, (3 << 2) | 0x01, 0x23, 0x45]) + struct.pack("!I", 77)
    parsed = parse_rtcp(pli + fir + nack + remb)
    assert parsed.packets == (
        Pli(1, 2),
        Fir(1, (FirEntry(9, 7),)),
        Nack(1, 2, (0xFFFE, 0xFFFF, 0x0001)),
        Remb(1, 0x12345 << 3, (77,)),
    )
    assert build_rtcp(parsed.packets[:3]) == pli + fir + nack


def test_unknown_types_are_skipped_and_counted() -> None:
    app = bytes([0x80, 204, 0, 2]) + b"\x00\x00\x00\x01NAME"
    tcc = bytes([0x8F, 205, 0, 2]) + struct.pack("!II", 1, 2)  # transport-cc: not ours
    afb = bytes([0x8F, 206, 0, 3]) + struct.pack("!II", 1, 0) + b"XXXX"
    parsed = parse_rtcp(app + tcc + afb + Pli(5, 6).serialize())
    assert parsed.packets == (Pli(5, 6),)
    assert parsed.skipped == 3


def test_padding_on_the_last_packet() -> None:
    wire = bytes([0xA1, 206, 0, 3]) + struct.pack("!II", 1, 2) + b"\x00\x00\x00\x04"
    assert parse_rtcp(wire).packets == (Pli(1, 2),)


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"\x81\xc9\x00",
        bytes([0x41, 201, 0, 1, 0, 0, 0, 0]),  # version 1
        bytes([0x81, 201, 0, 9, 0, 0, 0, 0]),  # length past the datagram
        bytes([0x81, 201, 0, 1, 0, 0, 0, 0]),  # RC=1 without its block
        bytes([0x81, 205, 0, 1, 0, 0, 0, 0]),  # NACK without media SSRC
        bytes([0x84, 206, 0, 3]) + bytes(12),  # FIR entry cut
        bytes([0x8F, 206, 0, 3]) + bytes(8) + b"REMB",  # REMB without bitrate
        bytes([0x81, 202, 0, 1, 0, 0, 0, 1]),  # SDES chunk without items
        bytes([0xA1, 206, 0, 2]) + bytes(7) + b"\x00",  # padding count 0
        bytes([0xA1, 206, 0, 2]) + bytes(8) + bytes([0x81, 206, 0, 2]) + bytes(8),  # pad not last
    ],
)
def test_malformed_raise_rtcp_error(wire: bytes) -> None:
    with pytest.raises(RtcpError):
        parse_rtcp(wire)


def test_aiortc_packets_parse_the_same() -> None:
    block = RtcpReceiverInfo(9, 10, -20, 0x10005, 30, 40, 50)
    wire = b"".join(
        bytes(p)
        for p in [
            RtcpSrPacket(1, RtcpSenderInfo(0x0102030405060708, 11, 12, 13), [block]),
            RtcpRrPacket(2, [block]),
            # One chunk: aiortc does not align a second chunk to 32 bits as RFC 3550 6.5 asks.
            RtcpSdesPacket([RtcpSourceInfo(3, [(2, b"name"), (1, b"cname@x")])]),
            RtcpRtpfbPacket(1, 5, 6, [100, 101, 117, 118, 500]),
            RtcpPsfbPacket(1, 5, 6),
            RtcpPsfbPacket(15, 5, 0, pack_remb_fci(1_500_000, [6, 7])),
            RtcpByePacket([1, 2]),
        ]
    )
    ours = ReportBlock(9, 10, -20, 0x10005, 30, 40, 50)
    parsed = parse_rtcp(wire)
    assert parsed.skipped == 0
    assert parsed.packets == (
        SenderReport(1, 0x0102030405060708, 11, 12, 13, (ours,)),
        ReceiverReport(2, (ours,)),
        SourceDescription(((3, "cname@x"),)),
        Nack(5, 6, (100, 101, 117, 118, 500)),
        Pli(5, 6),
        Remb(5, unpack_remb_fci(pack_remb_fci(1_500_000, [6, 7]))[0], (6, 7)),
        Bye((1, 2)),
    )


@SETTINGS
@given(
    ssrc=u32,
    blocks=st.lists(
        st.builds(
            ReportBlock,
            u32,
            st.integers(0, 255),
            st.integers(-(1 << 23), (1 << 23) - 1),
            u32,
            u32,
            u32,
            u32,
        ),
        max_size=4,
    ),
    lost=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=40),
    bitrate=st.integers(0, (1 << 18) - 1) | st.integers(0, 10**10),
    cname=st.text(max_size=40),
    reason=st.text(max_size=20),
    ntp=st.integers(0, 2**64 - 1),
)
def test_round_trip_and_aiortc_reads_ours(
    ssrc: int,
    blocks: list[ReportBlock],
    lost: list[int],
    bitrate: int,
    cname: str,
    reason: str,
    ntp: int,
) -> None:
    packets = (
        SenderReport(ssrc, ntp, 1, 2, 3, tuple(blocks)),
        ReceiverReport(ssrc, tuple(blocks)),
        SourceDescription(((ssrc, cname),)),
        Bye((ssrc,), reason),
        Nack(ssrc, 1, tuple(lost)),
        Pli(ssrc, 2),
        Fir(ssrc, (FirEntry(3, 4),)),
        Remb(ssrc, bitrate, (4, 5)),
    )
    wire = build_rtcp(packets)
    parsed = parse_rtcp(wire)
    assert parsed.skipped == 0
    assert len(parsed.packets) == len(packets)
    for got, sent in zip(parsed.packets, packets, strict=True):
        if isinstance(sent, Nack):
            assert isinstance(got, Nack)
            assert sorted(set(got.lost)) == sorted(set(lost))
        elif isinstance(sent, Remb):
            assert isinstance(got, Remb)
            assert got.bitrate <= bitrate
            assert got.bitrate >= bitrate - (bitrate >> 17)  # 18-bit mantissa precision
        elif isinstance(sent, Bye) and not reason:
            assert got == Bye((ssrc,), "")
        else:
            assert got == sent
    # aiortc's own parser accepts the whole compound packet.
    from aiortc.rtp import RtcpPacket

    assert len(RtcpPacket.parse(wire)) == len(packets)


@SETTINGS
@given(st.binary(max_size=120))
def test_fuzz_rtcp_raises_only_rtcp_error(data: bytes) -> None:
    try:
        parsed = parse_rtcp(data)
    except RtcpError:
        return
    assert parsed.skipped >= 0


@SETTINGS
@given(
    st.lists(
        st.tuples(st.sampled_from([200, 201, 202, 203, 205, 206]), st.integers(0, 31), st.binary()),
        min_size=1,
        max_size=4,
    )
)
def test_fuzz_rtcp_with_valid_headers(parts: list[tuple[int, int, bytes]]) -> None:
    wire = b""
    for pt, count, body in parts:
        body = body[: len(body) - len(body) % 4]
        wire += struct.pack("!BBH", 0x80 | count, pt, len(body) // 4) + body
    with contextlib.suppress(RtcpError):
        parse_rtcp(wire)

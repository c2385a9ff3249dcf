"""Compound RTCP (RFC 3550, RFC 4585, RFC 5104, REMB): what an SFU reads and writes.

``parse_rtcp`` turns a compound packet into typed frozen dataclasses; types the SFU does not use
are skipped and counted, malformed input raises ``RtcpError``. Each dataclass has ``serialize``;
``build_rtcp`` concatenates them into one compound packet.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "Bye",
    "Fir",
    "FirEntry",
    "Nack",
    "ParsedRtcp",
    "Pli",
    "ReceiverReport",
    "Remb",
    "ReportBlock",
    "RtcpError",
    "RtcpPacket",
    "SenderReport",
    "SourceDescription",
    "build_rtcp",
    "parse_rtcp",
]

SR, RR, SDES, BYE, RTPFB, PSFB = 200, 201, 202, 203, 205, 206
_FMT_NACK, _FMT_PLI, _FMT_FIR, _FMT_AFB = 1, 1, 4, 15
_SDES_CNAME = 1
_REPORT = struct.Struct("!IIIIII")
_II = struct.Struct("!II")


class RtcpError(ValueError):
    """A malformed RTCP packet (remote input), or a value that cannot be encoded (local)."""


def _header(count: int, packet_type: int, body: bytes) -> bytes:
    if len(body) % 4:
        raise RtcpError("RTCP body must be a multiple of 4 bytes")
    return struct.pack("!BBH", 0x80 | count, packet_type, len(body) // 4) + body


def _u32(v: int) -> int:
    if not 0 <= v <= 0xFFFFFFFF:
        raise RtcpError("RTCP field out of range for 32 bits")
    return v


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report block (RFC 3550 section 6.4.1)."""

    ssrc: int
    fraction_lost: int
    packets_lost: int  # cumulative, signed 24 bits
    highest_sequence: int
    jitter: int
    lsr: int
    dlsr: int

    def __post_init__(self) -> None:
        if not 0 <= self.fraction_lost <= 255 or not -(1 << 23) <= self.packets_lost < (1 << 23):
            raise RtcpError("report block field out of range")

    def serialize(self) -> bytes:
        """The 24 wire bytes."""
        lost = (self.fraction_lost << 24) | (self.packets_lost & 0xFFFFFF)
        return _REPORT.pack(
            _u32(self.ssrc),
            lost,
            _u32(self.highest_sequence),
            _u32(self.jitter),
            _u32(self.lsr),
            _u32(self.dlsr),
        )

    @classmethod
    def parse(cls, buf: bytes, off: int) -> ReportBlock:
        """Read the block at ``off`` (the caller checked 24 bytes are there)."""
        ssrc, lost, high, jitter, lsr, dlsr = _REPORT.unpack_from(buf, off)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 1 << 24
        return cls(ssrc, lost >> 24, cumulative, high, jitter, lsr, dlsr)


def _blocks(buf: bytes, off: int, end: int, count: int) -> tuple[ReportBlock, ...]:
    if off + 24 * count > end:
        raise RtcpError("RTCP report blocks run past the packet")
    return tuple(ReportBlock.parse(buf, off + 24 * i) for i in range(count))


def _check_blocks(blocks: tuple[ReportBlock, ...]) -> None:
    if len(blocks) > 31:
        raise RtcpError("at most 31 report blocks per packet")


@dataclass(frozen=True, slots=True)
class SenderReport:
    """SR (PT 200): sender info plus report blocks."""

    ssrc: int
    ntp_timestamp: int  # 64-bit NTP
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    def serialize(self) -> bytes:
        """Wire bytes of this one packet."""
        _check_blocks(self.reports)
        body = struct.pack(
            "!IQIII",
            _u32(self.ssrc),
            self.ntp_timestamp & 0xFFFFFFFFFFFFFFFF,
            _u32(self.rtp_timestamp),
            _u32(self.packet_count),
            _u32(self.octet_count),
        ) + b"".join(r.serialize() for r in self.reports)
        return _header(len(self.reports), SR, body)


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RR (PT 201): report blocks about the sources this receiver hears."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def serialize(self) -> bytes:
        """Wire bytes of this one packet."""
        _check_blocks(self.reports)
        body = struct.pack("!I", _u32(self.ssrc)) + b"".join(r.serialize() for r in self.reports)
        return _header(len(self.reports), RR, body)


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """SDES (PT 202), CNAME items only: ``(ssrc, cname)`` per chunk; other items are skipped."""

    chunks: tuple[tuple[int, str], ...]

    def serialize(self) -> bytes:
        """Wire bytes of this one packet."""
        if len(self.chunks) > 31:
            raise RtcpError("at most 31 SDES chunks per packet")
        body = b""
        for ssrc, cname in self.chunks:
            text = cname.encode()
            if len(text) > 255:
                raise RtcpError("SDES CNAME longer than 255 bytes")
            chunk = struct.pack("!IBB", _u32(ssrc), _SDES_CNAME, len(text)) + text + b"\x00"
            body += chunk + b"\x00" * (-len(chunk) % 4)
        return _header(len(self.chunks), SDES, body)


@dataclass(frozen=True, slots=True)
class Bye:
    """BYE (PT 203): sources leaving, with an optional reason."""

    sources: tuple[int, ...]
    reason: str = ""

    def serialize(self) -> bytes:
        """Wire bytes of this one packet."""
        if len(self.sources) > 31:
            raise RtcpError("at most 31 BYE sources per packet")
        body = b"".join(struct.pack("!I", _u32(s)) for s in self.sources)
        if self.reason:
            text = self.reason.encode()
            if len(text) > 255:
                raise RtcpError("BYE reason longer than 255 bytes")
            body += bytes([len(text)]) + text
            body += b"\x00" * (-len(body) % 4)
        return _header(len(self.sources), BYE, body)


@dataclass(frozen=True, slots=True)
class Nack:
    """Generic NACK (RTPFB FMT 1, RFC 4585 section 6.2.1): the lost sequence numbers."""

    sender_ssrc: int
    media_ssrc: int
    lost: tuple[int, ...]

    def serialize(self) -> bytes:
        """Wire bytes; ``lost`` is packed into PID/BLP pairs (wrapping at 2^16)."""
        fci = bytearray()
        pending = _wrap_order({s & 0xFFFF for s in self.lost})
        while pending:
            pid = pending[0]
            blp = 0
            rest = []
            for s in pending[1:]:
                d = (s - pid) & 0xFFFF
                if 1 <= d <= 16:
                    blp |= 1 << (d - 1)
                else:
                    rest.append(s)
            fci += struct.pack("!HH", pid, blp)
            pending = rest
        body = _II.pack(_u32(self.sender_ssrc), _u32(self.media_ssrc)) + bytes(fci)
        return _header(_FMT_NACK, RTPFB, body)


@dataclass(frozen=True, slots=True)
class Pli:
    """Picture Loss Indication (PSFB FMT 1, RFC 4585 section 6.3.1)."""

    sender_ssrc: int
    media_ssrc: int

    def serialize(self) -> bytes:
        """Wire bytes of this one packet."""
        return _header(_FMT_PLI, PSFB, _II.pack(_u32(self.sender_ssrc), _u32(self.media_ssrc)))


@dataclass(frozen=True, slots=True)
class FirEntry:
    """One FIR request: the SSRC asked for a key frame and the command sequence number."""

    ssrc: int
    sequence: int


@dataclass(frozen=True, slots=True)
class Fir:
    """Full Intra Request (PSFB FMT 4, RFC 5104 section 4.3.1)."""

    sender_ssrc: int
    entries: tuple[FirEntry, ...]

    def serialize(self) -> bytes:
        """Wire bytes; the media SSRC field is 0 as RFC 5104 requires."""
        body = _II.pack(_u32(self.sender_ssrc), 0) + b"".join(
            struct.pack("!IB3x", _u32(e.ssrc), e.sequence & 0xFF) for e in self.entries
        )
        return _header(_FMT_FIR, PSFB, body)


@dataclass(frozen=True, slots=True)
class Remb:
    """Receiver Estimated Max Bitrate (PSFB FMT 15 "REMB", draft-alvestrand-rmcat-remb)."""

    sender_ssrc: int
    bitrate: int  # bits per second, as decoded (mantissa << exponent)
    ssrcs: tuple[int, ...]

    def serialize(self) -> bytes:
        """Wire bytes; the bitrate is rounded down to an 18-bit mantissa and 6-bit exponent."""
        if self.bitrate < 0 or len(self.ssrcs) > 255:
            raise RtcpError("REMB bitrate negative or too many SSRCs")
        mantissa, exp = self.bitrate, 0
        while mantissa >= 1 << 18:
            mantissa >>= 1
            exp += 1
        if exp > 63:
            raise RtcpError("REMB bitrate too large")
        body = (
            _II.pack(_u32(self.sender_ssrc), 0)
            + b"REMB"
            + struct.pack("!BBH", len(self.ssrcs), (exp << 2) | (mantissa >> 16), mantissa & 0xFFFF)
            + b"".join(struct.pack("!I", _u32(s)) for s in self.ssrcs)
        )
        return _header(_FMT_AFB, PSFB, body)


def _wrap_order(values: set[int]) -> list[int]:
    """Sequence numbers in send order: start after the widest circular gap (so 65534, 0, 1)."""
    ordered = sorted(values)
    if len(ordered) < 2:
        return ordered
    gaps = [(ordered[0] + 0x10000 - ordered[-1], 0)]
    gaps += [(ordered[i] - ordered[i - 1], i) for i in range(1, len(ordered))]
    start = max(gaps)[1]
    return ordered[start:] + ordered[:start]


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | Nack | Pli | Fir | Remb


@dataclass(frozen=True, slots=True)
class ParsedRtcp:
    """The packets of one compound RTCP packet the SFU understands, and how many were skipped."""

    packets: tuple[RtcpPacket, ...]
    skipped: int


def build_rtcp(packets: list[RtcpPacket] | tuple[RtcpPacket, ...]) -> bytes:
    """One compound packet from ``packets``, in order."""
    return b"".join(p.serialize() for p in packets)


def parse_rtcp(data: bytes | bytearray | memoryview) -> ParsedRtcp:
    """Parse a compound RTCP packet; raises ``RtcpError`` if any part is malformed."""
    buf = bytes(data)
    n = len(buf)
    if n < 4:
        raise RtcpError("RTCP packet shorter than its header")
    out: list[RtcpPacket] = []
    skipped = 0
    off = 0
    while off < n:
        if off + 4 > n:
            raise RtcpError("RTCP header truncated")
        b0, pt, words = struct.unpack_from("!BBH", buf, off)
        if b0 >> 6 != 2:
            raise RtcpError("RTCP version is not 2")
        end = off + 4 + 4 * words
        if end > n:
            raise RtcpError("RTCP length runs past the datagram")
        body_end = end
        if b0 & 0x20:
            if end != n:
                raise RtcpError("RTCP padding only allowed on the last packet")
            pad = buf[end - 1]
            if pad == 0 or off + 4 + pad > end:
                raise RtcpError("RTCP padding count is invalid")
            body_end = end - pad
        packet = _parse_one(buf, b0 & 0x1F, pt, off + 4, body_end)
        if packet is None:
            skipped += 1
        else:
            out.append(packet)
        off = end
    return ParsedRtcp(tuple(out), skipped)


def _need(off: int, size: int, end: int, what: str) -> None:
    if off + size > end:
        raise RtcpError(f"RTCP {what} truncated")


def _parse_one(buf: bytes, count: int, pt: int, off: int, end: int) -> RtcpPacket | None:
    if pt == SR:
        _need(off, 24, end, "SR")
        ssrc, ntp, rtp_ts, packets, octets = struct.unpack_from("!IQIII", buf, off)
        return SenderReport(ssrc, ntp, rtp_ts, packets, octets, _blocks(buf, off + 24, end, count))
    if pt == RR:
        _need(off, 4, end, "RR")
        (ssrc,) = struct.unpack_from("!I", buf, off)
        return ReceiverReport(ssrc, _blocks(buf, off + 4, end, count))
    if pt == SDES:
        return _parse_sdes(buf, count, off, end)
    if pt == BYE:
        _need(off, 4 * count, end, "BYE")
        sources = struct.unpack_from(f"!{count}I", buf, off)
        reason = ""
        i = off + 4 * count
        if i < end:
            length = buf[i]
            _need(i + 1, length, end, "BYE reason")
            reason = buf[i + 1 : i + 1 + length].decode("utf-8", "replace")
        return Bye(tuple(sources), reason)
    if pt == RTPFB:
        if count != _FMT_NACK:
            return None
        _need(off, 8, end, "NACK")
        sender, media = _II.unpack_from(buf, off)
        if (end - off - 8) % 4:
            raise RtcpError("RTCP NACK FCI is not whole PID/BLP pairs")
        lost: list[int] = []
        for i in range(off + 8, end, 4):
            pid, blp = struct.unpack_from("!HH", buf, i)
            lost.append(pid)
            lost.extend((pid + b + 1) & 0xFFFF for b in range(16) if blp >> b & 1)
        return Nack(sender, media, tuple(lost))
    if pt == PSFB:
        _need(off, 8, end, "feedback")
        sender, media = _II.unpack_from(buf, off)
        if count == _FMT_PLI:
            return Pli(sender, media)
        if count == _FMT_FIR:
            if (end - off - 8) % 8:
                raise RtcpError("RTCP FIR FCI is not whole entries")
            entries = tuple(
                FirEntry(*struct.unpack_from("!IB", buf, i)) for i in range(off + 8, end, 8)
            )
            return Fir(sender, entries)
        if count == _FMT_AFB and buf[off + 8 : off + 12] == b"REMB":
            _need(off, 16, end, "REMB")
            num, b1, low = struct.unpack_from("!BBH", buf, off + 12)
            _need(off + 16, 4 * num, end, "REMB SSRC list")
            bitrate = (((b1 & 0x03) << 16) | low) << (b1 >> 2)
            return Remb(sender, bitrate, struct.unpack_from(f"!{num}I", buf, off + 16))
        return None
    return None


def _parse_sdes(buf: bytes, count: int, off: int, end: int) -> SourceDescription:
    chunks: list[tuple[int, str]] = []
    i = off
    for _ in range(count):
        _need(i, 4, end, "SDES chunk")
        (ssrc,) = struct.unpack_from("!I", buf, i)
        i += 4
        cname: str | None = None
        while True:
            _need(i, 1, end, "SDES item")
            item = buf[i]
            if item == 0:  # end of list, then pad to the next 32-bit boundary
                i += 1
                i += -(i - off) % 4
                break
            _need(i, 2, end, "SDES item")
            length = buf[i + 1]
            _need(i + 2, length, end, "SDES item")
            if item == _SDES_CNAME and cname is None:
                cname = buf[i + 2 : i + 2 + length].decode("utf-8", "replace")
            i += 2 + length
        if cname is not None:
            chunks.append((ssrc, cname))
    return SourceDescription(tuple(chunks))

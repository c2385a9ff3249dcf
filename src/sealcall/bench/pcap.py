"""Packet captures for the network tests: tcpdump in a namespace, its file read back, and the
addresses a packet names (in its IP header, in STUN/TURN address attributes, or as text).

Addresses travel in three forms: the IP header; STUN and TURN attributes (MAPPED-ADDRESS, and
XOR-MAPPED/XOR-PEER/XOR-RELAYED-ADDRESS, XORed with the magic cookie), also nested in a TURN
Data indication's DATA attribute or a ChannelData message; and dotted text (SDP, HTTP bodies).
Encrypted payloads (SRTP, Megolm) cannot be read here: the peers check what they decrypt.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

STUN_MAGIC = 0x2112A442
# STUN/TURN attributes holding an address, and whether it is XORed with the magic cookie.
ADDRESS_ATTRIBUTES = {
    0x0001: False,  # MAPPED-ADDRESS
    0x0012: True,  # XOR-PEER-ADDRESS
    0x0016: True,  # XOR-RELAYED-ADDRESS
    0x0020: True,  # XOR-MAPPED-ADDRESS
    0x8020: True,  # XOR-MAPPED-ADDRESS (pre-RFC 5389 number)
    0x8023: False,  # ALTERNATE-SERVER
    0x802B: False,  # RESPONSE-ORIGIN
    0x802C: False,  # OTHER-ADDRESS
}
DATA_ATTRIBUTE = 0x0013
_LINK_HEADERS = {1: 14, 101: 0, 113: 16, 276: 20}  # Ethernet, raw IP, Linux SLL, SLL2
_DOTTED = re.compile(rb"(?<![\d.])(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})(?![\d])")


class PcapError(ValueError):
    """Not a capture file this reader understands, or a truncated one."""


@dataclass(frozen=True)
class Packet:
    """One captured IPv4 packet: addresses, IP protocol (6 TCP, 17 UDP) and transport payload."""

    source: str
    destination: str
    protocol: int
    payload: bytes


def read_pcap(data: bytes) -> list[Packet]:
    """The IPv4 packets of a classic pcap file (others, such as ARP or IPv6, are skipped)."""
    if len(data) < 24:
        raise PcapError("too short for a pcap header")
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        order = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = ">"
    else:
        raise PcapError("not a pcap file")
    link_type = struct.unpack(order + "I", data[20:24])[0] & 0xFFFF
    if link_type not in _LINK_HEADERS:
        raise PcapError(f"link type {link_type} is not read here")
    skip = _LINK_HEADERS[link_type]
    packets = []
    offset = 24
    while offset < len(data):
        if offset + 16 > len(data):
            raise PcapError("truncated record header")
        captured = struct.unpack(order + "I", data[offset + 8 : offset + 12])[0]
        frame = data[offset + 16 : offset + 16 + captured]
        if len(frame) < captured:
            raise PcapError("truncated record")
        offset += 16 + captured
        if link_type == 1 and frame[12:14] != b"\x08\x00":
            continue  # not IPv4 (ARP, IPv6)
        packet = _ipv4(frame[skip:])
        if packet is not None:
            packets.append(packet)
    return packets


def _ipv4(ip: bytes) -> Packet | None:
    if len(ip) < 20 or ip[0] >> 4 != 4:
        return None
    header = (ip[0] & 0x0F) * 4
    total = min(struct.unpack("!H", ip[2:4])[0], len(ip))
    protocol = ip[9]
    body = ip[header:total]
    if protocol == 17:
        body = body[8:]
    elif protocol == 6 and len(body) >= 20:
        body = body[(body[12] >> 4) * 4 :]
    source, destination = (str(ipaddress.IPv4Address(ip[n : n + 4])) for n in (12, 16))
    return Packet(source, destination, protocol, bytes(body))


def is_stun(payload: bytes) -> bool:
    """True for a STUN message (an ICE connectivity check, a TURN request or answer)."""
    return (
        len(payload) >= 20
        and not payload[0] & 0xC0
        and struct.unpack("!I", payload[4:8])[0] == STUN_MAGIC
    )


def stun_addresses(payload: bytes, depth: int = 0) -> set[str]:
    """The IPv4 addresses a STUN/TURN message (or ChannelData message) names, with those of
    messages nested in it; empty for anything else."""
    if depth > 3 or len(payload) < 4:
        return set()
    if 0x40 <= payload[0] <= 0x7F:  # ChannelData: channel number, length, the peer's datagram
        length = struct.unpack("!H", payload[2:4])[0]
        return stun_addresses(payload[4 : 4 + length], depth + 1)
    if not is_stun(payload):
        return set()
    end = min(20 + struct.unpack("!H", payload[2:4])[0], len(payload))
    found: set[str] = set()
    offset = 20
    while offset + 4 <= end:
        kind, length = struct.unpack("!HH", payload[offset : offset + 4])
        value = payload[offset + 4 : offset + 4 + length]
        offset += 4 + length + (-length % 4)
        if kind == DATA_ATTRIBUTE:
            found |= stun_addresses(value, depth + 1)
        elif kind in ADDRESS_ATTRIBUTES and len(value) >= 8 and value[1] == 0x01:
            raw = struct.unpack("!I", value[4:8])[0]
            if ADDRESS_ATTRIBUTES[kind]:
                raw ^= STUN_MAGIC
            found.add(str(ipaddress.IPv4Address(raw)))
    return found


def named_addresses(packet: Packet) -> set[str]:
    """Every IPv4 address ``packet`` names: its header's, its STUN/TURN attributes', and dotted
    text in its payload."""
    found = {packet.source, packet.destination} | stun_addresses(packet.payload)
    for match in _DOTTED.findall(packet.payload):
        with contextlib.suppress(ValueError):
            found.add(str(ipaddress.IPv4Address(match.decode())))
    return found


class Capture:
    """tcpdump on ``interface``, run under ``exec_prefix`` (a namespace), writing ``path``."""

    def __init__(self, exec_prefix: Sequence[str], interface: str, path: Path) -> None:
        self.exec_prefix = list(exec_prefix)
        self.interface = interface
        self.path = path
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> Capture:
        """Start capturing; return once tcpdump listens. (Immediate mode: packets are not held
        in the kernel's buffer blocks, which tcpdump would lose when it is stopped.)"""
        self._process = await asyncio.create_subprocess_exec(
            *self.exec_prefix,
            "tcpdump", "-n", "-U", "--immediate-mode", "-Z", "root",
            "-i", self.interface, "-w", str(self.path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self._process.stderr is not None
        line = await asyncio.wait_for(self._process.stderr.readline(), 20)
        if b"listening on" not in line:
            await self._process.wait()
            raise RuntimeError(f"tcpdump did not start: {line.decode(errors='replace').strip()}")
        return self

    async def stop(self) -> list[Packet]:
        """Stop capturing; the packets captured."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            await process.wait()
        return read_pcap(self.path.read_bytes())

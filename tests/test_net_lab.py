"""The network lab itself: its router's packet model, the capture reader, and the namespaces
(A and B reach S, reach each other only in direct mode, lose their link in an outage)."""

import contextlib
import ipaddress
import socket
import struct
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealcall.bench.impair import Impairment
from sealcall.bench.lab_router import Link, packet_fate
from sealcall.bench.netlab import NetworkLab, in_namespace
from sealcall.bench.netns import NetnsUnavailableError
from sealcall.bench.pcap import (
    STUN_MAGIC,
    Packet,
    PcapError,
    is_stun,
    named_addresses,
    read_pcap,
    stun_addresses,
)

A_NET, B_NET = ipaddress.IPv4Network("10.9.0.0/30"), ipaddress.IPv4Network("10.9.0.4/30")


def ip_packet(source: str, destination: str, payload: bytes = b"", protocol: int = 17) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(payload), 0, 0, 64, protocol, 0,
        ipaddress.IPv4Address(source).packed, ipaddress.IPv4Address(destination).packed,
    )  # fmt: skip
    return header + struct.pack("!HHHH", 1000, 2000, 8 + len(payload), 0) + payload


def links() -> dict[str, Link]:
    return {"a": Link(A_NET), "b": Link(B_NET)}


def test_a_packet_crosses_the_senders_uplink_then_the_receivers_downlink() -> None:
    lab = links()
    lab["a"].up.impairment = Impairment(delay_ms=30)
    lab["b"].down.impairment = Impairment(delay_ms=20)
    assert packet_fate(ip_packet("10.9.0.2", "10.9.0.6"), lab, 1.0) == pytest.approx(1.05)
    # To the server (on no host link): only A's uplink.
    assert packet_fate(ip_packet("10.9.0.2", "10.9.9.9"), lab, 1.0) == pytest.approx(1.03)
    assert packet_fate(ip_packet("10.9.9.9", "10.9.0.2"), lab, 1.0) == 1.0
    lab["b"].down.outage = True
    assert packet_fate(ip_packet("10.9.0.2", "10.9.0.6"), lab, 1.0) is None
    assert (lab["a"].up.passed, lab["b"].down.dropped) == (3, 1)
    # What the router cannot read passes unimpaired (never raises).
    assert packet_fate(b"\x60" + bytes(39), lab, 2.0) == 2.0


def test_a_protocol_blocked_on_a_link_is_dropped_both_ways_and_counted() -> None:
    lab = links()
    lab["a"].blocked_protocols = frozenset({17})
    assert packet_fate(ip_packet("10.9.0.2", "10.9.9.9"), lab, 1.0) is None
    assert packet_fate(ip_packet("10.9.9.9", "10.9.0.2"), lab, 1.0) is None
    assert packet_fate(ip_packet("10.9.0.2", "10.9.9.9", protocol=6), lab, 1.0) == 1.0
    assert packet_fate(ip_packet("10.9.0.6", "10.9.9.9"), lab, 1.0) == 1.0  # B's link: open
    assert lab["a"].filtered == 2


def stun(kind: int, attributes: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack("!HH", t, len(v)) + v + bytes(-len(v) % 4) for t, v in attributes)
    return struct.pack("!HHI", kind, len(body), STUN_MAGIC) + bytes(12) + body


def xor_address(address: str, port: int = 5000) -> bytes:
    raw = int(ipaddress.IPv4Address(address)) ^ STUN_MAGIC
    return struct.pack("!BBHI", 0, 1, port ^ (STUN_MAGIC >> 16), raw)


def pcap(*frames: bytes) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for frame in frames:
        out += struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame
    return out


def ethernet(ip: bytes, kind: bytes = b"\x08\x00") -> bytes:
    return bytes(12) + kind + ip


def test_a_capture_names_the_addresses_in_headers_stun_attributes_and_text() -> None:
    # A TURN Data indication whose peer (XOR-PEER-ADDRESS) is 10.1.1.1, carrying the peer's
    # Binding response that tells its XOR-MAPPED-ADDRESS 10.2.2.2.
    inner = stun(0x0101, [(0x0020, xor_address("10.2.2.2"))])
    indication = stun(0x0017, [(0x0012, xor_address("10.1.1.1")), (0x0013, inner)])
    channel = struct.pack("!HH", 0x4000, len(inner)) + inner
    data = pcap(
        ethernet(ip_packet("10.0.0.1", "10.0.0.2", indication)),
        ethernet(b"arp", kind=b"\x08\x06"),
        ethernet(ip_packet("10.0.0.1", "10.0.0.2", channel)),
        ethernet(ip_packet("10.0.0.1", "10.0.0.2", b"c=IN IP4 10.3.3.3\r\n10.3.3.30")),
    )
    first, second, third = read_pcap(data)
    assert is_stun(first.payload)
    assert stun_addresses(first.payload) == {"10.1.1.1", "10.2.2.2"}
    assert stun_addresses(second.payload) == {"10.2.2.2"}
    assert named_addresses(third) == {"10.0.0.1", "10.0.0.2", "10.3.3.3", "10.3.3.30"}
    with pytest.raises(PcapError):
        read_pcap(data[:-3])


@given(st.binary(max_size=300))
def test_hostile_captures_and_payloads_raise_only_a_pcap_error(data: bytes) -> None:
    with contextlib.suppress(PcapError):
        read_pcap(pcap(data) if data[:1] == b"\x00" else data)
    stun_addresses(data)
    named_addresses(Packet("10.0.0.1", "10.0.0.2", 17, data))


@given(st.binary(max_size=200))
def test_hostile_packets_never_stop_the_router(data: bytes) -> None:
    fate = packet_fate(data, links(), 5.0)
    assert fate is None or fate >= 5.0


def udp_socket(lab: NetworkLab, host: str) -> socket.socket:
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((lab.address(host), 0))
        sock.settimeout(2.0)
        return sock

    return in_namespace(lab.namespace(host), make)


def reaches(source: socket.socket, destination: socket.socket) -> bool:
    source.sendto(b"probe", destination.getsockname())
    try:
        return destination.recv(16) == b"probe"
    except TimeoutError:
        return False


def test_hosts_reach_the_server_and_each_other_only_in_direct_mode() -> None:
    try:
        lab = NetworkLab().create()
    except NetnsUnavailableError as error:
        pytest.skip(f"the network tests need network namespaces: {error}")
    try:
        a, b, s = (udp_socket(lab, host) for host in "abs")
        assert reaches(a, s)
        assert reaches(s, b)
        assert not reaches(a, b)
        lab.set_direct(True)
        assert reaches(a, b)
        assert reaches(b, a)
        lab.set_outage("a", True)
        assert not reaches(a, s)
        assert not reaches(s, a)
        lab.set_outage("a", False)
        assert reaches(s, a)
        for sock in (a, b, s):
            sock.close()
    finally:
        lab.delete()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert lab.namespace("a") not in listed.stdout
    assert (
        lab.management_interface
        not in subprocess.run(
            ["ip", "-o", "link"], capture_output=True, text=True, check=True
        ).stdout
    )


def test_a_new_lab_removes_the_namespaces_a_dead_process_left() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"sealcall-lab-{dead.pid}-0-r"
    try:
        subprocess.run(["ip", "netns", "add", stale], check=True, capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as error:
        pytest.skip(f"the network tests need network namespaces: {error}")
    with NetworkLab():
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert stale not in listed

"""Hosts A and B in namespaces that cannot route to each other: a call between them connects
only through coturn, and a capture on A's link shows nothing from B."""

import pytest

from net_helpers import decoded, lab_call, lab_fixture, relayed, sample_until
from sealcall.bench.net_call import LabServers
from sealcall.bench.netlab import INTERFACE
from sealcall.bench.pcap import Capture, is_stun

pytestmark = pytest.mark.asyncio(loop_scope="module")

servers = lab_fixture()
UDP = 17  # IP protocol number


async def test_a_call_between_hosts_that_cannot_reach_each_other_goes_through_turn(
    servers: LabServers, tmp_path: pytest.TempPathFactory
) -> None:
    lab = servers.lab
    a, b, s = lab.address("a"), lab.address("b"), lab.address("s")
    capture = await Capture(lab.exec_prefix("a"), INTERFACE, tmp_path / "a.pcap").start()
    async with lab_call(servers) as (peer_a, peer_b):
        media = lambda sample: decoded(sample, "video") >= 10 and decoded(sample, "audio") >= 10  # noqa: E731
        seen_a = await sample_until(peer_a, media, 30, "media")
        seen_b = await sample_until(peer_b, media, 30, "media")
    packets = await capture.stop()

    assert relayed(seen_a)
    assert relayed(seen_b)
    assert seen_a["pair"]["remote_address"] in (s, b)
    assert seen_b["pair"]["remote_address"] in (s, a)
    # Nothing from B ever reached A; all A sent toward B's address were ICE checks, which the
    # router dropped. The media A received (and more: headers, audio) came from the TURN server.
    assert not [p for p in packets if p.source == b]
    toward_b = [p for p in packets if p.destination == b]
    assert all(is_stun(p.payload) for p in toward_b)
    from_turn = sum(len(p.payload) for p in packets if p.source == s and p.protocol == 17)
    assert from_turn > seen_a["kinds"]["video"]["bytes"] > 0
    # Without relay-only, each side learns the other's host address from the call events it
    # decrypts (which is what relay-only prevents: tests/test_net_privacy.py).
    assert seen_b["forbidden"]
    assert seen_a["forbidden"]


async def test_a_relay_only_call_from_a_host_without_udp_goes_over_turn_tcp(
    servers: LabServers,
) -> None:
    # A firewall on A's link lets only TCP through; the peers get the URIs as the homeserver
    # lists them (UDP first), which aiortc alone would use only the first of.
    lab = servers.lab
    lab.block_protocol("a", UDP)
    try:
        async with lab_call(servers, relay_only=True, turn="all") as (peer_a, peer_b):
            media = lambda s: decoded(s, "video") >= 10 and decoded(s, "audio") >= 10  # noqa: E731
            seen_a = await sample_until(peer_a, media, 30, "media")
            seen_b = await sample_until(peer_b, media, 30, "media")
    finally:
        lab.block_protocol("a", UDP, blocked=False)
    assert seen_a["pair"]["local"] == "relay"
    assert seen_b["pair"]["local"] == "relay"
    assert lab.counters()["a"]["filtered"] > 0  # A did try UDP (the probe), and lost it

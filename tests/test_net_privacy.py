"""Relay-only calls across the lab: nothing B receives names A's address (neither the call
events it decrypts nor any packet on its link, STUN/TURN attributes included), and A never
exchanges a packet with B's address."""

import pytest

from net_helpers import decoded, lab_call, lab_fixture, sample_until
from sealcall.bench.net_call import LabServers
from sealcall.bench.netlab import INTERFACE
from sealcall.bench.pcap import Capture, named_addresses

pytestmark = pytest.mark.asyncio(loop_scope="module")

servers = lab_fixture()


async def test_in_a_relay_only_call_nothing_b_receives_names_a(
    servers: LabServers, tmp_path: pytest.TempPathFactory
) -> None:
    lab = servers.lab
    a, b = lab.address("a"), lab.address("b")
    on_a = await Capture(lab.exec_prefix("a"), INTERFACE, tmp_path / "a.pcap").start()
    on_b = await Capture(lab.exec_prefix("b"), INTERFACE, tmp_path / "b.pcap").start()
    async with lab_call(servers, relay_only=True) as (peer_a, peer_b):
        media = lambda s: decoded(s, "video") >= 10 and decoded(s, "audio") >= 10  # noqa: E731
        seen_a = await sample_until(peer_a, media, 30, "media")
        seen_b = await sample_until(peer_b, media, 30, "media")
    packets_a, packets_b = await on_a.stop(), await on_b.stop()

    assert seen_a["pair"]["local"] == "relay"
    assert seen_b["pair"]["local"] == "relay"
    # The call events each side decrypted (invite, answer, candidates) never name the other.
    assert seen_b["call_events"] > 0
    assert seen_b["forbidden"] == {}
    assert seen_a["forbidden"] == {}
    received_by_b = [p for p in packets_b if p.destination == b]
    assert received_by_b
    assert not [p for p in received_by_b if a in named_addresses(p)]
    assert not [p for p in packets_a if b in (p.source, p.destination)]


async def test_a_relay_only_call_over_turn_tcp_crosses_the_router_in_tcp_only(
    servers: LabServers, tmp_path: pytest.TempPathFactory
) -> None:
    lab = servers.lab
    on_a = await Capture(lab.exec_prefix("a"), INTERFACE, tmp_path / "a.pcap").start()
    async with lab_call(servers, relay_only=True, turn="tcp") as (peer_a, peer_b):
        media = lambda s: decoded(s, "video") >= 10 and decoded(s, "audio") >= 10  # noqa: E731
        seen_a = await sample_until(peer_a, media, 30, "media")
        await sample_until(peer_b, media, 30, "media")
    packets = await on_a.stop()
    assert seen_a["pair"]["local"] == "relay"
    # Signaling (HTTP) and media (TURN) alike went over TCP, all of it to the server.
    assert not [p for p in packets if p.protocol == 17]
    assert {p.destination for p in packets if p.source == lab.address("a")} == {lab.address("s")}
    received = sum(len(p.payload) for p in packets if p.source == lab.address("s"))
    assert received > seen_a["kinds"]["video"]["bytes"] > 0

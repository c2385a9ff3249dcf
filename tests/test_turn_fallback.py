"""TURN over TCP where UDP does not reach the TURN server (sealcall.media.turn_fallback).

aiortc gives aioice only the first TURN URI; homeservers list UDP first. Here the UDP URI points
at a loopback port where nothing answers (UDP "blocked"), the TCP one at a real coturn.
"""

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from aioice import stun
from aiortc import RTCIceServer
from hypothesis import given
from hypothesis import strategies as st

from sealcall.homeserver import free_port
from sealcall.media import PeerConnection, negotiate
from sealcall.media.turn_fallback import (
    ReachabilityCache,
    TurnChoice,
    reachable_over_udp,
    turn_choices,
    udp_reaches,
)
from sealcall.turn import TurnServer, turn_credentials

from conftest import LOOPBACK, TURN_RELAY_IP
from media_helpers import Endpoint, until

in_module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def turn(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TurnServer]:
    server = TurnServer(
        tmp_path_factory.mktemp("turn"), relay_ips=[TURN_RELAY_IP], allowed_peer_networks=LOOPBACK
    )
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def silent_udp() -> Iterator[tuple[str, int]]:
    """A bound UDP port that never answers (a firewall that drops, not one that refuses)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()


def homeserver_entry(turn: TurnServer, udp_port: int) -> RTCIceServer:
    """The URIs as a homeserver gives them (UDP first), the UDP one at ``udp_port``."""
    credentials = turn_credentials(turn.secret, "@alice:localhost", 3600, time.time())
    return RTCIceServer(
        urls=[
            f"turn:127.0.0.1:{udp_port}?transport=udp",
            f"turn:127.0.0.1:{turn.port}?transport=tcp",
        ],
        username=credentials.username,
        credential=credentials.password,
    )


def gathered(endpoint: Endpoint) -> Any:
    return endpoint.pc.getTransceivers()[0].receiver.transport.transport.iceGatherer._connection


async def relay_only_pair(server: RTCIceServer) -> tuple[Endpoint, Endpoint]:
    a = Endpoint(PeerConnection(ice_servers=[server], relay_only=True))
    b = Endpoint(PeerConnection(ice_servers=[server], relay_only=True))
    a.pc.addTransceiver("audio")
    await negotiate(a.pc, b.pc)
    return a, b


@in_module_loop
async def test_the_probe_hears_coturn_over_udp_and_nothing_from_dead_or_silent_ports(
    turn: TurnServer, silent_udp: tuple[str, int]
) -> None:
    assert turn.port is not None
    assert await udp_reaches(("127.0.0.1", turn.port))
    assert not await udp_reaches(("127.0.0.1", free_port()))  # refused at once
    assert not await udp_reaches(silent_udp, timeout=0.3)


class _Answering(asyncio.DatagramProtocol):
    """Answers every datagram with ``reply(request)``."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(self.reply(data), addr)


async def answering_server(reply: Any) -> tuple[Any, tuple[str, int]]:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Answering(reply), local_addr=("127.0.0.1", 0)
    )
    return transport, transport.get_extra_info("sockname")


@in_module_loop
async def test_only_a_stun_answer_to_our_own_request_counts() -> None:
    def stun_answer(data: bytes, transaction: bytes | None = None) -> bytes:
        request = stun.parse_message(data)
        return bytes(
            stun.Message(
                stun.Method.ALLOCATE,
                stun.Class.ERROR,
                transaction_id=transaction or request.transaction_id,
            )
        )

    garbage, at_garbage = await answering_server(lambda data: b"\x00\x01" + data[::-1])
    stranger, at_stranger = await answering_server(lambda data: stun_answer(data, b"x" * 12))
    server, at_server = await answering_server(stun_answer)
    try:
        assert not await udp_reaches(at_garbage, timeout=0.3)
        assert not await udp_reaches(at_stranger, timeout=0.3)
        assert await udp_reaches(at_server, timeout=0.3)
    finally:
        for transport in (garbage, stranger, server):
            transport.close()


@in_module_loop
async def test_answers_are_remembered_per_address_until_they_expire() -> None:
    now = [0.0]
    cache = ReachabilityCache(ttl=60.0, size=2, clock=lambda: now[0])
    dead = ("127.0.0.1", free_port())
    cache.put(dead, True)
    assert await reachable_over_udp(dead, cache)  # remembered: not asked again
    now[0] = 61.0
    assert cache.get(dead) is None
    assert not await reachable_over_udp(dead, cache)  # asked again, and remembered
    assert cache.get(dead) is False
    cache.put(("127.0.0.1", 1), True)
    cache.put(("127.0.0.1", 2), True)
    assert cache.get(dead) is None  # bounded: the oldest went


def test_turn_choices_keep_the_order_and_only_what_aioice_can_use() -> None:
    server = RTCIceServer(
        urls=[
            "stun:example.org",
            "turn:turn.example.org?transport=udp",
            "turn:turn.example.org:3479?transport=tcp",
            "turn:turn.example.org?transport=sctp",
            "turns:turn.example.org:5349?transport=tcp",
            "not a uri",
        ],
        username="u",
        credential="p",
    )
    assert turn_choices([server]) == [
        TurnChoice(("turn.example.org", 3478), "udp", False, "u", "p"),
        TurnChoice(("turn.example.org", 3479), "tcp", False, "u", "p"),
        TurnChoice(("turn.example.org", 5349), "tcp", True, "u", "p"),
    ]
    oauth = RTCIceServer(urls="turn:t.example.org", username="u", credentialType="oauth")
    assert turn_choices([oauth]) == []


@given(st.lists(st.text(max_size=60), max_size=5))
def test_turn_choices_never_raise_on_any_uri(urls: list[str]) -> None:
    for choice in turn_choices([RTCIceServer(urls=urls, username="u", credential="p")]):
        assert choice.transport in ("udp", "tcp")


@in_module_loop
async def test_relay_only_call_connects_over_turn_tcp_when_udp_does_not_reach(
    turn: TurnServer,
) -> None:
    a, b = await relay_only_pair(homeserver_entry(turn, free_port()))
    try:
        await until(lambda: "connected" == a.pc.connectionState == b.pc.connectionState, 10)
        for side in (a, b):
            connection = gathered(side)
            assert connection.turn_transport == "tcp"
            assert {c.type for c in connection.local_candidates} == {"relay"}
            assert connection._nominated[1].local_candidate.host == TURN_RELAY_IP
    finally:
        await a.close()
        await b.close()


@in_module_loop
async def test_turn_over_udp_stays_where_it_reaches(turn: TurnServer) -> None:
    assert turn.port is not None
    a, b = await relay_only_pair(homeserver_entry(turn, turn.port))
    try:
        await until(lambda: "connected" == a.pc.connectionState == b.pc.connectionState, 10)
        assert gathered(a).turn_transport == gathered(b).turn_transport == "udp"
    finally:
        await a.close()
        await b.close()

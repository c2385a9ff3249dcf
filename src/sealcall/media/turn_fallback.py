"""TURN over TCP when UDP does not reach the TURN server.

aiortc gives aioice only the first usable ``turn:``/``turns:`` URI of the ICE servers (aioice
holds one TURN server per connection), and homeservers list ``?transport=udp`` first. On a
network that lets only TCP out (many corporate firewalls) that allocation is never answered and
the call has no relay candidate; browsers try every URI. So before an ICE connection gathers with
TURN over UDP while a TCP (or TLS) URI is also offered, :func:`prefer_reachable_turn` asks whether
the TURN server answers over UDP at all, and gathers over the TCP URI if it does not.

The question is one unauthenticated TURN Allocate request (RFC 8656), which every TURN server
answers with 401: no allocation is made and no credentials are needed, so the answer holds for
the server's address whatever credentials a call gets. It is remembered per address for
:data:`PROBE_TTL` seconds (credentials are fetched again for every call, so a cache per
credential set would probe every call): in the normal case the first call pays one round trip
to the TURN server, later calls nothing. Where UDP is blocked the first call waits
:data:`PROBE_TIMEOUT` once (an ICMP "port unreachable" ends the wait at once) instead of every
call losing its relay.
"""

import asyncio
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aioice import stun
from aiortc import RTCIceServer, RTCRtpTransceiver
from aiortc.rtcicetransport import parse_stun_turn_uri

logger = logging.getLogger(__name__)

PROBE_TIMEOUT = 1.0  # seconds without any answer: UDP does not reach the TURN server
PROBE_INTERVAL = 0.25  # the request is sent again this often while no answer came
PROBE_TTL = 120.0  # seconds an answer is remembered (a laptop may change networks)
MAX_REMEMBERED = 32  # TURN server addresses remembered (bounded memory)
_REQUESTED_TRANSPORT_UDP = 0x11000000  # RFC 8656 REQUESTED-TRANSPORT: UDP (17) << 24

Address = tuple[str, int]


@dataclass(frozen=True)
class TurnChoice:
    """One TURN URI that aiortc could hand to aioice, with its server's credentials."""

    server: Address
    transport: str  # "udp" or "tcp"
    ssl: bool
    username: str | None
    password: str | None


def turn_choices(servers: Sequence[RTCIceServer]) -> list[TurnChoice]:
    """Every TURN URI of ``servers`` aioice can use, in order (what aiortc's
    ``connection_kwargs`` accepts: ``turn:`` over UDP or TCP, ``turns:`` over TCP, passwords)."""
    choices: list[TurnChoice] = []
    for server in servers:
        if server.credentialType != "password":
            continue
        for uri in server.urls if isinstance(server.urls, list) else [server.urls]:
            try:
                parsed = parse_stun_turn_uri(str(uri))
            except ValueError:
                continue
            scheme, transport = parsed["scheme"], parsed.get("transport")
            if (scheme == "turn" and transport in ("udp", "tcp")) or (
                scheme == "turns" and transport == "tcp"
            ):
                choices.append(
                    TurnChoice(
                        (str(parsed["host"]), int(parsed["port"])),
                        str(transport),
                        scheme == "turns",
                        server.username,
                        server.credential if isinstance(server.credential, str) else None,
                    )
                )
    return choices


class ReachabilityCache:
    """Whether UDP reached each TURN server address, remembered for ``ttl`` seconds."""

    def __init__(
        self,
        ttl: float = PROBE_TTL,
        size: int = MAX_REMEMBERED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._answers: OrderedDict[Address, tuple[float, bool]] = OrderedDict()

    def get(self, address: Address) -> bool | None:
        """The remembered answer for ``address``, or None (never asked, or too long ago)."""
        found = self._answers.get(address)
        if found is None or found[0] <= self._clock():
            self._answers.pop(address, None)
            return None
        return found[1]

    def put(self, address: Address, reachable: bool) -> None:
        """Remember an answer (the oldest one goes when ``size`` are held)."""
        self._answers.pop(address, None)
        self._answers[address] = (self._clock() + self.ttl, reachable)
        while len(self._answers) > self.size:
            self._answers.popitem(last=False)


REACHABILITY = ReachabilityCache()
"""The process's answers: every connection asks the same networks."""


class _Probe(asyncio.DatagramProtocol):
    def __init__(self, transaction_id: bytes, answer: "asyncio.Future[bool]") -> None:
        self.transaction_id = transaction_id
        self.answer = answer

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            message = stun.parse_message(data)
        except ValueError:
            return  # not STUN: not an answer (a stray or hostile datagram)
        if message.transaction_id == self.transaction_id and not self.answer.done():
            self.answer.set_result(True)

    def error_received(self, exc: Exception) -> None:
        # ICMP port/host unreachable on the connected socket: nothing will answer.
        if not self.answer.done():
            self.answer.set_result(False)


async def udp_reaches(
    server: Address, *, timeout: float = PROBE_TIMEOUT, interval: float = PROBE_INTERVAL
) -> bool:
    """Whether the TURN server at ``server`` answers an Allocate request over UDP (any STUN
    answer with our transaction counts, the expected 401 included) within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bool] = loop.create_future()
    request = stun.Message(
        message_method=stun.Method.ALLOCATE,
        message_class=stun.Class.REQUEST,
        transaction_id=os.urandom(12),
    )
    request.attributes["REQUESTED-TRANSPORT"] = _REQUESTED_TRANSPORT_UDP
    try:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Probe(request.transaction_id, answer), remote_addr=server
        )
    except OSError:
        return False  # no route, or a name that does not resolve
    try:
        deadline = loop.time() + timeout
        while not answer.done() and loop.time() < deadline:
            transport.sendto(bytes(request))
            wait = min(interval, deadline - loop.time())
            await asyncio.wait([answer], timeout=max(wait, 0.0))
        return answer.done() and answer.result()
    finally:
        transport.close()


async def reachable_over_udp(
    server: Address, cache: ReachabilityCache = REACHABILITY, *, timeout: float = PROBE_TIMEOUT
) -> bool:
    """:func:`udp_reaches`, answered from ``cache`` while it remembers ``server``."""
    known = cache.get(server)
    if known is None:
        known = await udp_reaches(server, timeout=timeout)
        cache.put(server, known)
    return known


def prefer_reachable_turn(
    transceiver: RTCRtpTransceiver,
    servers: Sequence[RTCIceServer],
    cache: ReachabilityCache = REACHABILITY,
) -> None:
    """Before this transceiver's ICE connection gathers with TURN over UDP, switch it to the
    first TCP/TLS TURN URI of ``servers`` if UDP does not reach the TURN server."""
    connection: Any = transceiver.receiver.transport.transport.iceGatherer._connection
    if getattr(connection, "_sealcall_turn_fallback", False):
        return  # bundled transceivers share one transport
    connection._sealcall_turn_fallback = True
    fallback = next((c for c in turn_choices(servers) if c.transport == "tcp"), None)
    if connection.turn_server is None or connection.turn_transport != "udp" or fallback is None:
        return
    gather = connection.gather_candidates

    async def gather_over_a_reachable_transport() -> None:
        started = connection._local_candidates_start
        if not started and not await reachable_over_udp(connection.turn_server, cache):
            logger.info("TURN over UDP does not reach the server: gathering over TCP")
            connection.turn_server = fallback.server
            connection.turn_transport = fallback.transport
            connection.turn_ssl = fallback.ssl
            connection.turn_username = fallback.username
            connection.turn_password = fallback.password
        await gather()

    connection.gather_candidates = gather_over_a_reachable_transport

"""The network lab for tests: one per test module (namespaces, coturn and Synapse in S), and
calls between peers in its hosts A and B."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from sealcall.bench.net_call import LabPeer, LabServers, connect_call
from sealcall.bench.netns import NetnsUnavailableError


def lab_fixture() -> Any:
    """A module-scoped fixture: the lab's servers (skips only where namespaces are refused)."""

    @pytest_asyncio.fixture(loop_scope="module", scope="module")
    async def servers(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LabServers]:
        lab = LabServers(tmp_path_factory.mktemp("netlab"))
        try:
            await lab.start()
        except NetnsUnavailableError as error:
            pytest.skip(f"the network tests need network namespaces: {error}")
        yield lab
        await lab.stop()

    return servers


@contextlib.asynccontextmanager
async def lab_call(
    servers: LabServers,
    *,
    relay_only: bool = False,
    turn: str = "udp",
    ice_timeout: float = 10.0,
    reconnect_timeout: float | None = None,
    fps: float = 15.0,
) -> AsyncIterator[tuple[LabPeer, LabPeer]]:
    """A connected video call from a peer in A to one in B; each peer counts the call events
    naming the other host's address."""
    lab = servers.lab
    peers: list[LabPeer] = []
    try:
        for host, other in (("a", "b"), ("b", "a")):
            peer = LabPeer(
                servers,
                host,
                await servers.register(f"net{host}"),
                relay_only=relay_only,
                turn=turn,
                forbid=[lab.address(other)],
                ice_timeout=ice_timeout,
                reconnect_timeout=reconnect_timeout,
                fps=fps,
            )
            peers.append(peer)
            await peer.start()
        await connect_call(peers[0], peers[1])
        yield peers[0], peers[1]
    finally:
        for peer in peers:
            await peer.stop()


async def sample_until(
    peer: LabPeer, condition: Callable[[dict[str, Any]], bool], timeout: float, what: str
) -> dict[str, Any]:
    """The peer's first sample that meets ``condition`` (asked every 0.2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        sample = await peer.sample()
        if condition(sample):
            return sample
        if time.monotonic() > deadline:
            raise TimeoutError(f"the peer in {peer.host} never reported {what}: {sample}")
        await asyncio.sleep(0.2)


def decoded(sample: dict[str, Any], kind: str) -> int:
    """Frames of ``kind`` decoded so far."""
    return int(sample["kinds"].get(kind, {}).get("decoded", 0))


def relayed(sample: dict[str, Any]) -> bool:
    """True if the media's candidate pair has a TURN relay at one end."""
    pair = sample["pair"] or {}
    return "relay" in (pair.get("local"), pair.get("remote"))

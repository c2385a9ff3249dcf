"""Host A's link goes down mid-call: after 15 s it comes back and the call recovers by itself
(reconnecting, then connected, never ended); a path that never comes back ends the call with
``ice_timeout`` from reconnecting (the deadline itself: test_call_reconnect.py)."""

import asyncio
import time

import pytest

from net_helpers import decoded, lab_call, lab_fixture, sample_until
from sealcall.bench.net_call import LabServers

pytestmark = pytest.mark.asyncio(loop_scope="module")

servers = lab_fixture()


async def test_a_call_recovers_by_itself_after_a_15_second_outage(servers: LabServers) -> None:
    lab = servers.lab
    async with lab_call(servers, reconnect_timeout=25.0) as (a, b):
        for peer in (a, b):
            await sample_until(peer, lambda s: decoded(s, "video") >= 5, 30, "video")
        start = len(a.lines), len(b.lines)
        lab.set_outage("a", True)
        cut = time.monotonic()
        try:
            await a.wait_state("reconnecting", 15, start[0])
            await b.wait_state("reconnecting", 15, start[1])
            await asyncio.sleep(max(0.0, cut + 15 - time.monotonic()))
        finally:
            lab.set_outage("a", False)
        await a.wait_state("connected", 30, start[0])
        await b.wait_state("connected", 30, start[1])
        before = [decoded(await peer.sample(), "video") for peer in (a, b)]
        for peer, count in zip((a, b), before, strict=True):
            await sample_until(peer, lambda s, c=count: decoded(s, "video") > c + 5, 20, "video")
        assert a.ended() is None
        assert b.ended() is None


async def test_a_path_that_never_returns_ends_with_ice_timeout_after_the_deadline(
    servers: LabServers,
) -> None:
    lab = servers.lab
    deadline = 4.0
    async with lab_call(servers, reconnect_timeout=deadline) as (a, b):
        for peer in (a, b):
            await sample_until(peer, lambda s: decoded(s, "video") >= 5, 30, "video")
        start = len(a.lines), len(b.lines)
        lab.set_outage("a", True)
        try:
            for peer, first in zip((a, b), start, strict=True):
                await peer.wait_state("reconnecting", 20, first)
                ended = await peer.wait(lambda line: "ended" in line, 30, "the end", first)
                assert ended["ended"] == "ice_timeout"
                # Reconnecting, then ended, never back to connected in between (that the
                # deadline is kept is the sans-I/O test's, test_call_reconnect.py: no clocks).
                after = peer.lines[first:]
                states = [line["state"] for line in after[: after.index(ended)] if "state" in line]
                assert states[-1:] == ["reconnecting"] or states[-2:] == ["reconnecting", "ended"]
                assert "connected" not in states[states.index("reconnecting") :]
        finally:
            lab.set_outage("a", False)

"""ICE consent (RFC 7675) on a busy machine: a peer whose answers are late but within the consent
window keeps the call; one that stops answering still loses it. Real aiortc over loopback."""

import asyncio
from typing import Any

import aioice.ice
import pytest
from aioice import stun

from sealcall.bench.impair import Impairer, impair_connection

from media_helpers import av_call, connect, until


def ice_connection(endpoint: Any) -> Any:
    transceiver = endpoint.pc.getTransceivers()[0]
    return transceiver.receiver.transport.transport.iceGatherer._connection


def answer_checks_late(connection: Any, delay: float) -> list[int]:
    """Make ``connection`` answer every STUN binding request ``delay`` seconds late, as an event
    loop busy for that long would; returns a list that grows by one per late answer sent."""
    answered: list[int] = []
    loop = asyncio.get_running_loop()
    for protocol in connection._protocols:
        send = protocol.send_stun

        def late(message: stun.Message, addr: Any, send: Any = send) -> None:
            if message.message_class == stun.Class.RESPONSE:
                loop.call_later(delay, lambda: (answered.append(1), send(message, addr)))
            else:
                send(message, addr)

        protocol.send_stun = late
    return answered


async def test_late_consent_answers_within_the_window_keep_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A consent window of 2 s (checks every 0.5 s, 4 of them); answers come 0.8 s late, past
    # aioice's single 0.5 s try, which alone would close the connection after ~4 s.
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.5)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 4)
    a, b = av_call()
    try:
        await connect(a, b)
        answered = answer_checks_late(ice_connection(b), 0.8)
        await until(lambda: len(answered) >= 10 or a.pc.connectionState != "connected", 30)
        assert a.pc.connectionState == "connected"
        assert len(answered) >= 10
        frames = b.counter("video").frames  # and media still flows
        await until(lambda: b.counter("video").frames > frames + 5)
    finally:
        await a.close()
        await b.close()


async def test_a_peer_that_stops_answering_loses_consent_after_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 3)
    a, b = av_call()
    try:
        await connect(a, b)
        for protocol in ice_connection(b)._protocols:
            protocol.transport.abort()  # b's process is gone
        await until(lambda: a.pc.connectionState in ("closed", "failed"), 20)
    finally:
        await a.close()
        await b.close()


async def test_unanswered_checks_mark_the_path_interrupted_and_answers_restore_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.3)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 100)  # consent outlives the outage
    monkeypatch.setattr(stun, "RETRY_RTO", 0.1)
    a, b = av_call()
    try:
        await connect(a, b)
        changes: list[bool] = []
        a.pc.on("pathstatechange", lambda: changes.append(a.pc.path_interrupted))
        outbound = Impairer()
        impair_connection(a.pc, outbound=outbound)
        outbound.outage = True  # a's media and checks are lost: a's side notices
        await until(lambda: changes == [True], 10)
        assert a.pc.connectionState == "connected"  # the ICE session is still up
        frames = b.counter("video").frames
        outbound.outage = False
        await until(lambda: changes == [True, False], 10)
        await until(lambda: b.counter("video").frames > frames + 5)
    finally:
        await a.close()
        await b.close()

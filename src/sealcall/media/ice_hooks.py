"""Per-connection hooks on aioice, the ICE agent under aiortc: which addresses it gathers on, how
promptly it reports completion, and how patiently it checks consent. Each hook replaces one
attribute of one connection's ``aioice.Connection``; aioice itself is not patched, so other
connections in the process are untouched. They read aioice 0.13 internals (pinned).
"""

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

import aioice.ice
from aioice import stun
from aioice.ice import CandidatePair, TransportPolicy
from aiortc import RTCRtpTransceiver

logger = logging.getLogger(__name__)

# RFC 7675 consent checks: aioice sends each once and gives it 0.5 s, so an event loop (ours or
# the peer's) busy for half a second fails a check, and six in a row close a healthy call. Each
# check here is retransmitted (0.5 + 1 + 2 s), and consent expires only when no check has been
# answered for the whole consent window (aioice's interval x failures, 30 s), as the RFC says.
CONSENT_RETRANSMISSIONS = 2
# While the path is interrupted, checks run this much more often than aioice's interval (1 s
# instead of 5 s by default), so that a path that comes back is noticed within a second or two.
RECHECK_SHARE = 0.2

PathListener = Callable[[bool], None]
"""Told ``False`` when the media path stops answering consent checks, ``True`` when it answers
again."""


def _ice_connection(transceiver: RTCRtpTransceiver) -> Any:
    return transceiver.receiver.transport.transport.iceGatherer._connection


def restrict_host_addresses(transceiver: RTCRtpTransceiver, addresses: Sequence[str]) -> None:
    """Gather host candidates only on ``addresses`` for this transceiver's ICE connection."""
    connection: Any = _ice_connection(transceiver)
    if getattr(connection, "_sealcall_restricted", False):
        return  # bundled transceivers share one transport
    gather = connection.get_component_candidates
    allowed = list(addresses)

    async def restricted(component: int, addresses: list[str], timeout: int = 5) -> Any:
        # None at all under the relay transport policy: relay-only calls send no host address.
        relay_only = connection._transport_policy == TransportPolicy.RELAY
        chosen = [] if relay_only else allowed
        return await gather(component=component, addresses=chosen, timeout=timeout)

    connection.get_component_candidates = restricted
    connection._sealcall_restricted = True


def end_check_pacing_early(transceiver: RTCRtpTransceiver) -> None:
    """Let ICE report completion as soon as its last check succeeds.

    aioice's ``connect()`` starts one check per 20 ms tick and only looks at the check list
    again after the next tick, even when the check it just started was the last one that could
    ever be started; on loopback that idle tick is most of the ICE time of a call. Once no pair
    is left to start and no remote candidate can still arrive, the tick would only end the
    loop, so end it now (checks that arrive later are triggered checks, which aioice starts by
    itself). Per connection: aioice itself is not patched.
    """
    connection: Any = _ice_connection(transceiver)
    if getattr(connection, "_sealcall_prompt", False) or not hasattr(connection, "_check_periodic"):
        return  # bundled transceivers share one transport; another aioice paces differently
    periodic = connection._check_periodic
    startable = (CandidatePair.State.WAITING, CandidatePair.State.FROZEN)

    def periodic_without_idle_tick() -> bool:
        started: bool = periodic()
        if not started or connection._remote_candidates_expected():
            return started
        # A pair whose check task exists has been started, even before the task ran.
        return any(p.state in startable and p.task is None for p in connection._check_list)

    connection._check_periodic = periodic_without_idle_tick
    connection._sealcall_prompt = True


def patient_consent_checks(
    transceiver: RTCRtpTransceiver, on_path: PathListener | None = None
) -> None:
    """Keep consent (RFC 7675) while the peer answers within the consent window, even when an
    event loop is too busy to answer a check within aioice's 0.5 s; a peer that is gone still
    loses consent after the same window (30 s by aioice's settings).

    ``on_path(False)``: a check went unanswered through all its retransmissions (3.5 s), so the
    path is interrupted (what a browser calls ``disconnected``); the ICE session stays up for the
    rest of the window and checks every second. ``on_path(True)``: a check is answered again.
    """
    connection: Any = _ice_connection(transceiver)
    if getattr(connection, "_sealcall_patient", False) or not hasattr(connection, "query_consent"):
        return  # bundled transceivers share one transport

    async def query_consent() -> None:
        loop = asyncio.get_running_loop()
        last_answer = loop.time()
        interrupted = False
        while True:
            interval = aioice.ice.CONSENT_INTERVAL
            pause = interval * (RECHECK_SHARE if interrupted else 1.0)
            await asyncio.sleep(pause * (0.8 + 0.4 * random.random()))  # noqa: S311 - jitter
            window = interval * aioice.ice.CONSENT_FAILURES
            pairs = list(connection._nominated.values())
            if not pairs:
                last_answer = loop.time()  # nothing to ask yet, so nothing has gone quiet
            answered = 0
            for pair in pairs:
                request = connection.build_request(pair, nominate=False)
                check = pair.protocol.request(
                    request,
                    pair.remote_addr,
                    integrity_key=connection.remote_password.encode("utf8"),
                    retransmissions=CONSENT_RETRANSMISSIONS,
                )
                remaining = max(0.0, last_answer + window - loop.time())
                try:
                    await asyncio.wait_for(check, timeout=remaining)
                    last_answer = loop.time()
                    answered += 1
                except (stun.TransactionError, TimeoutError):
                    pass
            if pairs and interrupted != (answered < len(pairs)):
                interrupted = not interrupted
                logger.info("ICE path %s", "interrupted" if interrupted else "answers again")
                if on_path is not None:
                    on_path(not interrupted)
            if loop.time() - last_answer >= window:
                logger.info("ICE consent expired: no answer for %.0f s", window)
                connection._query_consent_task = None
                await connection.close()
                return

    connection.query_consent = query_consent
    connection._sealcall_patient = True

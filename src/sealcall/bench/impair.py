"""Network impairment in user space: loss, delay, jitter and outages, for tests and benchmarks.

This kernel has no ``netem``, so bad networks are made by our own code. :class:`Impairer` is the
sans-I/O model: one packet in (with ``now``), a delivery time or a drop out. It is used where
packets are really carried: by the network lab's router (:mod:`sealcall.bench.netlab`, packets
between namespaces) and, for quick tests on loopback, by :func:`impair_connection`, which puts
one direction of one aiortc connection's ICE traffic (media, DTLS and STUN alike) through it.

Loss is independent per packet; delay is ``delay_ms`` plus a uniform ``±jitter_ms``, and with
``keep_order=False`` a packet may overtake an earlier one (reordering), as on a real path whose
queues differ per packet. An outage drops everything until it is lifted.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Impairment:
    """How a path misbehaves: loss share (0..1), one-way delay and its jitter in milliseconds."""

    loss: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    keep_order: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"loss must be within 0..1, not {self.loss}")
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError("delay and jitter must be >= 0")
        if self.jitter_ms > self.delay_ms:
            raise ValueError("jitter larger than the delay would deliver packets before they left")


PERFECT = Impairment()
ORDER_STEP = 1e-6  # seconds between two packets delivered in order at the same moment


class Impairer:
    """Decides each packet's fate under an :class:`Impairment` (sans-I/O; seeded, so repeatable).

    ``impairment`` and ``outage`` may change at run time; ``passed`` and ``dropped`` count.
    """

    def __init__(self, impairment: Impairment = PERFECT, *, seed: int | None = None) -> None:
        self.impairment = impairment
        self.outage = False
        self.passed = 0
        self.dropped = 0
        self._random = random.Random(seed)  # noqa: S311 - a test network, not cryptography
        self._last_delivery = float("-inf")

    def decide(self, now: float) -> float | None:
        """When the packet that left at ``now`` (seconds) arrives, or None: it is lost."""
        spec = self.impairment
        if self.outage or (spec.loss and self._random.random() < spec.loss):
            self.dropped += 1
            return None
        self.passed += 1
        delay = spec.delay_ms
        if spec.jitter_ms:
            delay += self._random.uniform(-spec.jitter_ms, spec.jitter_ms)
        at = now + delay / 1000.0
        if spec.keep_order:
            # Strictly after the previous packet: an event loop's timers (a heap) run timers due
            # at the same moment in no particular order, which would reorder them after all.
            at = max(at, self._last_delivery + ORDER_STEP)
        self._last_delivery = max(self._last_delivery, at)
        return at


class _Path:
    """One direction of one connection: hands each datagram to ``deliver`` when the model says."""

    def __init__(self, impairer: Impairer) -> None:
        self.impairer = impairer
        self._loop = asyncio.get_running_loop()

    def carry(self, deliver: Callable[..., Any], *args: Any) -> None:
        now = self._loop.time()
        at = self.impairer.decide(now)
        if at is None:
            return
        if at <= now:
            deliver(*args)
        else:
            self._loop.call_at(at, deliver, *args)


def _ice_connections(pc: Any) -> list[Any]:
    seen: dict[int, Any] = {}
    for transceiver in pc.getTransceivers():
        connection = transceiver.receiver.transport.transport.iceGatherer._connection
        seen[id(connection)] = connection
    for sctp in [getattr(pc, "sctp", None)]:
        if sctp is not None:
            connection = sctp.transport.transport.iceGatherer._connection
            seen[id(connection)] = connection
    return list(seen.values())


def impair_connection(
    pc: Any, *, inbound: Impairer | None = None, outbound: Impairer | None = None
) -> int:
    """Put the ICE traffic of aiortc connection ``pc`` through the given impairers.

    Call it after the local description is set (ICE has gathered: its sockets exist). Every
    datagram a socket of the connection receives goes through ``inbound``, every one it sends
    through ``outbound`` (STUN too, so an outage also stops consent checks, as a real one
    would). Only this connection's protocol objects are wrapped: aioice is not patched. Returns
    how many sockets were wrapped (0 means ICE had not gathered yet).
    """
    wrapped = 0
    for connection in _ice_connections(pc):
        for protocol in connection._protocols:
            if getattr(protocol, "_sealcall_impaired", False):
                continue
            if inbound is not None:
                path_in = _Path(inbound)
                receive = protocol.datagram_received
                protocol.datagram_received = lambda data, addr, r=receive, p=path_in: p.carry(
                    r, data, addr
                )
            if outbound is not None:
                path_out = _Path(outbound)
                transport = protocol.transport
                send = transport.sendto
                transport.sendto = lambda data, addr=None, s=send, p=path_out: p.carry(
                    s, data, addr
                )
            protocol._sealcall_impaired = True
            wrapped += 1
    return wrapped

"""The network lab's router: every packet between a host and the rest goes through user space.

The kernel here has no ``netem``, so the router namespace sends each packet that enters it from
a host or the server into a TUN device (policy routing); :class:`Router` reads it there, lets
:func:`packet_fate` decide with the :class:`~sealcall.bench.impair.Impairer` of each link the
packet crosses (the sending host's uplink, the receiving host's downlink), and writes it back
into the TUN at its delivery time, from where the kernel routes it on. The router runs on its
own thread and event loop, so a test's own loop being busy never stalls the network; impairments
change at run time by assigning to the impairers (plain attribute writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from .impair import Impairer

logger = logging.getLogger(__name__)

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PENDING = 4096  # packets held for delayed delivery; beyond this they are dropped (counted)
READ_BATCH = 64
MTU = 2048


class PacketError(ValueError):
    """Not an IPv4 packet the router can read (counted and passed on unimpaired)."""


def ipv4_addresses(packet: bytes) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """Source and destination of an IPv4 packet; :class:`PacketError` for anything else."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        raise PacketError("not an IPv4 packet")
    return ipaddress.IPv4Address(packet[12:16]), ipaddress.IPv4Address(packet[16:20])


@dataclass
class Link:
    """One host's link to the router: ``up`` impairs what the host sends, ``down`` what it gets."""

    network: ipaddress.IPv4Network
    up: Impairer = field(default_factory=Impairer)
    down: Impairer = field(default_factory=Impairer)
    # IP protocols dropped both ways (17: UDP, as a firewall that lets only TCP out), and count.
    blocked_protocols: frozenset[int] = frozenset()
    filtered: int = 0


def packet_fate(packet: bytes, links: Mapping[str, Link], now: float) -> float | None:
    """When the packet that entered the router at ``now`` leaves it, or None: it is lost.

    It crosses the uplink of the host it comes from, then the downlink of the host it goes to
    (each may drop it or add delay); a protocol blocked on either host's link drops it. A packet
    the router cannot read passes unimpaired.
    """
    try:
        source, destination = ipv4_addresses(packet)
    except PacketError:
        return now
    ends = [link for link in links.values() if source in link.network]
    ends += [link for link in links.values() if destination in link.network]
    for link in ends:
        if packet[9] in link.blocked_protocols:
            link.filtered += 1
            return None
    at = now
    crossed = [link.up for link in links.values() if source in link.network]
    crossed += [link.down for link in links.values() if destination in link.network]
    for impairer in crossed:
        leaves = impairer.decide(at)
        if leaves is None:
            return None
        at = leaves
    return at


def open_tun(name: str) -> int:
    """Make TUN device ``name`` in the calling thread's network namespace; its file descriptor
    (non-blocking). The device goes away when the descriptor is closed."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


class Router:
    """Moves packets from the TUN back into it after :func:`packet_fate`, on its own thread."""

    def __init__(self, tun_fd: int, links: Mapping[str, Link]) -> None:
        self.links = links
        self.unreadable = 0  # non-IPv4 packets, passed on as they were
        self.overflow = 0  # dropped because too many were waiting (bounded memory)
        self.write_errors = 0
        self._fd = tun_fd
        self._pending = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    def start(self) -> None:
        """Start moving packets."""
        self._thread = threading.Thread(target=self._run, name="netlab-router", daemon=True)
        self._thread.start()
        self._started.wait(10)

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        loop.add_reader(self._fd, self._read)
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.remove_reader(self._fd)
            loop.close()

    def _read(self) -> None:
        loop = self._loop
        assert loop is not None
        for _ in range(READ_BATCH):
            try:
                packet = os.read(self._fd, MTU)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.write_errors += 1
                return
            now = loop.time()
            at = packet_fate(packet, self.links, now)
            if at is None:
                continue
            if at <= now:
                self._write(packet, counted=False)
            elif self._pending >= MAX_PENDING:
                self.overflow += 1
            else:
                self._pending += 1
                loop.call_at(at, self._write, packet, True)

    def _write(self, packet: bytes, counted: bool) -> None:
        if counted:
            self._pending -= 1
        try:
            os.write(self._fd, packet)
        except OSError:
            self.write_errors += 1  # the TUN queue is full: lost, as on a real router

    def stop(self) -> None:
        """Stop and close the TUN (its device goes with it)."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        with contextlib.suppress(OSError):
            os.close(self._fd)

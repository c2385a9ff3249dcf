"""A small network of namespaces for network tests and ``sealcall net-bench``.

Four network namespaces, made and removed by :class:`NetworkLab`::

    A (host) ── R (router) ── B (host)
                  │
                  S (server: Synapse and coturn) ── here (a management link to S only)

Each host and the server has one veth link to the router, inside ``10.79.0.0/16`` (one /24 per
lab; the SFU benchmark's namespaces use 10.77.0.0/16). Only R forwards. In *relayed* mode (the
default) R drops everything between A and B (``ip rule ... blackhole``), so a call between them
can only go through TURN on S; in *direct* mode they can reach each other. Every packet entering
R from A, B or S goes through the user-space :class:`~sealcall.bench.lab_router.Router`, which
impairs each host's link (loss, delay, jitter, outage) as the test or benchmark says at run time.
The link from this namespace to S (for starting Synapse and registering accounts) bypasses R.

Namespaces of a process that died are removed when the next lab is made (as
:mod:`sealcall.bench.netns` does). Needs root and iproute2; :class:`NetnsUnavailableError` says
why when the kernel or the user may not make namespaces, :class:`LabError` any other failure.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import ipaddress
import itertools
import os
import re
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

from .impair import Impairer, Impairment
from .lab_router import Link, Router, open_tun
from .netns import (
    IP_BINARY,
    LOCK_FILE,
    LabError,
    free_subnets,
    remove_stale_namespaces,
    run_ip,
)

PREFIX = "sealcall-lab"
SUBNET = ipaddress.IPv4Network("10.79.0.0/16")
INTERFACE = "eth0"  # every host's (and the server's) link to the router
TUN = "impair0"
IMPAIR_TABLE = "100"
CLONE_NEWNET = 0x40000000
_STALE = re.compile(rf"^{PREFIX}-(\d+)-\d+-[abrs]$")
_serial = itertools.count()

Host = Literal["a", "b"]
T = TypeVar("T")


def in_namespace(namespace: str, work: Callable[[], T]) -> T:
    """Run ``work`` on a new thread that has joined network namespace ``namespace``.

    Sockets it opens and processes it starts live in that namespace; the thread ends with it
    (a pooled thread must never be left in another namespace). Blocks until done.
    """
    result: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/run/netns/{namespace}") as handle:
                if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise LabError(
                        f"cannot join network namespace {namespace}: {os.strerror(errno)}"
                    )
            result.append(work())
        except BaseException as error:  # handed to the caller
            errors.append(error)

    thread = threading.Thread(target=run, name=f"in-{namespace}", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


async def run_in_namespace(namespace: str, work: Callable[[], Awaitable[T]]) -> T:
    """Run coroutine function ``work`` to completion on its own event loop in ``namespace``
    (e.g. ``Homeserver.start``: its server process starts there), without blocking ours."""

    def run() -> T:
        async def main() -> T:
            return await work()

        return asyncio.run(main())

    return await asyncio.to_thread(in_namespace, namespace, run)


class NetworkLab:
    """Namespaces A, B, R, S as above; a context manager (``create``/``delete``).

    ``address(name)`` is the address of host ``"a"``, ``"b"`` or the server ``"s"``;
    ``exec_prefix(name)`` runs a program there; :meth:`impair` and :meth:`set_outage` change a
    host's link; :meth:`set_direct` lets A and B reach each other or not. ``rate_kbit`` caps
    each host's downlink with ``tc tbf`` (None: no cap).
    """

    def __init__(self, *, rate_kbit: int | None = None, ip: str = IP_BINARY) -> None:
        self.ip = ip
        self.rate_kbit = rate_kbit
        serial = next(_serial)
        self._names = {n: f"{PREFIX}-{os.getpid()}-{serial}-{n}" for n in "abrs"}
        self.management_interface = f"sl{os.getpid()}m{serial}"[:15]
        self.networks: dict[str, ipaddress.IPv4Network] = {}
        self._addresses: dict[str, str] = {}
        self.links: dict[str, Link] = {}
        self.direct = False
        self._blackholed = False
        self._router: Router | None = None
        self._made: list[str] = []

    # -- names and addresses -------------------------------------------------------------

    def namespace(self, name: str) -> str:
        """The namespace of ``"a"``, ``"b"``, ``"r"`` (router) or ``"s"`` (server)."""
        return self._names[name]

    def address(self, name: str) -> str:
        """The address of host ``"a"``/``"b"``, the server ``"s"``, or the router's side of
        a link (``"ra"``, ``"rb"``, ``"rs"``)."""
        return self._addresses[name]

    def exec_prefix(self, name: str) -> list[str]:
        """The argv prefix that runs a program in ``name``'s namespace."""
        return [self.ip, "netns", "exec", self.namespace(name)]

    def _ip(self, *args: str) -> str:
        return run_ip(self.ip, *args)

    def _in(self, name: str, *args: str) -> str:
        return self._ip("-n", self.namespace(name), *args)

    def _sysctl(self, name: str, *settings: str) -> None:
        """Set ``key=value`` kernel settings of ``name``'s namespace (/proc/sys/net is per
        namespace: written from a thread that joined it)."""

        def write() -> None:
            for setting in settings:
                key, value = setting.split("=")
                Path("/proc/sys", *key.split(".")).write_text(value)

        in_namespace(self.namespace(name), write)

    # -- making and removing -------------------------------------------------------------

    def create(self) -> NetworkLab:
        """Make the namespaces, links, routes and the router; relayed mode."""
        # The lock keeps two runs from removing the same stale namespaces or taking one slot.
        with open(LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            remove_stale_namespaces(_STALE, self.ip)
            try:
                slot = next(free_subnets(self.ip, SUBNET, 24), None)
                if slot is None:
                    raise LabError(f"no free /24 left in {SUBNET} for a network lab")
                self._build(slot)
            except BaseException:
                self.delete()
                raise
        return self

    def _build(self, slot: ipaddress.IPv4Network) -> None:
        for name in "abrs":
            self._ip("netns", "add", self.namespace(name))
            self._made.append(name)
            self._in(name, "link", "set", "lo", "up")
        # /30 per link: A-R, B-R, S-R, and here-S (management).
        a_net, b_net, s_net, m_net = list(slot.subnets(new_prefix=30))[:4]
        for name, net in (("a", a_net), ("b", b_net), ("s", s_net)):
            router_side, far_side = (str(h) for h in net.hosts())
            self.networks[name] = net
            self._addresses[name], self._addresses[f"r{name}"] = far_side, router_side
            self._in(
                "r", "link", "add", f"r{name}", "type", "veth",
                "peer", "name", INTERFACE, "netns", self.namespace(name),
            )  # fmt: skip
            self._in("r", "addr", "add", f"{router_side}/30", "dev", f"r{name}")
            self._in("r", "link", "set", f"r{name}", "up")
            self._in(name, "addr", "add", f"{far_side}/30", "dev", INTERFACE)
            self._in(name, "link", "set", INTERFACE, "up")
            self._in(name, "route", "add", "default", "via", router_side)
        outer, inner = (str(h) for h in m_net.hosts())
        self._ip(
            "link", "add", self.management_interface, "type", "veth",
            "peer", "name", "mgmt0", "netns", self.namespace("s"),
        )  # fmt: skip
        self._ip("addr", "add", f"{outer}/30", "dev", self.management_interface)
        self._ip("link", "set", self.management_interface, "up")
        self._in("s", "addr", "add", f"{inner}/30", "dev", "mgmt0")
        self._in("s", "link", "set", "mgmt0", "up")
        self._ip("route", "add", f"{self.address('s')}/32", "via", inner)
        self._sysctl(
            "r",
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        )
        self._start_router()
        self.set_direct(False)
        if self.rate_kbit is not None:
            for name in "ab":
                self._in(
                    "r", "qdisc", "add", "dev", f"r{name}", "root", "tbf",
                    "rate", f"{self.rate_kbit}kbit", "burst", "32kb", "latency", "400ms",
                )  # fmt: skip

    def _start_router(self) -> None:
        fd = in_namespace(self.namespace("r"), lambda: open_tun(TUN))
        self.links = {name: Link(self.networks[name]) for name in "ab"}
        self._router = Router(fd, self.links)
        self._router.start()
        self._in("r", "link", "set", TUN, "up")
        self._sysctl("r", f"net.ipv4.conf.{TUN}.rp_filter=0")
        self._in("r", "route", "add", "default", "dev", TUN, "table", IMPAIR_TABLE)
        for name in "abs":
            # Into the TUN; what the router writes back enters from the TUN: routed normally.
            self._in("r", "rule", "add", "iif", f"r{name}", "lookup", IMPAIR_TABLE, "pref", "200")

    def set_direct(self, direct: bool) -> None:
        """Let A and B reach each other (True) or drop all between them in R (False)."""
        a, b = str(self.networks["a"]), str(self.networks["b"])
        if self._blackholed is not direct:
            self.direct = direct
            return  # already so
        for source, destination in ((a, b), (b, a)):
            rule = ("from", source, "to", destination, "blackhole", "pref", "100")
            self._in("r", "rule", "del" if direct else "add", *rule)
        self._blackholed = not direct
        self.direct = direct

    def delete(self) -> None:
        """Stop the router and remove every namespace and link (nothing if none was made)."""
        if self._router is not None:
            self._router.stop()
            self._router = None
        if re.search(rf"\b{re.escape(self.management_interface)}[@:]", self._ip("-o", "link")):
            self._ip("link", "delete", self.management_interface)
        while self._made:
            self._ip("netns", "delete", self.namespace(self._made.pop()))

    def __enter__(self) -> NetworkLab:
        return self.create()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.delete()

    # -- impairment ----------------------------------------------------------------------

    def impair(
        self, host: Host, impairment: Impairment, *, up: bool = True, down: bool = True
    ) -> None:
        """Impair host ``host``'s link: what it sends (``up``), what it receives (``down``)."""
        link = self.links[host]
        for impairer, wanted in ((link.up, up), (link.down, down)):
            if wanted:
                impairer.impairment = impairment

    def set_outage(self, host: Host, down: bool) -> None:
        """Cut host ``host``'s link both ways (True) or restore it (False)."""
        self.links[host].up.outage = down
        self.links[host].down.outage = down

    def block_protocol(self, host: Host, protocol: int, blocked: bool = True) -> None:
        """Drop every packet of IP protocol ``protocol`` (17: UDP) to and from host ``host``
        (True), or let it pass again (False): a firewall that lets only some protocols out."""
        link = self.links[host]
        if blocked:
            link.blocked_protocols |= {protocol}
        else:
            link.blocked_protocols -= {protocol}

    def counters(self) -> dict[str, Any]:
        """Packets passed and dropped per host link and direction, and the router's own drops."""

        def count(impairer: Impairer) -> dict[str, int]:
            return {"passed": impairer.passed, "dropped": impairer.dropped}

        report: dict[str, Any] = {
            name: {"up": count(link.up), "down": count(link.down), "filtered": link.filtered}
            for name, link in self.links.items()
        }
        if self._router is not None:
            report["router"] = {
                "overflow": self._router.overflow,
                "unreadable": self._router.unreadable,
                "write_errors": self._router.write_errors,
            }
        return report

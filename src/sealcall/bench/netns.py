"""A private network namespace joined to ours by a veth pair, for an SFU under benchmark.

Tests and benchmarks may use only loopback or addresses inside network namespaces they made
themselves. Janus's ICE agent (libnice) never gathers on a loopback interface, so Janus runs in
a :class:`NetworkNamespace`: a namespace ``sealcall-janus-<pid>-<n>`` holding one end of a veth
pair (``10.77.x.2/30``) while the other end stays here (``10.77.x.1/30``); ICE on both sides is
restricted to these two addresses. Deleting it deletes the veth pair too; namespaces
left by processes that died are deleted whenever a new one is made. Needs root (or
CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2.
"""

from __future__ import annotations

import fcntl
import ipaddress
import itertools
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

IP_BINARY = "ip"
PREFIX = "sealcall-janus"
SUBNET = ipaddress.IPv4Network("10.77.0.0/16")
INNER_INTERFACE = "veth0"
LOCK_FILE = Path(tempfile.gettempdir()) / "sealcall-netns.lock"
_STALE = re.compile(rf"^{PREFIX}-(\d+)-\d+$")
_serial = itertools.count()


class LabError(RuntimeError):
    """Making, changing or removing a namespace failed for a reason other than the kernel or
    the user refusing namespaces (a broken ``ip rule``/``tc`` command, no free subnet): a
    defect, which must fail a test rather than skip it."""


class NetnsUnavailableError(LabError):
    """Network namespaces cannot be made here: no iproute2, or ``ip netns add`` refused (not
    root, no CAP_SYS_ADMIN). The only lab failure a test may skip on."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def run_ip(ip: str, *args: str) -> str:
    """Run iproute2 (``ip ARGS``) and return its output.

    :class:`NetnsUnavailableError` if ``ip`` is missing or ``ip netns add`` is refused for
    want of permission; :class:`LabError` for every other failure.
    """
    command = f"{ip} {' '.join(args)}"
    try:
        done = subprocess.run(  # noqa: S603 - iproute2 with our own arguments
            [ip, *args], capture_output=True, text=True, timeout=10, check=False
        )
    except FileNotFoundError as error:
        raise NetnsUnavailableError(
            f"{ip} not found: network namespaces need iproute2 (apt-get install iproute2)"
        ) from error
    except (OSError, subprocess.SubprocessError) as error:
        raise LabError(f"{command} failed: {error}") from error
    if done.returncode != 0:
        message = done.stderr.strip() or f"exit code {done.returncode}"
        refused = "not permitted" in message.lower() or "permission denied" in message.lower()
        if refused and args[:2] == ("netns", "add"):
            raise NetnsUnavailableError(
                f"network namespaces are not permitted here ({command}: "
                f"{message}); run as root, or with CAP_SYS_ADMIN and CAP_NET_ADMIN"
            )
        raise LabError(f"{command} failed: {message}")
    return done.stdout


def free_subnets(
    ip: str, network: ipaddress.IPv4Network, prefix: int
) -> Iterator[ipaddress.IPv4Network]:
    """The ``/prefix`` subnets of ``network`` that overlap no IPv4 address on this namespace's
    interfaces, starting at a place given by our pid (parallel runs try different ones first).
    Call it under :data:`LOCK_FILE`'s lock, so that two runs do not take the same one."""
    used = {
        ipaddress.IPv4Interface(address).network
        for address in re.findall(r"inet (\S+)", run_ip(ip, "-o", "-4", "addr", "show"))
    }
    subnets = list(network.subnets(new_prefix=prefix))
    start = os.getpid() % len(subnets)
    for subnet in subnets[start:] + subnets[:start]:
        if not any(subnet.overlaps(other) for other in used):
            yield subnet


def remove_stale_namespaces(pattern: re.Pattern[str], ip: str = IP_BINARY) -> list[str]:
    """Delete the namespaces whose name matches ``pattern`` (group 1: the pid of the process
    that made it) and whose process is gone; their names."""
    removed = []
    for line in run_ip(ip, "netns", "list").splitlines():
        name = line.split()[0] if line else ""
        match = pattern.match(name)
        if match and not _pid_alive(int(match.group(1))):
            run_ip(ip, "netns", "delete", name)  # its veth pairs go with it
            removed.append(name)
    return removed


class NetworkNamespace:
    """One namespace with a veth pair to the current one; a context manager (``create``/``delete``).

    ``name`` is the namespace (for ``ip netns exec``), ``inner_address`` the address inside it,
    ``outer_address`` the address of our end of the pair.
    """

    def __init__(self, ip: str = IP_BINARY) -> None:
        self.ip = ip
        serial = next(_serial)
        self.name = f"{PREFIX}-{os.getpid()}-{serial}"
        self.outer_interface = f"sj{os.getpid()}v{serial}"[:15]
        self.inner_address = ""
        self.outer_address = ""
        self._created = False

    def _run(self, *args: str) -> str:
        return run_ip(self.ip, *args)

    def namespaces(self) -> list[str]:
        """The names of all network namespaces (``ip netns list``)."""
        return [line.split()[0] for line in self._run("netns", "list").splitlines() if line]

    def remove_stale(self) -> list[str]:
        """Delete the namespaces of ours whose process is gone; their names."""
        return remove_stale_namespaces(_STALE, self.ip)

    def create(self) -> NetworkNamespace:
        """Make the namespace and the veth pair, both ends up, loopback up inside."""
        # The lock keeps two runs from deleting the same stale namespace, or taking the same
        # free subnet between scan and assignment.
        with open(LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.remove_stale()
            self._run("netns", "add", self.name)
            self._created = True
            try:
                subnet = next(free_subnets(self.ip, SUBNET, 30), None)
                if subnet is None:
                    raise LabError(f"no free /30 left in {SUBNET} for a namespace")
                outer, inner = list(subnet.hosts())
                self._run(
                    "link", "add", self.outer_interface, "type", "veth",
                    "peer", "name", INNER_INTERFACE, "netns", self.name,
                )  # fmt: skip
                self._run("addr", "add", f"{outer}/30", "dev", self.outer_interface)
                self._run("link", "set", self.outer_interface, "up")
                self._run("-n", self.name, "addr", "add", f"{inner}/30", "dev", INNER_INTERFACE)
                self._run("-n", self.name, "link", "set", INNER_INTERFACE, "up")
                self._run("-n", self.name, "link", "set", "lo", "up")
            except BaseException:
                self.delete()
                raise
        self.outer_address, self.inner_address = str(outer), str(inner)
        return self

    def exec_prefix(self) -> list[str]:
        """The argv prefix that runs a program inside the namespace."""
        return [self.ip, "netns", "exec", self.name]

    def delete(self) -> None:
        """Delete the veth pair and the namespace; nothing if they were not made."""
        if self._created:
            self._created = False
            # The kernel removes a deleted namespace's veth later, in the background: delete
            # our end first so that the pair is gone when this returns.
            ours = re.compile(rf"^\d+: {re.escape(self.outer_interface)}[@:]", re.M)
            if ours.search(self._run("-o", "link", "show")):
                self._run("link", "delete", self.outer_interface)
            self._run("netns", "delete", self.name)

    def __enter__(self) -> NetworkNamespace:
        return self.create()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.delete()

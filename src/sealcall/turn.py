"""A private TURN server: Debian's coturn (``/usr/bin/turnserver``) as a child process.

:class:`TurnServer` writes coturn's configuration from code into a data folder (time-limited
shared-secret credentials, the TURN REST scheme; no TLS, no CLI port, no multicast peers, no
peers in private or special-purpose ranges unless the caller allows them), starts
it, waits until its port answers a STUN Binding request over UDP and over TCP, and stops it
again. The caller chooses the listening and relay addresses and may run it inside a network
namespace (``exec_prefix=("ip", "netns", "exec", NS)``): the readiness probe then runs there too.

:func:`turn_credentials` makes the credentials a homeserver hands out through
``/voip/turnServer``: the user name ``"<expiry>:<name>"``, the password
``base64(HMAC-SHA1(secret, user name))``, which coturn checks with the same secret.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiortc import RTCIceServer

from sealcall.homeserver import free_port, stop_server_process

TURNSERVER = "/usr/bin/turnserver"
CONFIG_NAME = "turnserver.conf"
DEFAULT_REALM = "sealcall"
DEFAULT_LIFETIME_S = 24 * 3600

# Run with the probed address and port; exits 0 once the port answers a STUN Binding request
# over UDP and over TCP, 1 after the deadline. Standard library only: it runs in whatever
# network namespace the server runs in, under the same command prefix.
_PROBE = r"""
import os, socket, struct, sys, time
host, port, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
def request():
    tid = os.urandom(12)
    return tid, struct.pack("!HHI", 1, 0, 0x2112A442) + tid
def answered(data, tid):
    return len(data) >= 20 and data[:2] == b"\x01\x01" and data[8:20] == tid
def udp():
    tid, req = request()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.sendto(req, (host, port))
        return answered(s.recv(2048), tid)
def tcp():
    tid, req = request()
    with socket.create_connection((host, port), timeout=0.5) as s:
        s.sendall(req)
        data = b""
        while len(data) < 20:
            chunk = s.recv(2048)
            if not chunk:
                return False
            data += chunk
        return answered(data, tid)
while time.monotonic() < deadline:
    try:
        if udp() and tcp():
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.05)
sys.exit(1)
"""


class TurnError(RuntimeError):
    """coturn could not be configured, started or reached."""


@dataclass(frozen=True)
class TurnCredentials:
    """Time-limited TURN credentials (TURN REST scheme)."""

    username: str
    password: str


def turn_credentials(secret: str, name: str, lifetime: float, now: float) -> TurnCredentials:
    """Credentials valid until ``now + lifetime`` (Unix seconds), as Synapse makes them.

    The user name is ``"<expiry>:<name>"`` with the expiry in whole Unix seconds; the password is
    the base64 of HMAC-SHA1 over the user name keyed with the shared secret.
    """
    username = f"{int(now + lifetime)}:{name}"
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredentials(username, base64.b64encode(mac).decode("ascii"))


@dataclass(frozen=True)
class TurnSettings:
    """What a homeserver needs to hand out TURN credentials (Synapse's three settings)."""

    uris: tuple[str, ...]
    shared_secret: str
    user_lifetime_s: int = DEFAULT_LIFETIME_S


# Peers a relay must not reach (coturn CVE-2020-26262 class: a TURN server handing credentials
# to every account would otherwise relay into its own host and LAN): IANA special-purpose
# ranges, private, loopback, link-local, shared (CGNAT), documentation, multicast, reserved.
DENIED_PEER_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
        "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/3",
        "::/128", "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "100::/64", "2001:db8::/32",
        "fc00::/7", "fe80::/10", "ff00::/8",
    )
)  # fmt: skip


def _peer_range(network: str | ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """coturn's ``IP-IP`` form of a network (it takes ranges, not prefixes)."""
    net = ipaddress.ip_network(network, strict=False)
    return f"{net[0]}-{net[-1]}"


def turn_installed() -> bool:
    """True if coturn's ``turnserver`` binary is installed."""
    return os.access(TURNSERVER, os.X_OK)


class TurnServer:
    """coturn in ``data_dir``, listening on ``listening_ips`` at ``port`` (a free one if None).

    ``relay_ips`` are the addresses relayed traffic leaves from (default: the listening ones).
    Relays to :data:`DENIED_PEER_NETWORKS` (private, loopback, link-local...) are refused except
    into ``allowed_peer_networks`` (e.g. ``("127.0.0.0/8",)`` for calls on one machine, or a test
    lab's subnets). ``external_ip``: the public address of a server behind 1:1 NAT (coturn's
    ``external-ip``; the URIs then name it). ``secret`` is the shared secret (random per server
    if None). ``exec_prefix`` is put in front of every command (e.g.
    ``("ip", "netns", "exec", "NS")``).
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        listening_ips: Sequence[str] = ("127.0.0.1",),
        relay_ips: Sequence[str] | None = None,
        allowed_peer_networks: Sequence[str] = (),
        external_ip: str | None = None,
        port: int | None = None,
        secret: str | None = None,
        realm: str = DEFAULT_REALM,
        exec_prefix: Sequence[str] = (),
    ) -> None:
        if not listening_ips:
            raise ValueError("a TURN server needs at least one listening address")
        for address in (
            *listening_ips,
            *(relay_ips or ()),
            *([external_ip] if external_ip else []),
        ):
            ipaddress.ip_address(address)  # ValueError for anything else
        self.allowed_peer_networks = tuple(
            ipaddress.ip_network(network, strict=False) for network in allowed_peer_networks
        )
        self.external_ip = external_ip
        self.data_dir = Path(data_dir).resolve()
        self.listening_ips = tuple(listening_ips)
        self.relay_ips = tuple(relay_ips) if relay_ips else self.listening_ips
        self._requested_port = port
        self.port: int | None = None
        self.secret = secret or secrets.token_urlsafe(32)
        self.realm = realm
        self.exec_prefix = tuple(exec_prefix)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        """coturn's configuration file."""
        return self.data_dir / CONFIG_NAME

    @property
    def log_path(self) -> Path:
        """coturn's log file."""
        return self.data_dir / "turnserver.log"

    @property
    def pid_path(self) -> Path:
        """Where a running coturn's process id is written."""
        return self.data_dir / "turnserver.pid"

    @property
    def uris(self) -> tuple[str, ...]:
        """``turn:`` URIs, UDP then TCP, for each listening address (or the external one)."""
        if self.port is None:
            raise TurnError("the TURN server has no port yet: start it first")
        return tuple(
            f"turn:{_uri_host(ip)}:{self.port}?transport={transport}"
            for ip in ((self.external_ip,) if self.external_ip else self.listening_ips)
            for transport in ("udp", "tcp")
        )

    def settings(self, user_lifetime_s: int = DEFAULT_LIFETIME_S) -> TurnSettings:
        """The homeserver settings that hand out credentials for this server."""
        return TurnSettings(self.uris, self.secret, user_lifetime_s)

    def ice_server(
        self,
        name: str = "sealcall",
        *,
        transport: str = "udp",
        lifetime: float = DEFAULT_LIFETIME_S,
        now: float | None = None,
    ) -> RTCIceServer:
        """An ICE server entry with fresh credentials, for one transport (aiortc uses only the
        first TURN URI it is given)."""
        credentials = turn_credentials(
            self.secret, name, lifetime, time.time() if now is None else now
        )
        uris = [uri for uri in self.uris if uri.endswith(f"transport={transport}")]
        if not uris:
            raise ValueError(f"no TURN URI with transport {transport!r}")
        return RTCIceServer(
            urls=uris, username=credentials.username, credential=credentials.password
        )

    # -- configuration -----------------------------------------------------------------

    def configure(self) -> Path:
        """Write coturn's configuration into the data folder."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self.port = self._requested_port or self.port or free_port()
        loopback_peers = any(net.is_loopback for net in self.allowed_peer_networks)
        external = []
        if self.external_ip:
            external = [f"external-ip={self.external_ip}/{self.relay_ips[0]}"]
        lines = [
            f"listening-port={self.port}",
            *(f"listening-ip={ip}" for ip in self.listening_ips),
            *(f"relay-ip={ip}" for ip in self.relay_ips),
            *external,
            "use-auth-secret",
            f"static-auth-secret={self.secret}",
            f"realm={self.realm}",
            "fingerprint",
            "no-tls",
            "no-dtls",
            "no-cli",
            "no-multicast-peers",
            *(f"denied-peer-ip={_peer_range(net)}" for net in DENIED_PEER_NETWORKS),
            # Only where the caller says so (calls on one machine, a test lab): coturn lets an
            # allowed range through a denied one.
            *(f"allowed-peer-ip={_peer_range(net)}" for net in self.allowed_peer_networks),
            *(["allow-loopback-peers"] if loopback_peers else []),
            f"userdb={self.data_dir / 'turndb'}",
            f"pidfile={self.pid_path}",
            f"log-file={self.log_path}",
            "simple-log",
            "no-stdout-log",
            "no-software-attribute",
        ]
        self.config_path.write_text("\n".join(lines) + "\n")
        self.config_path.chmod(0o600)
        return self.config_path

    # -- process -----------------------------------------------------------------------

    async def start(self, timeout: float = 20.0) -> None:
        """Configure, start coturn and wait until its port answers over UDP and TCP."""
        if not turn_installed():
            raise TurnError(
                f"coturn is not installed ({TURNSERVER}); install it with: apt-get install coturn"
            )
        self.configure()
        assert self.port is not None
        out = (self.data_dir / "turnserver-stdout.log").open("ab")
        self._process = subprocess.Popen(  # noqa: S603 - our own arguments
            [*self.exec_prefix, TURNSERVER, "-c", str(self.config_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()
        self.pid_path.write_text(str(self._process.pid))
        try:
            await self._wait_ready(timeout)
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self, timeout: float) -> None:
        probe = await asyncio.create_subprocess_exec(
            *self.exec_prefix,
            sys.executable,
            "-c",
            _PROBE,
            self.listening_ips[0],
            str(self.port),
            str(timeout),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert self._process is not None
        probed = asyncio.ensure_future(probe.wait())
        try:
            # The probe's end is the event; coturn exiting first is looked at between waits.
            while not probed.done() and self._process.poll() is None:
                await asyncio.wait({probed}, timeout=0.05)
        finally:
            if not probed.done():
                probe.kill()
                await probed
        code = self._process.poll()
        if code is not None:
            raise TurnError(f"coturn exited with code {code}; see {self.log_path}")
        if probed.result() != 0:
            raise TurnError(f"coturn did not answer within {timeout:.0f} s; see {self.log_path}")

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop coturn (SIGTERM, SIGKILL after ``timeout`` seconds) and wait until it is gone."""
        process, self._process = self._process, None
        await stop_server_process(process, self.pid_path, timeout)

    async def __aenter__(self) -> TurnServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _uri_host(ip: str) -> str:
    return f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else ip

"""Calls across the network lab: its servers (Synapse and coturn in S) and the peers in A and B.

:class:`LabServers` makes a :class:`~sealcall.bench.netlab.NetworkLab` and starts coturn and
Synapse (handing out coturn's credentials) in its server namespace. :class:`LabPeer` runs
:mod:`sealcall.bench.net_peer` in a host's namespace and follows its report lines;
:func:`connect_call` gives two peers a DM and a connected video call between them. Used by the
network tests and by ``sealcall net-bench``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sealcall.homeserver import Account, Homeserver
from sealcall.turn import TurnServer

from .netlab import NetworkLab

Line = dict[str, Any]


class PeerError(RuntimeError):
    """A lab peer exited, or did not report what was waited for in time."""


class LabServers:
    """A network lab with coturn and Synapse running in its server namespace ``S``."""

    def __init__(self, work_dir: Path, *, rate_kbit: int | None = None) -> None:
        self.work_dir = work_dir
        self.lab = NetworkLab(rate_kbit=rate_kbit)
        self.turn: TurnServer | None = None
        self.homeserver: Homeserver | None = None

    async def start(self) -> LabServers:
        """Make the lab and start both servers (removing the lab again if that fails)."""
        await asyncio.to_thread(self.lab.create)
        try:
            server = self.lab.address("s")
            prefix = self.lab.exec_prefix("s")
            # The lab's hosts and the relays on S are private addresses coturn would refuse.
            lab_networks = [str(network) for network in self.lab.networks.values()]
            self.turn = TurnServer(
                self.work_dir / "turn",
                listening_ips=[server],
                allowed_peer_networks=lab_networks,
                exec_prefix=prefix,
            )
            await self.turn.start()
            self.homeserver = Homeserver(
                self.work_dir / "synapse", host=server, turn=self.turn, exec_prefix=prefix
            )
            await self.homeserver.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def register(self, name: str) -> Account:
        """A fresh account (a random suffix keeps runs apart)."""
        assert self.homeserver is not None
        username = f"{name}{uuid.uuid4().hex[:8]}"
        return await self.homeserver.register(username, secrets.token_urlsafe(16))

    async def stop(self) -> None:
        """Stop both servers and remove the lab."""
        if self.homeserver is not None:
            await self.homeserver.stop()
        if self.turn is not None:
            await self.turn.stop()
        await asyncio.to_thread(self.lab.delete)

    async def __aenter__(self) -> LabServers:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class LabPeer:
    """A :mod:`~sealcall.bench.net_peer` process in host ``host`` of the lab; its report lines
    are kept in ``lines`` (bounded by the call: a few per state change and per sample)."""

    def __init__(
        self,
        servers: LabServers,
        host: str,
        account: Account,
        *,
        relay_only: bool = False,
        turn: str | None = "udp",
        forbid: Sequence[str] = (),
        ice_timeout: float = 10.0,
        reconnect_timeout: float | None = None,
        size: str = "320x240",
        fps: float = 15.0,
    ) -> None:
        self.servers = servers
        self.host = host
        self.account = account
        self.options = [
            *(["--relay-only"] if relay_only else []),
            *(["--turn-transport", turn] if turn else ["--no-turn"]),
            *(arg for address in forbid for arg in ("--forbid", address)),
            "--ice-timeout", str(ice_timeout), "--size", size, "--fps", str(fps),
            *([] if reconnect_timeout is None else ["--reconnect-timeout", str(reconnect_timeout)]),
        ]  # fmt: skip
        self.lines: list[Line] = []
        self.log_path = servers.work_dir / f"peer-{account.user_id[1:].split(':')[0]}.log"
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def user_id(self) -> str:
        """The peer's Matrix user."""
        return self.account.user_id

    async def start(self) -> LabPeer:
        """Start the process and wait until it has logged in."""
        assert self.servers.homeserver is not None
        lab = self.servers.lab
        store = self.servers.work_dir / "stores" / self.account.user_id[1:].split(":")[0]
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *lab.exec_prefix(self.host),
                sys.executable, "-m", "sealcall.bench.net_peer",
                "--homeserver", self.servers.homeserver.url,
                "--user", self.account.user_id,
                "--store", str(store),
                "--host-address", lab.address(self.host),
                *self.options,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env={**os.environ, "SEALCALL_PASSWORD": self.account.password},
                limit=1 << 20,
            )  # fmt: skip
        self._reader = asyncio.ensure_future(self._read(self._process))
        await self.wait(lambda line: "ready" in line, 60, "login")
        return self

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(line))
                self._changed.set()
        self._changed.set()

    def send(self, message: Line) -> None:
        """Give the peer a command."""
        assert self._process is not None
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(message).encode() + b"\n")

    async def wait(
        self, condition: Callable[[Line], bool], timeout: float, what: str, start: int = 0
    ) -> Line:
        """The first report line from index ``start`` on that meets ``condition``."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[start:]:
                if condition(line):
                    return line
            start = len(self.lines)
            if self._reader is None or self._reader.done():
                raise PeerError(
                    f"the peer in {self.host} exited before {what}; see {self.log_path}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PeerError(f"the peer in {self.host} did not report {what} in {timeout:.0f} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def sample(self, since: float | None = None) -> Line:
        """What the peer has seen so far (see :meth:`NetPeer.sample`); with ``since`` (a
        wall-clock time) also what it decoded after then."""
        start = len(self.lines)
        self.send({"sample": True if since is None else {"since": since}})
        line = await self.wait(lambda line: "sample" in line, 30, "a sample", start)
        sample: Line = line["sample"]
        return sample

    def states(self) -> list[str]:
        """The call states reported so far, in order."""
        return [line["state"] for line in self.lines if "state" in line]

    def ended(self) -> str | None:
        """The reason the call ended, if it did."""
        return next((line["ended"] for line in self.lines if "ended" in line), None)

    async def wait_state(self, state: str, timeout: float, start: int = 0) -> Line:
        """The first report of call state ``state`` (from line ``start`` on)."""
        return await self.wait(lambda line: line.get("state") == state, timeout, state, start)

    async def stop(self) -> None:
        """Ask the peer to stop (it hangs up) and wait for it; kill it if it does not stop."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ConnectionError):
                assert process.stdin is not None
                process.stdin.write(b'{"stop": true}\n')
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._reader is not None:
            await self._reader


async def connect_call(caller: LabPeer, callee: LabPeer, timeout: float = 60) -> None:
    """Open the DM between the two peers and have ``caller`` place a video call that both
    report connected."""
    caller.send({"open_dm": callee.user_id})
    callee.send({"join_dm": caller.user_id})
    room = await caller.wait(lambda line: "room" in line, timeout, "the DM")
    await callee.wait(lambda line: "room" in line, timeout, "the DM")
    caller.send({"call": {"room": room["room"], "peer": callee.user_id}})
    await caller.wait_state("connected", timeout)
    await callee.wait_state("connected", timeout)

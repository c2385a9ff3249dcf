"""Janus (Debian package ``janus``) as the baseline SFU of ``sfu-bench``.

:class:`JanusServer` runs Janus as a subprocess in a temporary folder from a generated minimal
configuration: only the VideoRoom plugin and the plain HTTP transport; no STUN server, no 1:1 NAT,
warnings and errors only in its log. Janus's ICE agent (libnice) never gathers on a loopback
interface, so Janus runs inside a network namespace made for it (:mod:`.netns`): its HTTP API and
ICE are on the namespace's end of a veth pair, and the load's ICE on our end (``load_address``).
:class:`JanusSession` speaks the Janus HTTP API (sessions, handles, long-polled events) with
aiohttp and has VideoRoom helpers: create a room, publish, subscribe, start.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .netns import NetworkNamespace

JANUS_BINARY = "janus"
LIB_DIR = Path("/usr/lib/x86_64-linux-gnu/janus")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
REQUEST_TIMEOUT = 15.0
HTTP_PORT = 8088  # inside Janus's own network namespace, so never taken by anyone else
INSTALL_HINT = "Janus is not installed: apt-get install janus (the Debian package)"


class JanusNotInstalledError(RuntimeError):
    """The ``janus`` binary or its VideoRoom/HTTP modules are missing."""


class JanusError(RuntimeError):
    """Janus answered a request with an error (or the VideoRoom plugin did)."""


def _library_dir() -> Path:
    """Where Debian put Janus's plugins and transports (multiarch path first)."""
    for candidate in (LIB_DIR, *Path("/usr/lib").glob("*/janus"), Path("/usr/lib/janus")):
        if (candidate / "plugins" / "libjanus_videoroom.so").exists():
            return candidate
    raise JanusNotInstalledError(INSTALL_HINT)


def janus_config(folder: Path, http_port: int, ice_address: str) -> dict[str, str]:
    """The generated configuration files (name -> text) for a Janus confined to ``folder``."""
    return {
        "janus.jcfg": f"""general: {{
  configs_folder = "{folder}"
  plugins_folder = "{folder}/plugins"
  transports_folder = "{folder}/transports"
  events_folder = "{folder}/none"
  loggers_folder = "{folder}/none"
  debug_level = 3
  interface = "{ice_address}"
  session_timeout = 60
}}
media: {{
}}
nat: {{
  nice_debug = false
  ice_enforce_list = "{ice_address}"
  ignore_mdns = true
}}
plugins: {{
}}
transports: {{
}}
events: {{
  broadcast = false
}}
""",
        "janus.transport.http.jcfg": f"""general: {{
  json = "plain"
  base_path = "/janus"
  http = true
  port = {http_port}
  ip = "{ice_address}"
  https = false
}}
admin: {{
  admin_http = false
  admin_https = false
}}
""",
        "janus.plugin.videoroom.jcfg": "general: {\n}\n",
    }


class JanusServer:
    """One Janus process in its own temporary folder and network namespace; ``start``, ``stop``.

    ``janus_address`` is Janus's address in its namespace (HTTP API and ICE), ``load_address``
    ours on the veth pair: the only host address the load's connections may use for ICE.
    """

    def __init__(self, binary: str = JANUS_BINARY, ip: str = "ip") -> None:
        self.binary = binary
        self.ip = ip
        self.port = HTTP_PORT
        self.folder: Path | None = None
        self.namespace: NetworkNamespace | None = None
        self._process: asyncio.subprocess.Process | None = None

    @property
    def janus_address(self) -> str:
        """Janus's address inside its namespace."""
        if self.namespace is None:
            raise RuntimeError("Janus is not running")
        return self.namespace.inner_address

    @property
    def load_address(self) -> str:
        """Our end of the veth pair: the load generator's only ICE host address."""
        if self.namespace is None:
            raise RuntimeError("Janus is not running")
        return self.namespace.outer_address

    @property
    def url(self) -> str:
        """The HTTP API's base URL."""
        return f"http://{self.janus_address}:{self.port}/janus"

    @property
    def pid(self) -> int:
        """The Janus process id (for its CPU time and memory in /proc)."""
        if self._process is None:
            raise RuntimeError("Janus is not running")
        return self._process.pid

    def log(self) -> str:
        """What Janus wrote to its log so far (warnings and errors)."""
        if self.folder is None or not (self.folder / "janus.log").exists():
            return ""
        return (self.folder / "janus.log").read_text(errors="replace")

    async def start(self) -> None:
        """Make the namespace, write the configuration, start Janus, wait for its HTTP API."""
        binary = shutil.which(self.binary)
        if binary is None:
            raise JanusNotInstalledError(INSTALL_HINT)
        library = _library_dir()
        try:
            self.namespace = NetworkNamespace(self.ip).create()
            await self._launch(binary, library)
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def _launch(self, binary: str, library: Path) -> None:
        assert self.namespace is not None
        self.folder = Path(tempfile.mkdtemp(prefix="sealcall-janus-"))
        for name in ("plugins", "transports", "none"):
            (self.folder / name).mkdir()
        (self.folder / "plugins" / "libjanus_videoroom.so").symlink_to(
            library / "plugins" / "libjanus_videoroom.so"
        )
        (self.folder / "transports" / "libjanus_http.so").symlink_to(
            library / "transports" / "libjanus_http.so"
        )
        for name, text in janus_config(self.folder, self.port, self.janus_address).items():
            (self.folder / name).write_text(text)
        with open(self.folder / "janus.log", "wb") as log:
            # ip netns exec execs the program: the process id is Janus's own.
            self._process = await asyncio.create_subprocess_exec(
                *self.namespace.exec_prefix(),
                binary,
                "--config",
                str(self.folder / "janus.jcfg"),
                "--configs-folder",
                str(self.folder),
                "--disable-colors",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )

    async def _wait_ready(self) -> None:
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        async with aiohttp.ClientSession() as http:
            while True:
                assert self._process is not None
                if self._process.returncode is not None:
                    raise JanusError(f"Janus exited at start: {self.log()[-2000:]}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.url}/info") as response:
                        if response.status == 200:
                            return
                if asyncio.get_running_loop().time() > deadline:
                    raise JanusError("Janus did not answer within the start timeout")
                await asyncio.sleep(0.1)

    async def stop(self) -> int | None:
        """Stop Janus (SIGINT, its clean shutdown; SIGKILL after a timeout); its exit code.

        Also deletes its folder and its network namespace (with the veth pair).
        """
        process, self._process = self._process, None
        code: int | None = None
        try:
            if process is not None:
                if process.returncode is None:
                    process.send_signal(signal.SIGINT)
                    try:
                        await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
                    except TimeoutError:
                        process.kill()
                        await process.wait()
                code = process.returncode
        finally:
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)
                self.folder = None
            namespace, self.namespace = self.namespace, None
            if namespace is not None:
                namespace.delete()
        return code


@dataclass(frozen=True)
class Jsep:
    """A session description as Janus carries it."""

    type: str
    sdp: str


class JanusSession:
    """One Janus API session over HTTP, with a long-poll task dispatching plugin events."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session_id = 0
        self._http: aiohttp.ClientSession | None = None
        self._poller: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def __aenter__(self) -> JanusSession:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
        reply = await self._post(self.url, {"janus": "create"})
        self.session_id = int(reply["data"]["id"])
        self._poller = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._http is not None:
            with contextlib.suppress(aiohttp.ClientError, JanusError, TimeoutError):
                await self._post(f"{self.url}/{self.session_id}", {"janus": "destroy"})
            await self._http.close()

    async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self._http is not None
        body = {**body, "transaction": body.get("transaction", f"t{next(self._ids)}")}
        async with self._http.post(url, json=body) as response:
            reply: dict[str, Any] = await response.json(content_type=None)
        if reply.get("janus") == "error":
            raise JanusError(str(reply.get("error")))
        return reply

    async def _poll(self) -> None:
        """Long-poll the session's events; resolve the futures of asynchronous plugin replies."""
        assert self._http is not None
        url = f"{self.url}/{self.session_id}?maxev=10"
        timeout = aiohttp.ClientTimeout(total=60)
        while True:
            try:
                async with self._http.get(url, timeout=timeout) as response:
                    events = await response.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.2)
                continue
            for event in events if isinstance(events, list) else [events]:
                waiter = self._waiting.pop(str(event.get("transaction")), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(event)

    async def attach(self, plugin: str = "janus.plugin.videoroom") -> int:
        """A new handle on ``plugin``."""
        reply = await self._post(
            f"{self.url}/{self.session_id}", {"janus": "attach", "plugin": plugin}
        )
        return int(reply["data"]["id"])

    async def message(
        self, handle: int, body: dict[str, Any], jsep: Jsep | None = None
    ) -> tuple[dict[str, Any], Jsep | None]:
        """Send a plugin request; its plugin data and JSEP (synchronous reply or later event)."""
        transaction = f"t{next(self._ids)}"
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[transaction] = waiter
        request: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            request["jsep"] = {"type": jsep.type, "sdp": jsep.sdp}
        try:
            reply = await self._post(f"{self.url}/{self.session_id}/{handle}", request)
            if reply.get("janus") == "ack":
                reply = await asyncio.wait_for(waiter, REQUEST_TIMEOUT)
        finally:
            self._waiting.pop(transaction, None)
        data: dict[str, Any] = reply.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(f"{data.get('error_code')}: {data['error']}")
        raw = reply.get("jsep")
        return data, Jsep(raw["type"], raw["sdp"]) if raw else None

    async def create_room(self, handle: int, room: int, publishers: int) -> None:
        """A VideoRoom for up to ``publishers`` senders of Opus and VP8."""
        await self.message(
            handle,
            {
                "request": "create",
                "room": room,
                "publishers": publishers,
                "audiocodec": "opus",
                "videocodec": "vp8",
                "bitrate": 0,
                "notify_joining": False,
            },
        )

    async def publish(self, handle: int, room: int, name: str, offer: Jsep) -> tuple[int, Jsep]:
        """Join ``room`` as a publisher with ``offer``; its feed id and Janus's answer."""
        data, answer = await self.message(
            handle,
            {"request": "joinandconfigure", "room": room, "ptype": "publisher", "display": name},
            offer,
        )
        if answer is None:
            raise JanusError("no answer to the publisher's offer")
        return int(data["id"]), answer

    async def subscribe(self, handle: int, room: int, feeds: list[int]) -> Jsep:
        """Subscribe to all streams of ``feeds``; Janus's offer (answer it with :meth:`start`)."""
        _, offer = await self.message(
            handle,
            {
                "request": "join",
                "room": room,
                "ptype": "subscriber",
                "streams": [{"feed": feed} for feed in feeds],
            },
        )
        if offer is None:
            raise JanusError("no offer for the subscription")
        return offer

    async def start(self, handle: int, room: int, answer: Jsep) -> None:
        """Answer a subscription's offer: Janus starts forwarding."""
        await self.message(handle, {"request": "start", "room": room}, answer)


@dataclass
class JanusRoom:
    """A VideoRoom with its publishers and subscribers (aiortc connections) on one session."""

    session: JanusSession
    room: int
    feeds: list[int]
    connections: list[Any]


async def publish_clip(session: JanusSession, room: int, pc: Any, name: str) -> int:
    """Publish ``pc``'s tracks to ``room``; the feed id."""
    from aiortc import RTCSessionDescription

    handle = await session.attach()
    await pc.setLocalDescription(await pc.createOffer())
    feed, answer = await session.publish(handle, room, name, Jsep("offer", pc.localDescription.sdp))
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type=answer.type))
    return feed


async def wait_connected(pc: Any, timeout: float = REQUEST_TIMEOUT) -> None:
    """Wait until ``pc`` is connected (Janus offers a feed only once its publisher is up)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed"):
            raise JanusError(f"connection to Janus {pc.connectionState}")
        if asyncio.get_running_loop().time() > deadline:
            raise JanusError("connection to Janus not established in time")
        await asyncio.sleep(0.05)


async def subscribe_all(session: JanusSession, room: int, pc: Any, feeds: list[int]) -> None:
    """Subscribe ``pc`` to every stream of ``feeds`` (one connection, Janus's offer)."""
    from aiortc import RTCSessionDescription

    handle = await session.attach()
    deadline = asyncio.get_running_loop().time() + REQUEST_TIMEOUT
    while True:
        try:
            offer = await session.subscribe(handle, room, feeds)
            break
        except JanusError as error:
            # 428: a feed whose media is not up yet (Janus lists it only once it is).
            if not str(error).startswith("428") or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type=offer.type))
    await pc.setLocalDescription(await pc.createAnswer())
    await session.start(handle, room, Jsep("answer", pc.localDescription.sdp))

"""The page server of ``sealcall app``: the page, its static files and the page socket on 127.0.0.1.

Everything is refused unless it carries the per-launch secret as the first path segment
(compared in constant time) and a ``Host`` of this server (a DNS-rebinding page fails there); the
socket also needs this server's ``Origin``. A refusal is a bare ``404`` (``403`` for a bad
``Origin``), one log line without the path, and a count in :attr:`PageServer.refused_requests`.
Messages go through :func:`sealcall.web.protocol.parse_message`; a refused one gets an ``error``
reply when it had a usable ``id``, and the 50th refused message closes its socket (1008).
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web

from sealcall.web.page_socket import PageApp, PageError, PageSocket
from sealcall.web.protocol import (
    MAX_MESSAGE_CHARS,
    ProtocolError,
    Request,
    error,
    parse_message,
    result,
)

log = logging.getLogger(__name__)

DEFAULT_STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
MAX_REFUSED_MESSAGES: Final = 50
"""Refused messages after which a socket is closed (1008)."""
MAX_IN_FLIGHT: Final = 16
"""Requests of one socket handled at once; past that the socket is not read until one finishes."""

CLOSE_POLICY: Final = 1008
CLOSE_UNSUPPORTED: Final = 1003
CLOSE_GOING_AWAY: Final = 1001

_STATIC_NAME: Final = re.compile(r"/static/([a-z0-9_-]+\.(?:js|css|html|wav))")
_CONTENT_TYPES: Final = {
    "js": "text/javascript",
    "css": "text/css",
    "html": "text/html",
    "wav": "audio/wav",
}


def _content_type(name: str) -> str:
    return _CONTENT_TYPES[name.rsplit(".", 1)[1]]


_CONNECT_SOURCE: Final = re.compile(r"wss?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~\-/%]*)?")


class PageServer:
    """Serves the page and its socket on ``host:port`` (0: any free port) for one ``PageApp``;
    ``connect``: the SFU socket URLs its page may open too (its CSP's ``connect-src``)."""

    def __init__(
        self,
        app: PageApp,
        *,
        static_dir: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        connect: Sequence[str] = (),
    ) -> None:
        self._app = app
        # Further addresses the page's CSP lets it connect to (the SFU's socket), no other: one
        # exact ws(s) URL each, nothing that could widen or end the policy.
        if any(not _CONNECT_SOURCE.fullmatch(c) for c in connect):
            raise ValueError("connect sources must be ws:// or wss:// URLs")
        self._connect = tuple(connect)
        self._static_dir = static_dir if static_dir is not None else DEFAULT_STATIC_DIR
        self._host = host
        self._port = port
        self._secret = secrets.token_urlsafe(32)
        self._runner: web.AppRunner | None = None
        self._sockets: dict[int, PageSocket] = {}
        self._handlers: set[asyncio.Task[Any]] = set()
        self._requests: set[asyncio.Task[None]] = set()
        self._numbers = 0
        self._hosts: frozenset[str] = frozenset()
        self._origins: frozenset[str] = frozenset()
        self._csp = ""
        self.refused_requests: collections.Counter[str] = collections.Counter()
        """Refused HTTP requests by reason: ``host``, ``secret``, ``path``, ``origin``."""
        self.refused_messages = 0
        """Page socket messages refused by the parser, all sockets together."""
        self.closed_sockets: collections.Counter[str] = collections.Counter()
        """Sockets the server closed, by reason: ``too_big``, ``binary``, ``refused``, ``slow``."""
        self.app_errors = 0
        """Unexpected exceptions of the app (answered ``failed`` or dropped; logged by type)."""

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        return self._port

    @property
    def url(self) -> str:
        """The page's address, secret included: give it to the browser only, never to a log."""
        return f"http://{self._host}:{self._port}/{self._secret}/"

    @property
    def sockets(self) -> tuple[PageSocket, ...]:
        """The open page sockets, oldest first."""
        return tuple(self._sockets.values())

    async def start(self) -> str:
        """Bind and serve; return the page's URL (with the secret)."""
        application = web.Application()
        application.router.add_route("*", "/{tail:.*}", self._handle)
        application.on_response_prepare.append(self._add_headers)
        # No access log: every path carries the secret.
        runner = web.AppRunner(application, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self._hosts = frozenset({f"127.0.0.1:{self._port}", f"localhost:{self._port}"})
        self._origins = frozenset(f"http://{host}" for host in self._hosts)
        connect_sources = (
            f"ws://127.0.0.1:{self._port}",
            f"ws://localhost:{self._port}",
            *self._connect,
        )
        self._csp = (
            "default-src 'self'; script-src 'self'; worker-src 'self'; "
            f"connect-src {' '.join(connect_sources)}; "
            "img-src 'self' data: blob:; media-src 'self' blob:; object-src 'none'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        return self.url

    async def stop(self) -> None:
        """Close every page socket (1001) and stop serving."""
        await asyncio.gather(*(socket.close(CLOSE_GOING_AWAY) for socket in self._sockets.values()))
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        # Requests still running would answer sockets that are gone.
        leftovers = [*self._handlers, *self._requests]
        for task in leftovers:
            task.cancel()
        if leftovers:
            await asyncio.gather(*leftovers, return_exceptions=True)

    # --- HTTP ------------------------------------------------------------------------------------

    async def _add_headers(self, _request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers["Cache-Control"] = "no-store"
        headers["X-Frame-Options"] = "DENY"
        headers["Referrer-Policy"] = "no-referrer"
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Cross-Origin-Opener-Policy"] = "same-origin"
        headers["Cross-Origin-Resource-Policy"] = "same-origin"
        headers["Content-Security-Policy"] = self._csp

    def _refuse(self, reason: str) -> web.Response:
        self.refused_requests[reason] += 1
        log.warning("page server: refused a request (%s)", reason)
        return web.Response(status=403 if reason == "origin" else 404)

    def _route(self, request: web.Request) -> str | None:
        """What a request asks for after the secret (``""``, ``ws``, a static name) or a refusal."""
        hosts = request.headers.getall("Host", [])
        if len(hosts) != 1 or hosts[0] not in self._hosts:
            raise _RefusedError("host")
        path = request.raw_path.split("?", 1)[0]
        head, slash, rest = path.removeprefix("/").partition("/")
        if not hmac.compare_digest(
            head.encode("utf-8", "replace"), self._secret.encode("ascii")
        ) or not path.startswith("/"):
            raise _RefusedError("secret")
        if request.method != "GET" or not slash:
            raise _RefusedError("path")
        if rest in ("", "ws"):
            return rest
        match = _STATIC_NAME.fullmatch("/" + rest)
        if match is None:
            raise _RefusedError("path")
        return match.group(1)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            target = self._route(request)
        except _RefusedError as refused:
            return self._refuse(refused.reason)
        if target == "ws":
            return await self._socket(request)
        name = "index.html" if target == "" else target
        assert name is not None
        file = self._static_dir / name
        try:
            body = await asyncio.to_thread(file.read_bytes)
        except OSError:
            return self._refuse("path")
        content_type = _content_type(name)
        charset = None if content_type.startswith("audio/") else "utf-8"
        return web.Response(body=body, content_type=content_type, charset=charset)

    # --- the page socket -------------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        origins = request.headers.getall("Origin", [])
        if len(origins) != 1 or origins[0] not in self._origins:
            return self._refuse("origin")
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_CHARS, compress=False, timeout=2.0)
        if not ws.can_prepare(request).ok:
            return self._refuse("path")
        await ws.prepare(request)
        self._numbers += 1
        socket = PageSocket(self._numbers, ws, request.transport)
        self._sockets[socket.number] = socket
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await self._serve(socket, ws)
        finally:
            self._sockets.pop(socket.number, None)
            if task is not None:
                self._handlers.discard(task)
            await socket.closed_down()
            if socket.overflowed:
                self.closed_sockets["slow"] += 1
            try:
                await self._app.page_closed(socket)
            except Exception as exc:
                self._app_error("page_closed", exc)
        return ws

    async def _serve(self, socket: PageSocket, ws: web.WebSocketResponse) -> None:
        try:
            await self._app.page_opened(socket)
        except Exception as exc:
            self._app_error("page_opened", exc)
            await socket.close(1011)
            return
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        while not socket.closed:
            message = await ws.receive()
            if message.type is WSMsgType.TEXT:
                await self._message(socket, message.data, slots)
            elif message.type is WSMsgType.BINARY:
                self._close_for(socket, "binary")
                await socket.close(CLOSE_UNSUPPORTED)
            else:
                # CLOSE/CLOSING/CLOSED, or ERROR: aiohttp has closed it (1009 for a big frame).
                if message.type is WSMsgType.ERROR:
                    too_big = (
                        isinstance(message.data, WebSocketError)
                        and message.data.code == WSCloseCode.MESSAGE_TOO_BIG
                    )
                    self._close_for(socket, "too_big" if too_big else "error")
                return

    async def _message(
        self,
        socket: PageSocket,
        text: str,
        slots: asyncio.Semaphore,
    ) -> None:
        try:
            parsed = parse_message(text)
        except ProtocolError as exc:
            self.refused_messages += 1
            socket.refused_messages += 1
            log.warning("page socket %d: refused a message (%s)", socket.number, exc.message)
            if exc.request_id is not None:
                await socket.send(error(exc.request_id, exc.code, exc.message))
            if socket.refused_messages >= MAX_REFUSED_MESSAGES:
                self._close_for(socket, "refused")
                await socket.close(CLOSE_POLICY)
            return
        if isinstance(parsed, Request):
            await slots.acquire()
            task = asyncio.get_running_loop().create_task(self._request(socket, parsed, slots))
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)
            return
        try:
            self._app.page_media_result(socket, parsed)
        except Exception as exc:
            self._app_error("page_media_result", exc)

    async def _request(
        self, socket: PageSocket, request: Request, slots: asyncio.Semaphore
    ) -> None:
        """Answer one request: exactly one ``result`` or ``error`` reply, whatever the app does."""
        try:
            try:
                fields = await self._app.page_request(socket, request)
                reply = result(request.id, **fields)
            except PageError as exc:
                reply = error(request.id, exc.code, exc.message)
            except Exception as exc:
                self._app_error(type(request).__name__, exc)
                reply = error(request.id, "failed", "the request failed")
            try:
                await socket.send(reply)
            except (TypeError, ValueError) as exc:
                # Result fields that are not JSON: still exactly one reply.
                self._app_error(type(request).__name__, exc)
                await socket.send(error(request.id, "failed", "the request failed"))
        finally:
            slots.release()

    def _close_for(self, socket: PageSocket, reason: str) -> None:
        self.closed_sockets[reason] += 1
        log.warning("page socket %d: closing it (%s)", socket.number, reason)

    def _app_error(self, where: str, exc: Exception) -> None:
        self.app_errors += 1
        log.error("page app: %s raised %s", where, type(exc).__name__)


class _RefusedError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


__all__ = ["PageApp", "PageError", "PageServer", "PageSocket"]

"""TEST HELPER: a stub of ``sealcall app``'s page server, for the page's browser tests.

It serves the real page (``src/sealcall/web/static/``) at ``/<secret>/`` and answers the page
socket with canned data: ``hello``, ``list_rooms`` and ``get_history`` from what the test gives,
every other request with an empty ``result``. The test pushes events to the page and reads what
the page sent. ``static/e2ee_worker.js`` is the pass-through stand-in tests/web_stub_worker.js,
not the real SFrame worker, unless ``real_worker`` says so; ``connect`` adds origins the page's
CSP lets it connect to (an SFU's ``ws://host:port``). Nothing here is the real server
(src/sealcall/web/ is).
"""

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

STATIC = Path(__file__).resolve().parent.parent / "src" / "sealcall" / "web" / "static"
STUB_WORKER = Path(__file__).resolve().parent / "web_stub_worker.js"
TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}


@dataclass
class StubPageServer:
    """One stub page server on 127.0.0.1; ``sent`` holds every message the page sent."""

    me: dict[str, Any]
    rooms: list[dict[str, Any]]
    history: dict[str, list[dict[str, Any]]]
    sent: list[dict[str, Any]] = field(default_factory=list)
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    url: str = ""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    real_worker: bool = False
    connect: tuple[str, ...] = ()
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(f"/{self.secret}/", self._index)
        app.router.add_get(f"/{self.secret}/static/{{name}}", self._static)
        app.router.add_get(f"/{self.secret}/ws", self._socket)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/{self.secret}/"

    async def close(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _index(self, request: web.Request) -> web.Response:
        return self._file(STATIC / "index.html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "e2ee_worker.js" and not self.real_worker:
            return self._file(STUB_WORKER)
        path = STATIC / name
        if "/" in name or not path.is_file():
            raise web.HTTPNotFound()
        return self._file(path)

    def _file(self, path: Path) -> web.Response:
        # The real server's policy (docs/web-protocol.md), so the page is checked under it.
        host = self.url.split("/")[2]
        connect = " ".join((f"ws://{host}", *self.connect))
        csp = (
            "default-src 'self'; script-src 'self'; worker-src 'self'; "
            f"connect-src {connect}; img-src 'self' data: blob:; media-src 'self' blob:; "
            "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        return web.Response(
            body=path.read_bytes(),
            content_type=TYPES.get(path.suffix, "application/octet-stream"),
            headers={"Content-Security-Policy": csp, "Cache-Control": "no-store"},
        )

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        try:
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    continue
                msg = json.loads(frame.data)
                self.sent.append(msg)
                self.changed.set()
                if "id" in msg:
                    await ws.send_json(self._reply(msg))
        finally:
            self.sockets.remove(ws)
        return ws

    def _reply(self, msg: dict[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = {"type": "result", "id": msg["id"]}
        if msg["type"] == "hello":
            reply.update(self.me)
        elif msg["type"] == "list_rooms":
            reply["rooms"] = self.rooms
        elif msg["type"] == "get_history":
            reply["items"] = self.history.get(msg["room_id"], [])
        elif msg["type"] == "place_call":
            reply["call_id"] = "call-placed"
        return reply

    async def push(self, msg: dict[str, Any]) -> None:
        """Send an event to every open page socket."""
        for ws in list(self.sockets):
            await ws.send_json(msg)

    async def wait_sent(self, predicate: Any, timeout: float = 15.0) -> dict[str, Any]:
        """The first message the page sent that satisfies ``predicate`` (waits for it)."""
        async with asyncio.timeout(timeout):
            while True:
                for msg in self.sent:
                    if predicate(msg):
                        return msg
                self.changed.clear()
                await self.changed.wait()

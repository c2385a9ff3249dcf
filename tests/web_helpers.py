"""A fake page app, raw HTTP requests and page socket helpers for the page server's tests."""

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from sealcall.web.page_socket import PageError, PageSocket
from sealcall.web.protocol import (
    GetHistory,
    HangUp,
    Hello,
    ListRooms,
    MediaResult,
    PlaceCall,
    Request,
)
from sealcall.web.server import PageServer

INDEX = "<!doctype html><title>sealcall test page</title>"
SCRIPT = "export const answer = 42;\n"
APP_SECRET = "app-internal-detail"


class FakeApp:
    """Answers requests by type, remembers what reached it."""

    def __init__(self) -> None:
        self.opened: list[PageSocket] = []
        self.closed: list[PageSocket] = []
        self.requests: list[tuple[int, Request]] = []
        self.media: list[tuple[int, MediaResult]] = []
        self.release_place_call = asyncio.Event()

    async def page_opened(self, socket: PageSocket) -> None:
        self.opened.append(socket)

    async def page_request(self, socket: PageSocket, request: Request) -> dict[str, Any]:
        self.requests.append((socket.number, request))
        if isinstance(request, Hello):
            return {"user_id": "@page:test", "device_id": "DEV", "display_name": "Page"}
        if isinstance(request, GetHistory):
            raise PageError("not_found", "no such room")
        if isinstance(request, HangUp):
            raise RuntimeError(APP_SECRET)
        if isinstance(request, ListRooms):
            return {"rooms": [object()]}  # not JSON: the server must still reply once
        if isinstance(request, PlaceCall):
            await self.release_place_call.wait()
            return {"call_id": "call-1"}
        return {}

    def page_media_result(self, socket: PageSocket, result: MediaResult) -> None:
        self.media.append((socket.number, result))

    async def page_closed(self, socket: PageSocket) -> None:
        self.closed.append(socket)


def make_static(root: Path) -> Path:
    """A static folder with a dummy page and one script."""
    static = root / "static"
    static.mkdir()
    (static / "index.html").write_text(INDEX)
    (static / "app.js").write_text(SCRIPT)
    (root / "outside.js").write_text("secret outside the static folder")
    return static


@asynccontextmanager
async def page_server(root: Path) -> AsyncIterator[tuple[PageServer, FakeApp]]:
    """A started page server over a dummy static folder; stopped afterwards."""
    app = FakeApp()
    server = PageServer(app, static_dir=make_static(root))
    await server.start()
    try:
        yield server, app
    finally:
        app.release_place_call.set()
        await server.stop()


def origin(server: PageServer) -> str:
    return f"http://127.0.0.1:{server.port}"


async def open_page(
    session: aiohttp.ClientSession, server: PageServer
) -> aiohttp.ClientWebSocketResponse:
    """The real page's socket: right secret, right Origin."""
    return await session.ws_connect(server.url + "ws", origin=origin(server))


async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await ws.receive(timeout=10)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    value = json.loads(message.data)
    assert isinstance(value, dict)
    return value


async def request(ws: aiohttp.ClientWebSocketResponse, message: dict[str, Any]) -> dict[str, Any]:
    """Send one request; return its reply (skipping nothing: the socket must have no other)."""
    await ws.send_str(json.dumps(message))
    reply = await receive_json(ws)
    assert reply["id"] == message["id"]
    return reply


async def hello_works(ws: aiohttp.ClientWebSocketResponse, request_id: str = "still-there") -> None:
    reply = await request(ws, {"type": "hello", "id": request_id, "e2ee": True})
    assert reply == {
        "type": "result",
        "id": request_id,
        "user_id": "@page:test",
        "device_id": "DEV",
        "display_name": "Page",
    }


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read until the server closes the socket; return its close code."""
    while True:
        message = await ws.receive(timeout=10)
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            return ws.close_code
        if message.type is aiohttp.WSMsgType.ERROR:
            return ws.close_code


async def raw_http(port: int, head: str) -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (request line and headers, no blank line) as is; status, headers, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode("latin-1") + b"\r\nConnection: close\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    header_block, _, body = data.partition(b"\r\n\r\n")
    lines = header_block.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body

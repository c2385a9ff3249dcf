"""The page server over real sockets (aiohttp's client): the secret, Host and Origin checks, the
security headers, the request/reply rule, media results, and sockets closed for hostile input
while the real page's socket keeps working."""

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sealcall.web.page_socket import MAX_QUEUED_CHARS
from sealcall.web.protocol import MAX_MESSAGE_CHARS, LocalCandidates, LocalDescription
from sealcall.web.server import MAX_REFUSED_MESSAGES, PageServer
from web_helpers import (
    APP_SECRET,
    INDEX,
    SCRIPT,
    FakeApp,
    closed_with,
    hello_works,
    open_page,
    page_server,
    raw_http,
    receive_json,
    request,
)

from media_helpers import until

Served = tuple[PageServer, FakeApp, aiohttp.ClientSession]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with page_server(tmp_path) as (server, app), aiohttp.ClientSession() as session:
        yield server, app, session


def check_security_headers(server: PageServer, headers: Any) -> None:
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "worker-src 'self'" in csp
    assert f"connect-src ws://127.0.0.1:{server.port} ws://localhost:{server.port};" in csp


async def test_the_page_and_a_static_file_are_served_with_the_secret(served: Served) -> None:
    server, _, session = served
    assert server.url.startswith(f"http://127.0.0.1:{server.port}/")
    async with session.get(server.url) as page:
        assert page.status == 200
        assert page.content_type == "text/html"
        assert await page.text() == INDEX
        check_security_headers(server, page.headers)
    async with session.get(server.url + "static/app.js") as script:
        assert script.status == 200
        assert script.content_type == "text/javascript"
        assert await script.text() == SCRIPT
        check_security_headers(server, script.headers)
    assert sum(server.refused_requests.values()) == 0


async def test_localhost_form_of_host_and_origin_is_accepted(served: Served) -> None:
    server, _, session = served
    url = server.url.replace("127.0.0.1", "localhost")
    async with session.get(url) as page:
        assert page.status == 200
    ws = await session.ws_connect(url + "ws", origin=f"http://localhost:{server.port}")
    await hello_works(ws)
    await ws.close()


def refused_cases(secret: str, port: int) -> list[tuple[str, str, int]]:
    """(request head, reason, status) for every way in that must be refused."""
    host = f"Host: 127.0.0.1:{port}"
    upgrade = (
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
    )
    good_origin = f"Origin: http://127.0.0.1:{port}"
    return [
        (f"GET /{'A' * len(secret)}/ HTTP/1.1\r\n{host}", "secret", 404),
        (f"GET / HTTP/1.1\r\n{host}", "secret", 404),
        (f"GET /favicon.ico HTTP/1.1\r\n{host}", "secret", 404),
        (f"GET /{secret}x/ HTTP/1.1\r\n{host}", "secret", 404),
        (f"GET /{secret[:-1]}/ HTTP/1.1\r\n{host}", "secret", 404),
        (f"GET /static/app.js HTTP/1.1\r\n{host}", "secret", 404),
        (f"GET /{secret} HTTP/1.1\r\n{host}", "path", 404),
        (f"GET /{secret}/static/../outside.js HTTP/1.1\r\n{host}", "path", 404),
        (f"GET /{secret}/static/..%2foutside.js HTTP/1.1\r\n{host}", "path", 404),
        (f"GET /{secret}/static/%2e%2e/outside.js HTTP/1.1\r\n{host}", "path", 404),
        (f"GET /{secret}/static/app%2ejs HTTP/1.1\r\n{host}", "path", 404),
        (f"GET /{secret}/static/APP.JS HTTP/1.1\r\n{host}", "path", 404),
        (f"GET /{secret}/static/missing.js HTTP/1.1\r\n{host}", "path", 404),
        (f"GET /{secret}/static/app.py HTTP/1.1\r\n{host}", "path", 404),
        (f"GET /{secret}/index.html HTTP/1.1\r\n{host}", "path", 404),
        (f"POST /{secret}/ HTTP/1.1\r\n{host}\r\nContent-Length: 0", "path", 404),
        (f"GET /{secret}/ HTTP/1.1\r\nHost: evil.example:{port}", "host", 404),
        (f"GET /{secret}/ HTTP/1.1\r\nHost: 127.0.0.1:{port + 1}", "host", 404),
        (f"GET /{secret}/ HTTP/1.1\r\nHost: 127.0.0.1", "host", 404),
        (f"GET /{secret}/ HTTP/1.0", "host", 404),
        (f"GET /{secret}/ws HTTP/1.1\r\n{host}\r\n{upgrade}", "origin", 403),
        (f"GET /{secret}/ws HTTP/1.1\r\n{host}\r\n{upgrade}\r\nOrigin: null", "origin", 403),
        (
            f"GET /{secret}/ws HTTP/1.1\r\n{host}\r\n{upgrade}\r\nOrigin: http://evil.example",
            "origin",
            403,
        ),
        (
            f"GET /{secret}/ws HTTP/1.1\r\n{host}\r\n{upgrade}\r\nOrigin: https://127.0.0.1:{port}",
            "origin",
            403,
        ),
        (
            f"GET /{secret}/ws HTTP/1.1\r\nHost: evil.example\r\n{upgrade}\r\n{good_origin}",
            "host",
            404,
        ),
        (
            f"GET /{'B' * len(secret)}/ws HTTP/1.1\r\n{host}\r\n{upgrade}\r\n{good_origin}",
            "secret",
            404,
        ),
    ]


async def test_every_other_request_is_refused_counted_and_the_page_keeps_working(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    server, _, session = served
    secret = server.url.rstrip("/").rsplit("/", 1)[1]
    page = await open_page(session, server)
    await hello_works(page, "before")
    cases = refused_cases(secret, server.port)
    for number, (head, reason, status) in enumerate(cases):
        before = server.refused_requests.copy()
        got_status, headers, body = await raw_http(server.port, head)
        assert (got_status, body) == (status, b""), head
        assert server.refused_requests[reason] == before[reason] + 1, head
        assert sum(server.refused_requests.values()) == sum(before.values()) + 1
        assert headers["cache-control"] == "no-store"
        assert "connect-src ws://127.0.0.1:" in headers["content-security-policy"]
        await hello_works(page, f"after-{number}")
    assert server.closed_sockets.total() == 0
    # One line per refusal, and neither the secret nor any path in the log.
    refusals = [r for r in caplog.records if "refused a request" in r.getMessage()]
    assert len(refusals) == len(cases)
    assert secret not in caplog.text
    assert "favicon" not in caplog.text
    await page.close()


async def test_a_foreign_origin_cannot_open_the_socket_through_a_client(served: Served) -> None:
    server, app, session = served
    for bad in ("http://evil.example", "null", None):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(server.url + "ws", origin=bad)
        assert refused.value.status == 403
    assert server.refused_requests["origin"] == 3
    assert app.opened == []


async def test_each_request_gets_exactly_one_reply(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    server, app, session = served
    ws = await open_page(session, server)
    await hello_works(ws, "1")
    not_found = await request(ws, {"type": "get_history", "id": 2, "room_id": "!r:test"})
    assert not_found == {"type": "error", "id": 2, "code": "not_found", "message": "no such room"}
    failed = await request(ws, {"type": "hangup", "id": "3", "call_id": "c"})
    assert (failed["type"], failed["code"]) == ("error", "failed")
    assert APP_SECRET not in json.dumps(failed)
    not_json = await request(ws, {"type": "list_rooms", "id": 4})
    assert (not_json["type"], not_json["code"]) == ("error", "failed")
    bad = await request(ws, {"type": "hold", "id": 5, "call_id": "c", "on_hold": 1})
    assert (bad["type"], bad["code"]) == ("error", "bad_request")
    # A slow request does not hold up the next one; its reply still comes.
    await ws.send_str(json.dumps({"type": "place_call", "id": 6, "room_id": "!r", "video": False}))
    await hello_works(ws, "7")
    app.release_place_call.set()
    assert await receive_json(ws) == {"type": "result", "id": 6, "call_id": "call-1"}
    await hello_works(ws, "8")
    assert server.app_errors == 2
    assert APP_SECRET not in caplog.text  # the app's exception is logged by its type only
    assert "RuntimeError" in caplog.text
    assert server.refused_messages == 1
    assert [type(r).__name__ for _, r in app.requests] == [
        "Hello",
        "GetHistory",
        "HangUp",
        "ListRooms",
        "PlaceCall",
        "Hello",
        "Hello",
    ]
    await ws.close()


async def test_media_results_reach_the_app_with_their_socket(served: Served) -> None:
    server, app, session = served
    first = await open_page(session, server)
    second = await open_page(session, server)
    await until(lambda: len(app.opened) == 2)
    streams = {"s1": "m.usermedia", "s2": "m.screenshare"}
    await second.send_str(
        json.dumps(
            {"type": "local_description", "call_id": "c1", "sdp": "v=0\r\n", "streams": streams}
        )
    )
    candidate = {"candidate": "candidate:1 1 UDP 1 127.0.0.1 9 typ host", "sdpMid": "0"}
    await first.send_str(
        json.dumps({"type": "local_candidates", "pair_id": "p1", "candidates": [candidate]})
    )
    await until(lambda: len(app.media) == 2)
    by_socket = dict(app.media)
    description = by_socket[app.opened[1].number]
    assert isinstance(description, LocalDescription)
    assert (description.call_id, description.pair_id, description.sdp) == ("c1", None, "v=0\r\n")
    assert dict(description.streams) == streams
    candidates = by_socket[app.opened[0].number]
    assert isinstance(candidates, LocalCandidates)
    assert candidates.pair_id == "p1"
    assert [c.candidate for c in candidates.candidates] == [candidate["candidate"]]
    await first.close()
    await second.close()
    await until(lambda: len(app.closed) == 2)


async def test_an_oversize_frame_closes_that_socket_only(served: Served) -> None:
    server, _, session = served
    page = await open_page(session, server)
    hostile = await open_page(session, server)
    padding = "x" * (MAX_MESSAGE_CHARS + 1 - len('{"type":"hello","id":1,"e2ee":true,"p":""}'))
    await hostile.send_str('{"type":"hello","id":1,"e2ee":true,"p":"' + padding + '"}')
    assert await closed_with(hostile) == 1009
    await until(lambda: server.closed_sockets["too_big"] == 1)
    await hello_works(page)
    await page.close()


async def test_a_binary_frame_closes_that_socket_only(served: Served) -> None:
    server, _, session = served
    page = await open_page(session, server)
    hostile = await open_page(session, server)
    await hostile.send_bytes(b'{"type":"hello","id":1,"e2ee":true}')
    assert await closed_with(hostile) == 1003
    assert server.closed_sockets["binary"] == 1
    await hello_works(page)
    await page.close()


async def test_fifty_refused_messages_close_the_socket(served: Served) -> None:
    server, _, session = served
    page = await open_page(session, server)
    hostile = await open_page(session, server)
    for number in range(MAX_REFUSED_MESSAGES - 1):
        reply = await request(hostile, {"type": "no_such_type", "id": number})
        assert (reply["type"], reply["code"]) == ("error", "bad_request")
    await hello_works(hostile)  # 49 refusals: still open
    await hostile.send_str("not json")
    assert await closed_with(hostile) == 1008
    assert server.refused_messages == MAX_REFUSED_MESSAGES
    assert server.closed_sockets["refused"] == 1
    await hello_works(page)
    await page.close()


async def test_a_page_that_does_not_read_is_closed_before_memory_grows(served: Served) -> None:
    server, app, session = served
    page = await open_page(session, server)
    # This client never reads: aiohttp stops reading its TCP socket once its queue is full.
    stuck = await open_page(session, server)
    await until(lambda: len(app.opened) == 2)
    socket = app.opened[1]
    chunk = "y" * 60_000
    sent = 0
    while not socket.closed:
        await socket.send({"type": "history_item", "room_id": "!r", "item": chunk})
        sent += len(chunk)
        assert sent < 16 * MAX_QUEUED_CHARS, "the non-reading socket was never closed"
        await asyncio.sleep(0)  # let the writer run: a yield, not a wait for time
    assert socket.overflowed
    assert socket.peak_queued_chars <= MAX_QUEUED_CHARS
    await until(lambda: server.closed_sockets["slow"] == 1)
    await until(lambda: socket in app.closed)
    await socket.send({"type": "after", "closed": True})  # a no-op, never raises
    await hello_works(page)
    await page.close()
    await stuck.close()


async def test_stop_closes_every_socket(tmp_path: Path) -> None:
    async with page_server(tmp_path) as (server, app), aiohttp.ClientSession() as session:
        ws = await open_page(session, server)
        await hello_works(ws)
        # A request still running at stop is cancelled, not waited for.
        await ws.send_str(
            json.dumps({"type": "place_call", "id": 10, "room_id": "!r", "video": True})
        )
        await until(lambda: len(app.requests) == 2)
        close_code = asyncio.get_running_loop().create_task(closed_with(ws))
        await server.stop()
        assert await close_code == 1001
        assert not server.sockets
        assert app.closed == app.opened

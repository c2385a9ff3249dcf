"""One open page socket, and what the app behind the page server implements (docs/web-protocol.md).

:class:`PageSocket` owns the outgoing side of one WebSocket: :meth:`PageSocket.send` queues a
message and returns at once; one writer task sends them in order. The queue is bounded in
characters: a page that does not read has its connection dropped (it could not read a close frame
either; the page sees 1006) instead of making the process grow; dropping messages instead would
leave a page showing a call that is not there, or missing a media command.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Any, Final, Protocol

from aiohttp import web

from sealcall.web.protocol import ErrorCode, MediaResult, Request, encode
from sealcall.web.sfu_results import SfuResult

log = logging.getLogger(__name__)

MAX_QUEUED_CHARS: Final = 4 * 1024 * 1024
"""Outgoing characters a socket may hold for a page that does not read before it is closed."""

CLOSE_TIMEOUT: Final = 2.0
"""Seconds a closing socket gets to flush its queue and finish the close handshake."""


class PageError(Exception):
    """What :meth:`PageApp.page_request` raises to answer a request with an ``error`` reply."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


class PageSocket:
    """One open page socket: numbered per server, with a bounded, ordered outgoing queue."""

    def __init__(
        self,
        number: int,
        ws: web.WebSocketResponse,
        transport: asyncio.BaseTransport | None,
        *,
        max_queued_chars: int = MAX_QUEUED_CHARS,
    ) -> None:
        self.number = number
        self._ws = ws
        self._transport = transport
        self._max_queued = max_queued_chars
        self._queue: collections.deque[str] = collections.deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._overflowed = False
        self.queued_chars = 0
        """Characters queued or being sent right now."""
        self.peak_queued_chars = 0
        self.refused_messages = 0
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        self._close_task: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        """True once the socket is closing or closed: sends are dropped."""
        return self._closing or self._ws.closed

    @property
    def overflowed(self) -> bool:
        """True if the socket was closed because the page did not read."""
        return self._overflowed

    async def send(self, message: dict[str, Any]) -> None:
        """:meth:`post` for callers that await (the server's replies)."""
        self.post(message)

    def post(self, message: dict[str, Any]) -> None:
        """Queue ``message`` for the page at once (messages go out in the order posted); a
        no-op on a closed socket (never raises for that).

        A message that cannot be JSON-encoded raises ``TypeError``/``ValueError``: that is a bug of
        the caller, not of the page.
        """
        if self.closed:
            return
        text = encode(message)
        if self.queued_chars + len(text) > self._max_queued:
            self._overflowed = True
            log.warning("page socket %d: the page does not read; closing it", self.number)
            self._start_close(1013, flush=False)
            return
        self._queue.append(text)
        self.queued_chars += len(text)
        self.peak_queued_chars = max(self.peak_queued_chars, self.queued_chars)
        self._wake.set()

    async def close(self, code: int = 1000) -> None:
        """Flush what is queued (briefly), then close the socket with ``code``."""
        self._start_close(code, flush=True)
        assert self._close_task is not None
        await asyncio.shield(self._close_task)

    def _start_close(self, code: int, *, flush: bool) -> None:
        if self._close_task is not None:
            return
        self._closing = True
        self._wake.set()
        self._close_task = asyncio.get_running_loop().create_task(self._shut(code, flush=flush))

    async def _write_loop(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                text = self._queue[0]
                await self._ws.send_str(text)
                self._queue.popleft()
                self.queued_chars -= len(text)
        except Exception as exc:
            # The page went away mid-send: what is queued can no longer be delivered.
            if not isinstance(exc, ConnectionError | RuntimeError):
                log.warning("page socket %d: sending failed (%s)", self.number, type(exc).__name__)
            self._closing = True
        finally:
            self._queue.clear()
            self.queued_chars = 0

    async def _shut(self, code: int, *, flush: bool) -> None:
        flushed = False
        if flush:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._writer), CLOSE_TIMEOUT)
                flushed = True
        if flushed:
            with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
                await asyncio.wait_for(self._ws.close(code=code), CLOSE_TIMEOUT)
                return
        # A page that does not read: drop the connection. Cancelling the writer instead would
        # leave aiohttp's shared drain future cancelled under the close handshake.
        self._abort()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self._writer

    def _abort(self) -> None:
        if isinstance(self._transport, asyncio.WriteTransport):
            self._transport.abort()

    async def closed_down(self) -> None:
        """Wait for the writer and any close in progress to finish (the handler's last step)."""
        self._closing = True
        self._wake.set()
        if self._close_task is None:
            self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        if self._close_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._close_task


class PageApp(Protocol):
    """What the page server calls: the app controller of ``sealcall app`` implements it."""

    async def page_opened(self, socket: PageSocket) -> None:
        """A page socket opened; called before any of its messages are handled."""

    async def page_request(self, socket: PageSocket, request: Request) -> dict[str, Any]:
        """Handle one request; return the ``result`` reply's fields or raise :class:`PageError`."""

    def page_media_result(self, socket: PageSocket, result: MediaResult | SfuResult) -> None:
        """Take one media result of the page's peer connection or SFU link (no reply)."""

    async def page_closed(self, socket: PageSocket) -> None:
        """A page socket closed (its running requests may finish; their replies are dropped)."""

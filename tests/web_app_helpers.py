"""People using ``sealcall app`` in tests: a Matrix account whose :class:`CallApp` and
:class:`PageServer` run in the test's event loop, with its page in Debian's Chromium.

Each :class:`PageUser` gets its own browser context, as a second person's browser would. The
page's state and statistics are read through ``window.sealcall`` (app.js), the screen through
its ``data-testid`` attributes.
"""

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

from browser import Browser
from sealcall.demo import wait_for
from sealcall.homeserver import Homeserver
from sealcall.transport.matrix import MatrixTransport
from sealcall.web.app import CallApp
from sealcall.web.page_sfu import sfu_socket_url
from sealcall.web.server import PageServer

WAIT_MS = 30_000
SHOTS = Path(os.environ.get("SEALCALL_SCREENSHOTS", Path(__file__).parent.parent / "docs/shots"))
"""Where tests put the screenshots the README shows."""


class PageUser:
    """One person: their Matrix device runs here, their calls in a browser page."""

    def __init__(self, transport: MatrixTransport, app: CallApp, server: PageServer) -> None:
        self.transport = transport
        self.app = app
        self.server = server
        self.page: Any = None

    @property
    def user_id(self) -> str:
        return self.transport.user_id

    async def open(self, browser: Browser) -> Any:
        """Open the page (a new browser context) and wait until it shows our rooms."""
        self.page = await browser.page_on(self.server.url)
        await self.page.wait_for_selector('[data-testid="me"]:not(:empty)', timeout=WAIT_MS)
        return self.page

    async def select_room(self, room_id: str) -> None:
        room = self.page.locator(f'[data-testid="room"][data-room-id="{room_id}"]')
        await room.wait_for(timeout=WAIT_MS)
        await room.click()

    async def click(self, testid: str) -> None:
        await self.page.locator(f'[data-testid="{testid}"]').first.click(timeout=WAIT_MS)

    async def state(self) -> dict[str, Any]:
        """The page's state (window.sealcall.state())."""
        state: dict[str, Any] = await self.page.evaluate("() => window.sealcall.state()")
        return state

    async def call_state(self, call_id: str) -> str | None:
        state = await self.state()
        call = state.get("calls", {}).get(call_id)
        return None if call is None else str(call.get("state"))

    async def wait_call_state(self, call_id: str, wanted: str) -> None:
        """Wait until the page shows the call in state ``wanted`` ("ended": or no more)."""
        await self.page.wait_for_function(
            "([id, wanted]) => { const c = window.sealcall.state().calls[id];"
            " return c ? c.state === wanted : wanted === 'ended'; }",
            arg=[call_id, wanted],
            polling=100,
            timeout=WAIT_MS,
        )

    async def stats(self, call_id: str) -> dict[str, Any]:
        """The page's statistics of a call (worker counters and getStats)."""
        stats: dict[str, Any] = await self.page.evaluate(
            "(id) => window.sealcall.stats(id)", call_id
        )
        return stats

    async def decrypted(self, call_id: str, kind: str, more_than: int) -> int:
        """Wait until the page's worker decrypted more than ``more_than`` frames of ``kind``
        in the call; that count."""
        deadline = asyncio.get_running_loop().time() + WAIT_MS / 1000
        while True:
            stats = await self.stats(call_id)
            count = int(stats["worker"][kind]["decrypted"])
            if count > more_than:
                return count
            assert asyncio.get_running_loop().time() < deadline, f"{kind}: stuck at {stats}"
            await asyncio.sleep(0.2)

    async def history_item(self, call_id: str) -> dict[str, str]:
        """The call's item in the selected room's timeline, once it shows."""
        await self.page.wait_for_selector(
            f'[data-testid="history-item"][data-call-id="{call_id}"]', timeout=WAIT_MS
        )
        return next(i for i in await self.history() if i["callId"] == call_id)

    async def history(self) -> list[dict[str, str]]:
        """The call items shown in the selected room's timeline."""
        items: list[dict[str, str]] = await self.page.eval_on_selector_all(
            '[data-testid="history-item"]',
            "els => els.map(e => ({...e.dataset}))",
        )
        return items

    async def screenshot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        await self.page.screenshot(path=str(path))
        return path

    async def stop(self) -> None:
        await self.app.close()
        await self.server.stop()
        await self.transport.stop()


async def account(server: Homeserver, tmp: Path, name: str) -> tuple[str, str, Path]:
    """A fresh account: (user id, password, store folder)."""
    username = f"{name}{uuid.uuid4().hex[:8]}"
    registered = await server.register(username, "secret-" + username)
    return registered.user_id, registered.password, tmp / username


async def page_user(
    server: Homeserver, tmp: Path, name: str, *, sfu_url: str | None = None
) -> PageUser:
    """A fresh account with its app running (the page is not open yet: :meth:`PageUser.open`);
    with ``sfu_url``, its group calls go through that SFU (``sealcall app --sfu``)."""
    user_id, password, store = await account(server, tmp, name)
    transport = await MatrixTransport.login(server.url, user_id, password, store)
    app = CallApp(transport, state_dir=str(store), sfu_url=sfu_url)
    await transport.start()
    socket = None if sfu_url is None else sfu_socket_url(sfu_url)
    page_server = PageServer(app, connect=() if socket is None else (socket,))
    await page_server.start()
    return PageUser(transport, app, page_server)


async def joined(transport: MatrixTransport, room_id: str, user_id: str) -> None:
    """Wait until ``user_id`` is in ``room_id`` as ``transport`` sees it."""
    await wait_for(lambda: user_id in transport.room_members(room_id), 30, "the peer to join")

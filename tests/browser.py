"""Debian's headless Chromium for browser tests, driven by Playwright (never a browser download).

One :class:`Browser` per test module keeps the 2-core machine free; each page gets its own
browser context (its own storage, as a second person's browser would):

.. code-block:: python

    from browser import Browser, missing, until

    @pytest_asyncio.fixture(loop_scope="module", scope="module")
    async def browser() -> AsyncIterator[Browser]:
        if (reason := missing()) is not None:
            pytest.fail(reason)
        async with Browser.launched() as b:
            yield b

    async def test_x(browser: Browser) -> None:
        page = await browser.page_on(url)
        await until(page, "() => window.T?.ready", what="the page's script")

Chromium runs with a fake camera (a moving test pattern) and microphone (a beep) that need no
permission prompt. The last console lines and page errors of every page are kept in
:attr:`Browser.console`; :meth:`Browser.launched` prints them when the block fails.
"""

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from interop_jssdk import CHROMIUM, CHROMIUM_ARGS

FAKE_MEDIA_ARGS = [
    *CHROMIUM_ARGS,
    "--autoplay-policy=no-user-gesture-required",
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
]
"""Chromium's arguments: fake media devices without a prompt, no sandbox (tests run as root),
no GPU, no background work, media that plays without a click and is not throttled."""


def missing() -> str | None:
    """What browser tests lack on this machine (None: nothing)."""
    if not CHROMIUM.exists():
        return "Debian's chromium: apt-get install chromium"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package: pip install -e '.[dev]'"
    return None


class Browser:
    """One launched Chromium; open pages with :meth:`page_on`, end with :meth:`close`."""

    def __init__(self, playwright: Any, browser: Any) -> None:
        self._playwright = playwright
        self.browser = browser
        self.console: collections.deque[str] = collections.deque(maxlen=300)
        """The last console lines and page errors of all pages, each tagged with its page."""
        self._contexts: list[Any] = []

    @classmethod
    async def launch(cls, *, headless: bool = True, args: Sequence[str] = ()) -> "Browser":
        """Start Debian's Chromium with :data:`FAKE_MEDIA_ARGS` plus ``args``."""
        from playwright.async_api import async_playwright

        playwright = await async_playwright().start()
        try:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM),
                headless=headless,
                args=[*FAKE_MEDIA_ARGS, *args],
            )
        except BaseException:
            await playwright.stop()
            raise
        return cls(playwright, browser)

    @classmethod
    @contextlib.asynccontextmanager
    async def launched(
        cls, *, headless: bool = True, args: Sequence[str] = ()
    ) -> AsyncIterator["Browser"]:
        """:meth:`launch`, then :meth:`close` on leaving; the console is printed on failure."""
        browser = await cls.launch(headless=headless, args=args)
        try:
            yield browser
        except BaseException:
            print("\n".join(browser.console))  # pytest shows it only for a failing test
            raise
        finally:
            await browser.close()

    async def page_on(self, url: str, **context_options: Any) -> Any:
        """A new page, in a new browser context (``context_options`` as Playwright's
        ``new_context``), opened at ``url``; its console goes to :attr:`console`."""
        context = await self.browser.new_context(**context_options)
        self._contexts.append(context)
        page = await context.new_page()
        tag = f"page{len(self._contexts)}"
        page.on("console", lambda msg: self.console.append(f"{tag} {msg.type}: {msg.text}"))
        page.on("pageerror", lambda err: self.console.append(f"{tag} pageerror: {err}"))
        page.on("crash", lambda _: self.console.append(f"{tag} crashed"))
        await page.goto(url)
        return page

    async def close_pages(self) -> None:
        """Close every page opened so far (their peer connections and workers end with them)."""
        contexts, self._contexts = self._contexts, []
        for context in contexts:
            with contextlib.suppress(Exception):  # already gone with a crashed page
                await context.close()

    async def close(self) -> None:
        """Close every page, the browser and Playwright."""
        try:
            await self.close_pages()
            await self.browser.close()
        finally:
            await self._playwright.stop()


async def until(
    page: Any, expression: str, arg: Any = None, *, timeout: float = 30.0, what: str = ""
) -> Any:
    """Evaluate ``expression`` (a JS function, may be async) in ``page`` with ``arg`` until it
    returns something truthy; return that. Fails with the last value after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = await page.evaluate(expression, arg)
        if value:
            return value
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what or expression}; last: {value!r}")
        await asyncio.sleep(0.2)

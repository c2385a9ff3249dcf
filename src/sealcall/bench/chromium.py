"""Debian's headless Chromium with fake media devices, driven by Playwright (never a browser
download): the launcher of the browser tests and of ``sealcall app-soak``.

Playwright is a dev extra (``pip install -e '.[dev]'``) and the browser is Debian's
(``apt-get install chromium``); :func:`missing` says which of them this machine lacks. Each page
gets its own browser context (its own storage, as a second person's browser would). Chromium
runs with a fake camera (a moving test pattern) and microphone (a beep) that need no permission
prompt.
"""

import collections
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
"""Fake media devices without a prompt, no sandbox (tests run as root), no GPU, no
background network work."""

FAKE_MEDIA_ARGS = [
    *CHROMIUM_ARGS,
    "--autoplay-policy=no-user-gesture-required",
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
]
""":data:`CHROMIUM_ARGS`, and media that plays without a click and is not throttled."""


def missing() -> str | None:
    """What driving the browser lacks on this machine (None: nothing)."""
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

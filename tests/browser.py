"""Debian's headless Chromium for browser tests, driven by Playwright (never a browser download);
the launcher itself is :mod:`sealcall.bench.chromium`, shared with ``sealcall app-soak``.

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
from typing import Any

from sealcall.bench.chromium import FAKE_MEDIA_ARGS, Browser, missing

__all__ = ["FAKE_MEDIA_ARGS", "Browser", "missing", "until"]


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

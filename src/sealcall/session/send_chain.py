"""Sends that go out one after another, in the order they were asked for, without the caller
waiting for any of them."""

import asyncio
from collections.abc import Awaitable, Callable


class SendChain:
    """Runs each send after the one before it finished (each handles its own errors)."""

    def __init__(self) -> None:
        self._last: asyncio.Task[None] | None = None

    def then(self, send: Callable[[], Awaitable[None]]) -> "asyncio.Task[None]":
        """Start ``send`` once every earlier send is done; its task (``send`` must not raise)."""
        previous = self._last

        async def run() -> None:
            if previous is not None:
                await asyncio.wait({previous})
            await send()

        task = asyncio.ensure_future(run())
        self._last = task
        return task

    async def drain(self) -> None:
        """Return once every send asked for so far is done."""
        if self._last is not None:
            await asyncio.wait({self._last})

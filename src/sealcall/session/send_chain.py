"""Sends that go out one after another, in the order they were asked for, without the caller
waiting for any of them."""

import asyncio
from collections.abc import Awaitable, Callable


class SendChain:
    """Runs each send after the one before it finished (each handles its own errors)."""

    def __init__(self) -> None:
        self._last: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def then(self, send: Callable[[], Awaitable[None]]) -> "asyncio.Task[None]":
        """Start ``send`` once every earlier send is done; its task (``send`` must not raise)."""
        previous = self._last

        async def run() -> None:
            if previous is not None:
                await asyncio.wait({previous})
            await send()

        task = asyncio.ensure_future(run())
        self._last = task
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def drain(self, timeout: float | None = None) -> int:
        """Return once every send asked for so far is done, or after ``timeout`` seconds with
        the ones still waiting cancelled; how many were cancelled."""
        if self._last is not None:
            await asyncio.wait({self._last}, timeout=timeout)
        unsent = [task for task in self._pending if not task.done()]
        for task in unsent:
            task.cancel()
        return len(unsent)

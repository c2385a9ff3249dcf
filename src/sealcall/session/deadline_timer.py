"""One asyncio timer for a sans-I/O core's next deadline, re-armed after every input."""

import asyncio
from collections.abc import Callable


class DeadlineTimer:
    """Calls ``fire`` once the earliest of the deadlines given to :meth:`arm` is reached.

    The pure cores expose their next deadline; the asyncio layers re-arm this timer after
    every input they feed them, so at most one timer is pending per object.
    """

    def __init__(self, fire: Callable[[], None]) -> None:
        self._fire = fire
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, deadlines: list[float | None], now: float, *, slack: float = 0.0) -> None:
        """Fire at the earliest deadline (``slack`` later, so the core sees it reached); none:
        nothing pending. ``now`` and the deadlines share one clock, in seconds."""
        self.cancel()
        due = [d for d in deadlines if d is not None]
        if due:
            delay = max(0.0, min(due) - now) + slack
            self._handle = asyncio.get_running_loop().call_later(delay, self._fire)

    def cancel(self) -> None:
        """Nothing pending any more."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

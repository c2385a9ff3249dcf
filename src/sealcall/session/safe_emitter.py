"""An event emitter whose application handlers cannot break the object that emits."""

import logging
from typing import Any

from pyee.asyncio import AsyncIOEventEmitter


class SafeEventEmitter(AsyncIOEventEmitter):
    """``_emit`` tells the application of an event; a handler that raises is logged (under the
    emitting class's module) and the emitter goes on, whatever it was doing."""

    def _emit(self, name: str, *args: Any) -> None:
        try:
            self.emit(name, *args)
        except Exception:  # the application's handler must not stop us
            logging.getLogger(type(self).__module__).exception("a %s handler failed", name)

"""One participant's ``control`` data channel, bound to the SFU: parse in, bounded sends out.

Incoming text goes through :func:`~.control.parse_control_message` to ``on_message``; a bad message
(or one ``on_message`` refuses with :class:`~.control.ControlError`) is answered with ``error``,
counted, and after ``MAX_CONTROL_ERRORS`` the channel is closed. Sends never queue without bound:
a participant that stops reading has messages dropped (counted) once ``MAX_BACKLOG`` bytes wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiortc.rtcdatachannel import RTCDataChannel

from .control import MAX_CONTROL_ERRORS, ControlError, ControlMessage, parse_control_message
from .signaling import message

__all__ = ["CONTROL_LABEL", "MAX_BACKLOG", "ControlChannel"]

log = logging.getLogger(__name__)

CONTROL_LABEL = "control"
MAX_BACKLOG = 256 * 1024


class ControlChannel:
    """The SFU's end of a participant's control channel (see the module docstring)."""

    def __init__(
        self, channel: RTCDataChannel, on_message: Callable[[ControlMessage], None]
    ) -> None:
        self.channel = channel
        self.errors = 0
        """Bad messages received on this channel."""
        self.dropped = 0
        """Messages not sent: the channel was not open or its backlog was full."""
        self._on_message = on_message
        channel.on("message", self._received)

    def send(self, text: str) -> None:
        """Send one message if the channel is open and not backed up; else count a drop."""
        channel = self.channel
        if channel.readyState != "open" or channel.bufferedAmount + len(text) > MAX_BACKLOG:
            self.dropped += 1
            return
        channel.send(text)

    def close(self) -> None:
        """Close the channel (idempotent)."""
        if self.channel.readyState not in ("closing", "closed"):
            self.channel.close()

    def _received(self, data: str | bytes) -> None:
        if self.errors >= MAX_CONTROL_ERRORS:  # closing: what was already on its way is ignored
            return
        try:
            self._on_message(parse_control_message(data))
        except ControlError as error:
            self.errors += 1
            if self.errors == 1:
                log.info("sfu: bad control message (%s)", error.reason[:60])
            self.send(message("error", reason=error.reason[:200]))
            if self.errors >= MAX_CONTROL_ERRORS:
                self.close()

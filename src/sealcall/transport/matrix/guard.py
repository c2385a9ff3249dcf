"""Hostile input that nio does not survive on its own: too-deep or garbled events, content in logs.

A member of a room (or any user, for to-device messages) can send an encrypted event whose
plaintext nests thousands of levels deep. Synapse cannot see into it; nio's ``json.loads`` then
raises :class:`RecursionError`, which nio does not catch, so the rest of the sync response would
be skipped. An Olm to-device message whose ciphertext is not base64 does the same (vodozemac
raises). Here nio's decryption is wrapped so such an event is dropped alone, counted, and logged
in one line.

nio's schema-validation warnings quote the event (a 40 KB field makes a 40 KB log line). A
filter on nio's loggers keeps every nio record to one short line without content.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from nio import EncryptionError, MegolmEvent

logger = logging.getLogger(__name__)

MAX_NIO_LOG_CHARS = 160
MAX_REMEMBERED_DROPS = 256


class NoContentFilter(logging.Filter):
    """Rewrite nio's records so they carry no event content: one line, bounded length."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record, rewritten when it could quote an event."""
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not format: keep its format only
            message = str(record.msg)
        if message.startswith("Error validating"):
            # The message quotes the whole invalid event (and the schema): say only what.
            message = "nio dropped an event that failed schema validation (content not logged)"
        elif len(message) > MAX_NIO_LOG_CHARS or "\n" in message:
            message = message.replace("\n", " ")[:MAX_NIO_LOG_CHARS] + " [cut]"
        else:
            return True
        record.msg = message
        record.args = None
        record.exc_info = None
        record.exc_text = None
        return True


_FILTER = NoContentFilter()


def quiet_nio_logs() -> None:
    """Put :class:`NoContentFilter` on every nio logger (a filter does not reach child loggers,
    so each one gets it)."""
    names = [name for name in logging.Logger.manager.loggerDict if name.split(".")[0] == "nio"]
    for name in ["nio", *names]:
        nio_logger = logging.getLogger(name)
        if _FILTER not in nio_logger.filters:
            nio_logger.addFilter(_FILTER)


class DeepEventGuard:
    """Wraps one nio client's Olm machine so an event too deep to parse is dropped alone."""

    def __init__(self, on_drop: Callable[[], None]) -> None:
        self._on_drop = on_drop
        self._dropped: OrderedDict[str, None] = OrderedDict()

    def install(self, olm: Any) -> None:
        """Wrap ``olm``'s Megolm and to-device decryption (once)."""
        if olm is None or getattr(olm, "_sealcall_guarded", False):
            return
        decrypt_megolm = olm.decrypt_megolm_event
        handle_to_device = olm.handle_to_device_event

        def guarded_megolm(event: MegolmEvent, room_id: str | None = None) -> Any:
            try:
                return decrypt_megolm(event, room_id)
            except RecursionError:
                self._drop(str(event.event_id), "room event")
                # nio treats an EncryptionError as "not decrypted": the event stays encrypted,
                # and :meth:`was_dropped` tells the transport not to wait for its key.
                raise EncryptionError("event nested too deeply") from None

        def guarded_to_device(event: Any) -> Any:
            try:
                return handle_to_device(event)
            except RecursionError:
                self._drop("", "to-device message")
                return None
            except Exception as error:
                # A ciphertext that is not base64 makes vodozemac raise, and nio does not catch
                # it: the rest of the sync would be lost. Anyone can send us one.
                self._drop("", "to-device message", f"unreadable ({type(error).__name__})")
                return None

        olm.decrypt_megolm_event = guarded_megolm
        olm.handle_to_device_event = guarded_to_device
        olm._sealcall_guarded = True

    def _drop(self, event_id: str, what: str, why: str = "nested too deeply to parse") -> None:
        self._on_drop()
        logger.warning("dropped a %s %s %s", what, why, event_id)
        if event_id:
            self._dropped[event_id] = None
            while len(self._dropped) > MAX_REMEMBERED_DROPS:
                self._dropped.popitem(last=False)

    def was_dropped(self, event: MegolmEvent) -> bool:
        """True if this encrypted event was dropped as too deep (already counted and logged)."""
        return str(event.event_id) in self._dropped

"""The media keys of one encrypted peer connection, shared by all of its senders and receivers.

aiortc encodes in a thread pool, so audio and video may be protected at the same moment: one lock
guards the SFrame sender (whose counter must never repeat) and the receiver (whose replay windows
and key table change as frames arrive).
"""

import threading
import time
from collections.abc import Callable

from sealcall.e2ee.codecs import Codec, protect_frame, unprotect_frame
from sealcall.e2ee.key_agreement import CallKeys, KeyShare, Role
from sealcall.sframe import CipherSuite, SFrameError, SFrameReceiver, SFrameSender

DEFAULT_GRACE_PERIOD = 2.0


class MissingKeyError(SFrameError):
    """A frame was to be sent before the call's media key was known."""


class MediaKeys:
    """What one connection encrypts with and what it accepts, under the caller's control.

    ``set_send_key`` takes effect on the next frame. ``add_receive_key(..., retire_others=True)``
    keeps the previous keys for ``grace_period`` seconds so frames already in flight still
    decrypt. Key bytes are never logged or shown in ``repr``.
    """

    def __init__(
        self,
        send_kid: int | None = None,
        send_key: bytes | None = None,
        suite: int = CipherSuite.AES_128_GCM_SHA256_128,
        *,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if grace_period < 0:
            raise ValueError(f"grace period must be >= 0, got {grace_period}")
        self._lock = threading.Lock()
        self._suite = suite
        self._sender: SFrameSender | None = None
        if send_key is not None:
            self._sender = SFrameSender(send_kid or 0, send_key, suite)
        self._receiver = SFrameReceiver(suite)
        self._unencrypted = False
        self._grace_period = grace_period
        self._clock = clock
        self._next_expiry: float | None = None

    @classmethod
    def for_call(
        cls, keys: CallKeys, kid: int = 0, *, grace_period: float = DEFAULT_GRACE_PERIOD
    ) -> "MediaKeys":
        """Keys for a 1:1 call from the key agreement: send with ours, accept the peer's."""
        media_keys = cls(kid, keys.send, grace_period=grace_period)
        media_keys.add_receive_key(kid, keys.receive)
        return media_keys

    def __repr__(self) -> str:
        return f"MediaKeys(send_kid={self.send_kid}, receive_kids={self.receive_kids()})"

    @property
    def send_kid(self) -> int | None:
        """The KID outgoing frames carry now (None before a send key is set)."""
        return None if self._sender is None else self._sender.kid

    @property
    def encrypted(self) -> bool:
        """False only after :meth:`allow_unencrypted`."""
        return not self._unencrypted

    def allow_unencrypted(self) -> None:
        """Send and accept media without frame encryption.

        Only for a peer that cannot encrypt, and only when the user's policy says so: the call
        engine shows such calls as unencrypted.
        """
        with self._lock:
            self._unencrypted = True

    def receive_kids(self) -> list[int]:
        """The KIDs incoming frames may carry now."""
        with self._lock:
            return self._receiver.kids()

    @property
    def suite(self) -> int:
        """The SFrame cipher suite in use."""
        return self._suite

    def use_suite(self, suite: int) -> None:
        """Switch to another SFrame suite; only before any key is installed."""
        with self._lock:
            if suite == self._suite:
                return
            if self._sender is not None or self._receiver.kids():
                raise ValueError("the suite can only change before the first key")
            self._receiver = SFrameReceiver(suite)
            self._suite = suite

    def forget(self) -> None:
        """Drop every key (the call is over: its keys die with it)."""
        with self._lock:
            self._sender = None
            self._receiver = SFrameReceiver(self._suite)

    def set_send_key(self, kid: int, key: bytes) -> None:
        """Encrypt from the next frame on with ``key`` under ``kid``."""
        with self._lock:
            if self._sender is None:
                self._sender = SFrameSender(kid, key, self._suite)
            else:
                self._sender.set_key(kid, key)

    def add_receive_key(self, kid: int, key: bytes, *, retire_others: bool = False) -> None:
        """Accept frames under ``kid``; optionally retire every other key after the grace period."""
        with self._lock:
            self._receiver.add_key(kid, key)
            if retire_others:
                expires_at = self._clock() + self._grace_period
                for other in self._receiver.kids():
                    if other != kid:
                        self._receiver.retire_key(other, expires_at)
                self._next_expiry = self._receiver.next_expiry()

    def remove_receive_key(self, kid: int) -> None:
        """Stop accepting frames under ``kid`` at once."""
        with self._lock:
            self._receiver.remove_key(kid)
            self._next_expiry = self._receiver.next_expiry()

    def protect(self, codec: Codec, frame: bytes) -> bytes:
        """Encrypt one encoded frame (see :func:`sealcall.e2ee.protect_frame`)."""
        with self._lock:
            if self._unencrypted:
                return frame
            if self._sender is None:
                raise MissingKeyError("no media key yet: the frame is not sent")
            return protect_frame(codec, self._sender, frame)

    def unprotect(self, codec: Codec, data: bytes) -> bytes:
        """Decrypt one received frame; raises an ``SFrameError`` for anything not genuine."""
        with self._lock:
            if self._unencrypted:
                return data
            if self._next_expiry is not None and self._clock() >= self._next_expiry:
                self._receiver.expire(self._clock())
                self._next_expiry = self._receiver.next_expiry()
            return unprotect_frame(codec, self._receiver, data)


def local_call_keys(
    call_id: str, *, grace_period: float = DEFAULT_GRACE_PERIOD
) -> tuple[MediaKeys, MediaKeys]:
    """Both ends' keys of a 1:1 call whose two sides live in one process (demos, benchmarks).

    Runs the real key agreement: two fresh key shares, each side deriving from the other's
    public key. Returns ``(caller_keys, callee_keys)``.
    """
    caller, callee = KeyShare(), KeyShare()
    return (
        MediaKeys.for_call(
            caller.derive(callee.public_bytes, call_id, Role.CALLER), grace_period=grace_period
        ),
        MediaKeys.for_call(
            callee.derive(caller.public_bytes, call_id, Role.CALLEE), grace_period=grace_period
        ),
    )

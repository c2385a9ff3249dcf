"""A sliding replay window over SFrame counters, one per KID (in the manner of SRTP, RFC 3711)."""

from .errors import ReplayError

# One sender's streams share one counter (audio at 50 frames/s, and through an SFU two video layers
# at 30 each: 110 counters a second), but a video frame reaches decryption only once the jitter
# buffer has it whole (after retransmissions, on a busy machine seconds after the audio sent with
# it). A window of 128 counters is 1.2 s of that: late video frames were refused as replays. 1024
# is about 9 s; each counter is still accepted once.
DEFAULT_REPLAY_WINDOW = 1024


class ReplayWindow:
    """Accepts each counter at most once, and none older than ``size`` below the highest seen.

    :meth:`check` runs before decryption and :meth:`accept` only after the tag verified, so a
    forged frame can never move the window.
    """

    __slots__ = ("_bits", "_highest", "_mask", "size")

    def __init__(self, size: int = DEFAULT_REPLAY_WINDOW) -> None:
        if size < 1:
            raise ValueError(f"replay window size must be >= 1, got {size}")
        self.size = size
        self._mask = (1 << size) - 1
        self._highest = -1
        # Bit i set means counter (highest - i) was accepted.
        self._bits = 0

    def check(self, kid: int, ctr: int) -> None:
        """Raise :class:`ReplayError` if ``ctr`` was seen or is too old."""
        offset = self._highest - ctr
        if offset >= 0 and (offset >= self.size or (self._bits >> offset) & 1):
            raise ReplayError(kid, ctr)

    def accept(self, ctr: int) -> None:
        """Record ``ctr`` as received (call after :meth:`check` and successful decryption)."""
        offset = self._highest - ctr
        if offset < 0:
            # A jump past the window clears it; shifting by the jump could need gigabytes.
            self._bits = 1 if -offset >= self.size else ((self._bits << -offset) | 1) & self._mask
            self._highest = ctr
        else:
            self._bits |= 1 << offset

"""The SFrame error hierarchy: every failure of this package is an :class:`SFrameError`."""


class SFrameError(Exception):
    """Base class of every error raised by :mod:`sealcall.sframe` and the frame protection."""


class HeaderError(SFrameError):
    """A header is truncated, claims bytes past the buffer, or a KID/CTR is out of range."""


class SuiteError(SFrameError):
    """An unknown cipher suite id, or a key of the wrong length for the suite."""


class UnknownKeyError(SFrameError):
    """A frame names a KID for which the receiver holds no key (nor can ratchet to one)."""

    def __init__(self, kid: int) -> None:
        super().__init__(f"no key for KID {kid}")
        self.kid = kid


class AuthenticationError(SFrameError):
    """The AEAD tag did not verify: wrong key, wrong metadata, or a tampered frame."""


class ReplayError(SFrameError):
    """A frame's counter was already accepted, or is older than the replay window."""

    def __init__(self, kid: int, ctr: int) -> None:
        super().__init__(f"replayed or too old frame: KID {kid} CTR {ctr}")
        self.kid = kid
        self.ctr = ctr


class CounterExhaustedError(SFrameError):
    """The sender's counter reached 2**64 - 1: no further frame may be sent under this key."""


class FrameFormatError(SFrameError):
    """An encoded media frame is too short or malformed for its codec's clear prefix."""

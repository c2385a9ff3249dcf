"""SFrame (RFC 9605): end-to-end encryption of media frames.

Low-level, stateless functions (public API, used by other tools): :func:`encode_header`,
:func:`decode_header`, :func:`derive_key_salt`, :func:`encrypt`, :func:`decrypt`. Stateful objects
for real use: :class:`SFrameSender` and :class:`SFrameReceiver`. Every failure is an
:class:`SFrameError`.
"""

from .errors import (
    AuthenticationError,
    CounterExhaustedError,
    FrameFormatError,
    HeaderError,
    ReplayError,
    SFrameError,
    SuiteError,
    UnknownKeyError,
)
from .frame import decrypt, encrypt
from .header import decode_header, encode_header
from .keys import KeyContext, derive_key_salt, ratchet_base_key
from .receiver import SFrameReceiver
from .replay import ReplayWindow
from .sender import SFrameSender
from .suites import CipherSuite, make_aead, suite_params

__all__ = [
    "AuthenticationError",
    "CipherSuite",
    "CounterExhaustedError",
    "FrameFormatError",
    "HeaderError",
    "KeyContext",
    "ReplayError",
    "ReplayWindow",
    "SFrameError",
    "SFrameReceiver",
    "SFrameSender",
    "SuiteError",
    "UnknownKeyError",
    "decode_header",
    "decrypt",
    "derive_key_salt",
    "encode_header",
    "encrypt",
    "make_aead",
    "ratchet_base_key",
    "suite_params",
]

"""The Matrix transport: call events in end-to-end encrypted rooms, through matrix-nio.

matrix-nio (with vodozemac) does Olm/Megolm; its store folder keeps the device keys, the Olm and
Megolm sessions and the sync token, so a restarted client keeps decrypting and resumes where it
stopped. Call events only ever travel encrypted: sending to an unencrypted room raises, and a
plaintext call event arriving in an encrypted room is dropped.

Modules: :mod:`.login` (credentials and the store), :mod:`.sync` (the sync loop and event intake),
:mod:`.keys` (key upkeep, to-device messages, undecryptable events), :mod:`.rooms` (rooms, sending,
the timeline, TURN servers), :mod:`.to_device` (Olm-encrypted to-device messages for group calls),
:mod:`.state` (room state, group rooms), :mod:`.delayed` (MSC4140 delayed events), :mod:`.openid`
(OpenID tokens for an SFU), :mod:`.http` (requests nio has no method for) and :mod:`.transport`
(the class that puts them together).
"""

from .delayed import (
    DelayedEventGoneError,
    DelayedEventsUnsupportedError,
    DelayedEventSupport,
    ScheduledEvent,
)
from .errors import MatrixTransportError, UnencryptedRoomError
from .http import MatrixRequestError
from .login import Credentials
from .openid import OpenIdToken, OpenIdTokenError
from .state import CALL_MEMBER, CallMembershipForbiddenError, StateEvent
from .to_device import DeviceMessage, UnencryptableDeviceError
from .transport import MatrixTransport

__all__ = [
    "CALL_MEMBER",
    "CallMembershipForbiddenError",
    "Credentials",
    "DelayedEventGoneError",
    "DelayedEventSupport",
    "DelayedEventsUnsupportedError",
    "DeviceMessage",
    "MatrixRequestError",
    "MatrixTransport",
    "MatrixTransportError",
    "OpenIdToken",
    "OpenIdTokenError",
    "ScheduledEvent",
    "StateEvent",
    "UnencryptableDeviceError",
    "UnencryptedRoomError",
]

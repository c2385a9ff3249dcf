"""Call states and the errors of the call layer."""

from enum import StrEnum


class CallState(StrEnum):
    """Where a 1:1 call is (after matrix-js-sdk's and the Famedly SDK's call states)."""

    FLEDGLING = "fledgling"
    CREATE_OFFER = "create_offer"
    INVITE_SENT = "invite_sent"
    RINGING = "ringing"
    CREATE_ANSWER = "create_answer"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"  # media was connected and its path stopped answering
    ENDED = "ended"


class Direction(StrEnum):
    """Who placed the call."""

    OUTGOING = "outgoing"
    INCOMING = "incoming"


class CallError(Exception):
    """Base class of call-layer errors."""


class UnencryptedCallError(CallError):
    """Answering a call that cannot be end-to-end encrypted without the user's opt-in."""


class IllegalTransitionError(CallError):
    """A local command that the call's current state does not allow (our misuse)."""

    def __init__(self, state: CallState, event: object) -> None:
        super().__init__(f"{type(event).__name__} is not allowed in state {state.value}")
        self.state = state
        self.event = event

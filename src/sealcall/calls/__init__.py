"""The 1:1 call engine without I/O: one state machine per call, and a manager for all of them."""

from . import actions
from .call import ANSWERED_ELSEWHERE, TRANSITIONS, Call
from .history import ENCRYPTION_REQUIRED, REJECTED, HistoryItem, Outcome
from .inputs import (
    AnswerCall,
    HangUp,
    LocalCandidatesReady,
    LocalDescriptionReady,
    LocalMediaFailed,
    MediaClosed,
    MediaConnected,
    MediaFailed,
    MediaInterrupted,
    PlaceCall,
    RejectCall,
    SetHold,
    SetMuted,
    SetScreenShare,
    UpgradeToVideo,
)
from .manager import (
    CallManager,
    CallWaiting,
    IncomingCall,
    ManagerAction,
    RemoteEvent,
    UnknownCallError,
)
from .policy import BusyPolicy, CallPolicy
from .relay_only import RelayUnavailableError
from .states import (
    CallError,
    CallState,
    Direction,
    IllegalTransitionError,
    UnencryptedCallError,
)

__all__ = [
    "ANSWERED_ELSEWHERE",
    "ENCRYPTION_REQUIRED",
    "REJECTED",
    "TRANSITIONS",
    "AnswerCall",
    "BusyPolicy",
    "Call",
    "CallError",
    "CallManager",
    "CallPolicy",
    "CallState",
    "CallWaiting",
    "Direction",
    "HangUp",
    "HistoryItem",
    "IllegalTransitionError",
    "IncomingCall",
    "LocalCandidatesReady",
    "LocalDescriptionReady",
    "LocalMediaFailed",
    "ManagerAction",
    "MediaClosed",
    "MediaConnected",
    "MediaFailed",
    "MediaInterrupted",
    "Outcome",
    "PlaceCall",
    "RejectCall",
    "RelayUnavailableError",
    "RemoteEvent",
    "SetHold",
    "SetMuted",
    "SetScreenShare",
    "UnencryptedCallError",
    "UnknownCallError",
    "UpgradeToVideo",
    "actions",
]

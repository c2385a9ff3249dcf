"""What a call's state machine asks for: events to send, media work, and notifications."""

from dataclasses import dataclass, field

from sealcall.e2ee import CallKeys
from sealcall.signaling import CallEvent, Candidate, StreamMetadata

from .history import HistoryItem
from .states import CallState


@dataclass(frozen=True)
class SendEvent:
    """Send this call event to the room."""

    event: CallEvent


@dataclass(frozen=True)
class CreateOffer:
    """Build a local offer with these media (then report :class:`LocalDescriptionReady`)."""

    video: bool
    screenshare: bool = False
    on_hold: bool = False
    ice_restart: bool = False


@dataclass(frozen=True)
class CreateAnswer:
    """Apply the remote ``offer`` and build an answer (then report ``LocalDescriptionReady``)."""

    offer_sdp: str = field(repr=False)
    video: bool = False
    on_hold: bool = False


@dataclass(frozen=True)
class ApplyAnswer:
    """Apply the remote answer to our outstanding offer."""

    answer_sdp: str = field(repr=False)


@dataclass(frozen=True)
class RollbackLocalOffer:
    """Withdraw our outstanding re-offer: the far side's offer takes its place (glare)."""


@dataclass(frozen=True)
class AddRemoteCandidates:
    """Give these remote ICE candidates to the media layer."""

    candidates: tuple[Candidate, ...] = field(repr=False)


@dataclass(frozen=True, repr=False)
class UseMediaKeys:
    """Encrypt and decrypt media with these keys, under this SFrame suite, from now on."""

    keys: CallKeys
    suite: int

    def __repr__(self) -> str:
        return "UseMediaKeys(<secret>)"


@dataclass(frozen=True)
class AllowUnencryptedMedia:
    """The user's policy accepted a peer that cannot encrypt: media flows without SFrame."""


@dataclass(frozen=True)
class SetLocalMute:
    """Stop or resume sending microphone / camera frames."""

    audio_muted: bool
    video_muted: bool


@dataclass(frozen=True)
class ClosePeerConnection:
    """The call is over: release the media."""


@dataclass(frozen=True)
class StateChanged:
    """Notification: the call moved from ``old`` to ``new``."""

    old: CallState
    new: CallState


@dataclass(frozen=True)
class RemoteStreamsChanged:
    """Notification: the far side's streams (purposes, mute state) changed."""

    streams: dict[str, StreamMetadata]


@dataclass(frozen=True)
class RemoteHoldChanged:
    """Notification: the far side put the call on hold or resumed it."""

    on_hold: bool


@dataclass(frozen=True)
class CallEnded:
    """Notification: the call ended; ``reason`` says why, ``by_remote`` who ended it."""

    reason: str
    by_remote: bool


@dataclass(frozen=True)
class HistoryItemReady:
    """Notification: the call's history item (exactly one per call)."""

    item: HistoryItem


Action = (
    SendEvent
    | CreateOffer
    | CreateAnswer
    | ApplyAnswer
    | RollbackLocalOffer
    | AddRemoteCandidates
    | UseMediaKeys
    | AllowUnencryptedMedia
    | SetLocalMute
    | ClosePeerConnection
    | StateChanged
    | RemoteStreamsChanged
    | RemoteHoldChanged
    | CallEnded
    | HistoryItemReady
)

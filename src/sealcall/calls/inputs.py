"""What a call's state machine is told: user commands, media results. (Remote call events are
the :mod:`sealcall.signaling` dataclasses themselves.)"""

from dataclasses import dataclass, field

from sealcall.signaling import Candidate, HangupReason, StreamPurpose


@dataclass(frozen=True)
class PlaceCall:
    """The user starts an outgoing call."""

    video: bool = False


@dataclass(frozen=True)
class AnswerCall:
    """The user accepts the ringing call (``video=None``: as offered).

    ``allow_unencrypted`` is the user's decision to take a call that cannot be end-to-end
    encrypted (see ``CallPolicy.ask_unencrypted``); without it such an answer is refused.
    """

    video: bool | None = None
    allow_unencrypted: bool = False


@dataclass(frozen=True)
class RejectCall:
    """The user declines the ringing call on all their devices.

    ``encryption_required``: declined because the call cannot be end-to-end encrypted (the
    caller is told so, ``org.sealcall.reason``).
    """

    encryption_required: bool = False


@dataclass(frozen=True)
class HangUp:
    """The user (or the application) ends the call."""

    reason: HangupReason = HangupReason.USER_HANGUP


@dataclass(frozen=True)
class SetHold:
    """Put the call on hold, or resume it."""

    on_hold: bool


@dataclass(frozen=True)
class SetMuted:
    """Change the local microphone / camera mute state (None leaves it as it is)."""

    audio: bool | None = None
    video: bool | None = None


@dataclass(frozen=True)
class UpgradeToVideo:
    """Add the camera to an audio call."""


@dataclass(frozen=True)
class SetScreenShare:
    """Start or stop sharing the screen."""

    on: bool


@dataclass(frozen=True)
class LocalDescriptionReady:
    """The media layer made the offer or answer asked for; ``streams`` maps stream id to purpose."""

    sdp: str = field(repr=False)  # ICE credentials and DTLS fingerprint: never printed
    streams: dict[str, StreamPurpose] = field(default_factory=dict)


@dataclass(frozen=True)
class LocalCandidatesReady:
    """The media layer gathered more ICE candidates to send."""

    candidates: tuple[Candidate, ...] = field(repr=False)  # IP addresses


@dataclass(frozen=True)
class MediaConnected:
    """ICE and DTLS are up: media flows."""


@dataclass(frozen=True)
class MediaInterrupted:
    """The media path stopped answering (ICE consent checks unanswered; a browser's ICE state
    ``disconnected``), but the connection is not gone: it may come back, reported then as
    :class:`MediaConnected`."""


@dataclass(frozen=True)
class MediaFailed:
    """The media connection failed (ICE failed or lost)."""


@dataclass(frozen=True)
class MediaClosed:
    """The peer connection closed under the call (not by us): aiortc does this some 30 s after
    the far side stops answering ICE consent checks. It cannot come back."""


@dataclass(frozen=True)
class LocalMediaFailed:
    """The media layer could not capture media or build a description."""

    detail: str = ""


LocalInput = (
    PlaceCall
    | AnswerCall
    | RejectCall
    | HangUp
    | SetHold
    | SetMuted
    | UpgradeToVideo
    | SetScreenShare
    | LocalDescriptionReady
    | LocalCandidatesReady
    | MediaConnected
    | MediaInterrupted
    | MediaFailed
    | MediaClosed
    | LocalMediaFailed
)

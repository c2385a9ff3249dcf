"""End-to-end encrypted media on aiortc: frames are SFrame-protected before packetization and
unprotected after the jitter buffer, so relays and SFUs that terminate DTLS see only ciphertext.
Remote tracks hold only their newest few decoded frames, so a track nobody reads costs no memory;
under loss, receivers wait for a lost packet only so long, conceal lost audio and decode no video
frame that follows a loss before a key frame (:mod:`sealcall.media.jitter`); the level of each
decoded audio frame can be metered for who-is-speaking.
"""

from .audio_levels import frame_level_dbov, meter_audio_levels, meter_errors
from .connection import LOOPBACK, EncryptedPeerConnection, PeerConnection, ice_urls
from .crypto_taps import (
    CallbackOpener,
    FrameOpener,
    ReceiverCounters,
    ReceiverTap,
    SenderCounters,
    SenderTap,
)
from .group_connection import GroupPeerConnection
from .jitter import LossCounters, loss_counters
from .keys import MediaKeys, local_call_keys
from .negotiation import negotiate
from .remote_tracks import LatestFrames, frames_dropped, frames_unread
from .shared_encoder import SharedEncoder, SharedEncoderCounters, SharedTrack, UnsubscribedError
from .sinks import FileRecorder, FrameCounter
from .sources import (
    CaptureUnavailableError,
    PatternVideoTrack,
    SyntheticAudioTrack,
    camera_source,
    file_source,
    microphone_source,
    microphone_unavailable_reason,
    screen_source,
)

__all__ = [
    "LOOPBACK",
    "CallbackOpener",
    "CaptureUnavailableError",
    "EncryptedPeerConnection",
    "FileRecorder",
    "FrameCounter",
    "FrameOpener",
    "GroupPeerConnection",
    "LatestFrames",
    "LossCounters",
    "MediaKeys",
    "PatternVideoTrack",
    "PeerConnection",
    "ReceiverCounters",
    "ReceiverTap",
    "SenderCounters",
    "SenderTap",
    "SharedEncoder",
    "SharedEncoderCounters",
    "SharedTrack",
    "SyntheticAudioTrack",
    "UnsubscribedError",
    "camera_source",
    "file_source",
    "frame_level_dbov",
    "frames_dropped",
    "frames_unread",
    "ice_urls",
    "local_call_keys",
    "loss_counters",
    "meter_audio_levels",
    "meter_errors",
    "microphone_source",
    "microphone_unavailable_reason",
    "negotiate",
    "screen_source",
]

"""End-to-end encrypted media on aiortc: frames are SFrame-protected before packetization and
unprotected after the jitter buffer, so relays and SFUs that terminate DTLS see only ciphertext.
"""

from .connection import LOOPBACK, EncryptedPeerConnection, PeerConnection
from .crypto_taps import ReceiverCounters, ReceiverTap, SenderCounters, SenderTap
from .keys import MediaKeys, local_call_keys
from .negotiation import negotiate
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
    "CaptureUnavailableError",
    "EncryptedPeerConnection",
    "FileRecorder",
    "FrameCounter",
    "MediaKeys",
    "PatternVideoTrack",
    "PeerConnection",
    "ReceiverCounters",
    "ReceiverTap",
    "SenderCounters",
    "SenderTap",
    "SyntheticAudioTrack",
    "camera_source",
    "file_source",
    "local_call_keys",
    "microphone_source",
    "microphone_unavailable_reason",
    "negotiate",
    "screen_source",
]

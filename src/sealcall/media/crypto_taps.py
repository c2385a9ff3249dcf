"""Per-sender and per-receiver frame encryption state: counters, pause, key-frame requests.

A :class:`SenderTap` sits between an aiortc encoder and its packetizer; a :class:`ReceiverTap`
between the jitter buffer and the decoder thread. Both belong to exactly one RTP sender or
receiver, so two connections' keys and counters never mix.
"""

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sealcall.e2ee.codecs import Codec, is_key_frame
from sealcall.sframe import FrameFormatError, SFrameError

from .keys import MediaKeys, MissingKeyError

logger = logging.getLogger(__name__)

# While a video receiver waits for a key frame (after a lost or undecryptable frame) it asks
# for one at once and then at most this often.
KEYFRAME_REQUEST_INTERVAL = 0.5
SUPPORTED_MIME_TYPES = frozenset({"audio/opus", "video/vp8", "video/h264"})


def codec_for(mime_type: str) -> Codec | None:
    """The protectable codec for an RTP mime type, or None (such media is never sent or played)."""
    try:
        return Codec.from_mime(mime_type)
    except FrameFormatError:
        return None


@dataclass
class SenderCounters:
    """What one sender has encrypted, or sent in the clear in a call the user accepted
    without frame encryption (``frames_unencrypted``: never counted as encrypted)."""

    frames_encrypted: int = 0
    bytes_encrypted: int = 0
    frames_unencrypted: int = 0
    bytes_unencrypted: int = 0
    frames_failed: int = 0
    frames_paused: int = 0
    retransmissions_sent: int = 0  # packets sent again for the far side's NACKs
    keyframe_requests_received: int = 0  # PLI/FIR from the far side (each forces a key frame)


class SenderTap:
    """Encrypts each encoded frame of one RTP sender; can pause the sender (mute, camera off)."""

    def __init__(self, keys: MediaKeys, kind: str) -> None:
        self.keys = keys
        self.kind = kind
        self.counters = SenderCounters()
        self._paused = False
        self._keyframe_wanted = threading.Event()

    @property
    def paused(self) -> bool:
        """True while no frame is encoded or sent (microphone muted, camera off)."""
        return self._paused

    def set_paused(self, paused: bool) -> None:
        """Stop or resume sending; video resumes with a key frame so it shows at once."""
        if self._paused and not paused and self.kind == "video":
            self._keyframe_wanted.set()
        self._paused = paused

    def take_keyframe_request(self) -> bool:
        """True once after a resume: the next encoded frame should be a key frame."""
        if self._keyframe_wanted.is_set():
            self._keyframe_wanted.clear()
            return True
        return False

    def protect(self, codec: Codec, frame: bytes) -> bytes | None:
        """The protected frame, or None when it must be dropped (it is never sent in the clear)."""
        try:
            protected = self.keys.protect(codec, frame)
        except SFrameError as error:
            self.counters.frames_failed += 1
            # Before the call's keys are agreed, frames are expected to be dropped.
            level = logging.DEBUG if isinstance(error, MissingKeyError) else logging.WARNING
            logger.log(level, "dropped an outgoing %s frame: %s", codec.value, error)
            return None
        # The keys turn unencrypted once and never back: if they still encrypt now, this
        # frame was encrypted; otherwise it is counted as plaintext (never over-claimed).
        if self.keys.encrypted:
            self.counters.frames_encrypted += 1
            self.counters.bytes_encrypted += len(frame)
        else:
            self.counters.frames_unencrypted += 1
            self.counters.bytes_unencrypted += len(frame)
        return protected


class FrameOpener(Protocol):
    """What a :class:`ReceiverTap` decrypts with: a connection's :class:`MediaKeys`, or in a
    group call the sending member device's keys."""

    @property
    def encrypted(self) -> bool:
        """False only when the user accepted media without frame encryption."""
        ...

    def unprotect(self, codec: Codec, data: bytes) -> bytes:
        """The decrypted frame; raises an ``SFrameError`` for anything not genuine."""
        ...


class CallbackOpener:
    """A :class:`FrameOpener` from a function, such as a group key ring's ``unprotect`` bound to
    one sending member device. Always encrypted: there is no plaintext group media."""

    encrypted = True

    def __init__(self, unprotect: Callable[[Codec, bytes], bytes]) -> None:
        self._unprotect = unprotect

    def unprotect(self, codec: Codec, data: bytes) -> bytes:
        """The decrypted frame; the function's ``SFrameError`` for anything not genuine."""
        return self._unprotect(codec, data)


@dataclass
class ReceiverCounters:
    """What one receiver has received, decrypted and dropped; ``frames_unencrypted`` are
    frames taken in the clear in a call the user accepted without frame encryption."""

    frames_received: int = 0
    bytes_received: int = 0
    frames_decrypted: int = 0
    bytes_decrypted: int = 0
    frames_unencrypted: int = 0
    bytes_unencrypted: int = 0
    keyframes_decrypted: int = 0
    frames_dropped: int = 0  # undecryptable (never decoded)
    drop_reasons: Counter[str] = field(default_factory=Counter)
    keyframe_requests: int = 0
    frames_skipped: int = 0  # decrypted video frames withheld: they follow a loss, not a key frame
    frames_concealed: int = 0  # lost audio frames the decoder conceals (Opus PLC)
    last_frame_time: float | None = None


class ReceiverTap:
    """Decrypts each reassembled frame of one RTP receiver before it reaches the decoder.

    A frame that fails is dropped and counted by reason (the exception's class name). For video,
    after such a frame or a frame the jitter buffer lost (``after_gap``), no delta frame reaches
    the decoder (it would decode from a wrong reference: garbage) until a key frame; a key frame
    is requested through ``request_keyframe`` at once and at most once per
    :data:`KEYFRAME_REQUEST_INTERVAL` while waiting, so the picture recovers by itself.
    """

    def __init__(
        self,
        keys: FrameOpener,
        kind: str,
        request_keyframe: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = keys
        self.kind = kind
        self.counters = ReceiverCounters()
        self._request_keyframe = request_keyframe
        self._clock = clock
        self._last_request: float | None = None
        self._awaiting_keyframe = False

    @property
    def awaiting_keyframe(self) -> bool:
        """True while video frames are withheld from the decoder until a key frame."""
        return self._awaiting_keyframe

    def conceal(self) -> None:
        """Count a lost audio frame the decoder conceals (made locally, nothing to decrypt)."""
        self.counters.frames_concealed += 1

    def unprotect(self, mime_type: str, data: bytes, *, after_gap: bool = False) -> bytes | None:
        """The decrypted frame, or None when it was dropped (or withheld until a key frame);
        ``after_gap``: the jitter buffer lost frames just before this one."""
        codec = codec_for(mime_type)
        self.counters.frames_received += 1
        self.counters.bytes_received += len(data)
        if after_gap:
            self._lost()
        try:
            if codec is None:
                raise FrameFormatError(f"{mime_type} media cannot be end-to-end encrypted")
            frame = self.keys.unprotect(codec, data)
        except SFrameError as error:
            self._drop(type(error).__name__)
            return None
        counters = self.counters
        counters.last_frame_time = self._clock()
        keyframe = codec is not Codec.OPUS and is_key_frame(codec, frame)
        if self._awaiting_keyframe:
            if not keyframe:
                counters.frames_skipped += 1
                self._request()
                return None
            self._awaiting_keyframe = False
        if not self.keys.encrypted:  # (see SenderTap.protect)
            counters.frames_unencrypted += 1
            counters.bytes_unencrypted += len(frame)
            return frame
        counters.frames_decrypted += 1
        counters.bytes_decrypted += len(frame)
        if keyframe:
            counters.keyframes_decrypted += 1
        return frame

    def _drop(self, reason: str) -> None:
        counters = self.counters
        counters.frames_dropped += 1
        counters.drop_reasons[reason] += 1
        if counters.frames_dropped in (1, 10, 100) or counters.frames_dropped % 1000 == 0:
            logger.info("dropped %d undecryptable %s frames", counters.frames_dropped, self.kind)
        self._lost()

    def _lost(self) -> None:
        """A video frame was lost: wait for a key frame, and ask for one now."""
        if self.kind != "video":
            return
        if not self._awaiting_keyframe:
            self._awaiting_keyframe = True
            self._last_request = None  # a new loss: ask at once
        self._request()

    def _request(self) -> None:
        now = self._clock()
        if self._last_request is None or now - self._last_request >= KEYFRAME_REQUEST_INTERVAL:
            self._last_request = now
            self.counters.keyframe_requests += 1
            self._request_keyframe()

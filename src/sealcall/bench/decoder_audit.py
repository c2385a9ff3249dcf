"""An audit of what reaches a receiver's decoder, for the network lab's "no bad frame ever
reaches a decoder" check: it watches the decoder queue of
:class:`~sealcall.media.connection.EncryptedPeerConnection` (the frames its
:class:`~sealcall.media.crypto_taps.ReceiverTap` let through) without changing it.

``unvetted``: frames that entered the decoder queue without the tap having decrypted (or taken
in the clear, by the user's decision) or concealed exactly that frame. ``deltas_after_gap``:
video delta frames that entered after a gap (a frame the jitter buffer lost or the tap dropped)
before a key frame. Both must stay 0.
"""

from __future__ import annotations

from typing import Any

from aiortc import RTCRtpReceiver

from sealcall.e2ee.codecs import is_key_frame
from sealcall.media.connection import _DecryptingQueue
from sealcall.media.crypto_taps import ReceiverTap, codec_for
from sealcall.media.jitter import BufferedFrame


def _vetted(tap: ReceiverTap) -> int:
    counters = tap.counters
    return counters.frames_decrypted + counters.frames_unencrypted + counters.frames_concealed


class AuditedQueue(_DecryptingQueue):
    """A decoder queue that also counts its inputs (see the module); made by :func:`audit`."""

    _tap: ReceiverTap
    inputs: int
    unvetted: int
    deltas_after_gap: int
    _seen_vetted: int
    _after_gap: bool

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is not None and isinstance(item[1], BufferedFrame) and item[1].after_gap:
            self._after_gap = True
        dropped = self._tap.counters.frames_dropped
        super().put(item, block, timeout)
        if self._tap.counters.frames_dropped != dropped:
            self._after_gap = True  # an undecryptable frame is a gap too

    def _put(self, item: Any) -> None:
        if item is not None:
            self.inputs += 1
            vetted = _vetted(self._tap)
            if vetted != self._seen_vetted + 1:
                self.unvetted += 1
            self._seen_vetted = vetted
            codec, frame = item
            media_codec = codec_for(codec.mimeType)
            if self._tap.kind == "video" and self._after_gap and media_codec is not None:
                if is_key_frame(media_codec, frame.data):
                    self._after_gap = False
                else:
                    self.deltas_after_gap += 1
        super()._put(item)


def audit(receiver: RTCRtpReceiver) -> AuditedQueue | None:
    """Audit ``receiver``'s decoder queue from now on (in place: aiortc's decoder thread holds
    it); the audited queue, or None if it is not an encrypting connection's."""
    queue = getattr(receiver, "_RTCRtpReceiver__decoder_queue", None)
    if isinstance(queue, AuditedQueue):
        return queue
    if not isinstance(queue, _DecryptingQueue):
        return None
    with queue.mutex:
        queue.__class__ = AuditedQueue
        audited: AuditedQueue = queue  # type: ignore[assignment]
        audited.inputs = audited.unvetted = audited.deltas_after_gap = 0
        audited._seen_vetted = _vetted(audited._tap)
        audited._after_gap = False
    return audited

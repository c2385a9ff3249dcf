"""One mesh pair's peer connection: it sends the shared encoders' frames and decrypts the peer's.

A :class:`GroupPeerConnection`'s senders never encode and never encrypt: each packetizes the
already protected frames of a :class:`~sealcall.media.shared_encoder.SharedEncoder` subscription.
Its feedback goes to the shared encoder (PLI/FIR -> ``request_keyframe``, REMB ->
``report_bitrate``). Its receivers decrypt with a
:class:`~sealcall.media.crypto_taps.FrameOpener` (the sending member device's group keys). The
hooks are per object, as in :mod:`sealcall.media.connection`.
"""

import fractions
import logging
from collections.abc import Sequence
from typing import Any

from aiortc import RTCBundlePolicy, RTCIceServer, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs.base import Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import convert_timebase
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTCEncodedFrame
from aiortc.rtp import RTCP_PSFB_APP, AnyRtcpPacket, RtcpPsfbPacket, unpack_remb_fci
from av.frame import Frame

from sealcall.e2ee.codecs import Codec

from .connection import PeerConnection, _DecryptingQueue, _request_keyframe
from .crypto_taps import FrameOpener, ReceiverTap, codec_for
from .encoders import EncodeResult, RefusingEncoder
from .shared_encoder import AUDIO_CLOCK, SharedEncoder, SharedTrack, UnsubscribedError

logger = logging.getLogger(__name__)

_OPUS_TIME_BASE = fractions.Fraction(1, AUDIO_CLOCK)

GROUP_MIME_TYPES = frozenset({"audio/opus", "video/vp8"})


class _Vp8Packer(Vp8Encoder):
    """Packetizes protected VP8 frames; refuses raw frames (they would go out in the clear)."""

    def encode(self, frame: Frame, force_keyframe: bool = False) -> EncodeResult:
        logger.error("refusing to encode a raw frame on a group connection")
        return [], None


class _OpusPacker(Encoder):
    """Packetizes protected Opus frames; refuses raw frames."""

    def encode(self, frame: Frame, force_keyframe: bool = False) -> EncodeResult:
        logger.error("refusing to encode a raw frame on a group connection")
        return [], None

    def pack(self, packet: Any) -> EncodeResult:
        timestamp = convert_timebase(packet.pts, packet.time_base, _OPUS_TIME_BASE)
        return [bytes(packet)], timestamp


def _packer(codec: RTCRtpCodecParameters) -> Encoder:
    kind = codec_for(codec.mimeType)
    if kind is Codec.VP8:
        return _Vp8Packer()
    if kind is Codec.OPUS:
        return _OpusPacker()
    return RefusingEncoder(codec.mimeType)


class _SharedRtpSender(RTCRtpSender):
    """An RTP sender that packetizes a shared encoder's protected frames and sends its feedback
    there; installed per sender by changing its class."""

    async def _next_encoded_frame(self, codec: RTCRtpCodecParameters) -> RTCEncodedFrame | None:
        track = self.track
        if not isinstance(track, SharedTrack):
            # Anything but a shared encoder's frames would leave unprotected: never sent.
            logger.error("refusing to send a track that is not a shared encoder's")
            self.replaceTrack(None)
            return None
        if getattr(self, "_RTCRtpSender__encoder") is None:  # noqa: B009 - name-mangled
            setattr(self, "_RTCRtpSender__encoder", _packer(codec))  # noqa: B010
        try:
            frame = await super()._next_encoded_frame(codec)
        except UnsubscribedError:
            # UnsubscribedError (screen share off): idle until a new subscription, do not stop.
            if self.track is track:
                self.replaceTrack(None)
            return None
        if frame is not None:
            # The RTP audio-level header would tell a relay when we speak: leave it out.
            frame.audio_level = None  # type: ignore[assignment]  # aiortc uses None for video
        return frame

    def _send_keyframe(self) -> None:
        track = self.track
        if isinstance(track, SharedTrack):
            track.encoder.request_keyframe()

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        track = self.track
        if (
            isinstance(packet, RtcpPsfbPacket)
            and packet.fmt == RTCP_PSFB_APP
            and isinstance(track, SharedTrack)
        ):
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            if self._ssrc in ssrcs:
                track.encoder.report_bitrate(track, bitrate)
            return
        await super()._handle_rtcp_packet(packet)


class GroupPeerConnection(PeerConnection):
    """One mesh pair's connection: its senders packetize the shared encoders' already-protected
    frames (no second encoding, no second encryption); its receivers decrypt with ``opener``
    (the sending member device's group keys). Offers only Opus and VP8 (+RTX)."""

    def __init__(
        self,
        opener: FrameOpener,
        *,
        ice_servers: Sequence[RTCIceServer] = (),
        host_addresses: Sequence[str] | None = None,
        bundle_policy: RTCBundlePolicy = RTCBundlePolicy.BALANCED,
        relay_only: bool = False,
    ) -> None:
        self.opener = opener
        self._receiver_taps: dict[int, ReceiverTap] = {}
        self._shared: dict[int, tuple[SharedEncoder, RTCRtpSender]] = {}
        super().__init__(
            ice_servers=ice_servers,
            host_addresses=host_addresses,
            bundle_policy=bundle_policy,
            relay_only=relay_only,
        )

    def _on_transceiver(self, transceiver: RTCRtpTransceiver) -> None:
        codecs = RTCRtpSender.getCapabilities(transceiver.kind).codecs
        allowed = [c for c in codecs if c.mimeType.lower() in GROUP_MIME_TYPES]
        allowed += [c for c in codecs if c.mimeType.lower().endswith("/rtx")]
        transceiver.setCodecPreferences(allowed)
        transceiver.sender.__class__ = _SharedRtpSender

        receiver = transceiver.receiver
        opener = self._opener_for(transceiver)
        tap = ReceiverTap(opener, transceiver.kind, lambda: _request_keyframe(receiver))
        setattr(receiver, "_RTCRtpReceiver__decoder_queue", _DecryptingQueue(tap))  # noqa: B010
        self._receiver_taps[id(receiver)] = tap

    def _opener_for(self, transceiver: RTCRtpTransceiver) -> FrameOpener:
        """What decrypts ``transceiver``'s frames (here the one peer's keys for all)."""
        return self.opener

    def add_shared(self, encoder: SharedEncoder, *, answering: bool = False) -> RTCRtpSender | None:
        """Send ``encoder``'s frames on this connection; renegotiate afterwards if it added a
        transceiver.

        Reuses an unused transceiver of the kind on which the far side lets us send, else adds
        one. While answering, pass ``answering=True``: then None comes back instead of a new
        transceiver (an answer cannot add media; the next offer will). Adding the same encoder
        twice returns its sender.
        """
        if id(encoder) in self._shared:
            return self._shared[id(encoder)][1]
        busy = {id(sender) for _, sender in self._shared.values()}
        for transceiver in self.getTransceivers():
            offered = getattr(transceiver, "_offerDirection", None)
            if (
                transceiver.kind == encoder.kind
                and transceiver.sender.track is None
                and not transceiver.stopped
                and id(transceiver.sender) not in busy
                and offered in (None, "sendrecv", "sendonly")
            ):
                sender = transceiver.sender
                sender.replaceTrack(encoder.subscribe())
                transceiver.direction = "sendrecv"
                break
        else:
            if answering:
                return None
            sender = self.addTransceiver(encoder.subscribe(), direction="sendrecv").sender
        self._shared[id(encoder)] = (encoder, sender)
        return sender

    def remove_shared(self, encoder: SharedEncoder) -> None:
        """Stop sending ``encoder``'s frames (screen share off); renegotiate afterwards."""
        entry = self._shared.pop(id(encoder), None)
        if entry is None:
            return
        _, sender = entry
        track = sender.track
        sender.replaceTrack(None)
        if track is not None:
            encoder.unsubscribe(track)
        for transceiver in self.getTransceivers():
            if transceiver.sender is sender:
                transceiver.direction = "inactive"

    def shared_sender(self, encoder: SharedEncoder) -> RTCRtpSender | None:
        """The sender carrying ``encoder``'s frames, or None."""
        entry = self._shared.get(id(encoder))
        return None if entry is None else entry[1]

    def _forget_sender(self, sender: RTCRtpSender) -> None:
        for key, (encoder, shared) in list(self._shared.items()):
            if shared is sender:
                del self._shared[key]
                if sender.track is not None:
                    encoder.unsubscribe(sender.track)

    def receiver_tap(self, receiver: RTCRtpReceiver) -> ReceiverTap:
        """The decryption state of one of this connection's receivers."""
        return self._receiver_taps[id(receiver)]

    def receiver_taps(self) -> list[ReceiverTap]:
        """The decryption state of every receiver."""
        return list(self._receiver_taps.values())

    async def close(self) -> None:
        """Unsubscribe from every shared encoder, then close."""
        for encoder, sender in self._shared.values():
            if sender.track is not None:
                encoder.unsubscribe(sender.track)
        self._shared.clear()
        await super().close()

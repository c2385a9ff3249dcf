"""A group call member's one connection to an SFU (docs/sfu-protocol.md, section 4).

:class:`SfuPeerConnection` is a :class:`~sealcall.media.group_connection.GroupPeerConnection`
(its senders packetize the shared encoders' SFrame-protected frames; nothing is encoded or
encrypted per connection) with what an SFU needs:

- it publishes ``sendonly``: audio, the thumbnail video, the full-resolution video, in this order;
- each receiver decrypts with the key of the member that the SFU's ``tracks`` announcement names
  for its m-line (``opener_for_mid``); a stream of nobody we know is dropped frame by frame;
- the audio sender writes the RFC 6464 audio level (measured on the raw frame by the shared
  encoder: aiortc only measures frames it encodes itself) when ``audio_level`` is on; when off
  the extension is not even offered, so the SFU never learns when we speak;
- ``remb_cap`` simulates a link of that bandwidth: while it is set, our receivers' own REMBs
  (aiortc's estimator, whose figures on a loaded machine say more about the CPU than the
  network) are held back and a REMB of exactly the cap goes out every :data:`REMB_PERIOD`
  seconds, so the SFU's picture of our bandwidth is the cap. Lifted (None), the estimator's
  REMBs go out again, after one REMB of its last figure (or :data:`UNCAPPED_REMB`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from aiortc import (
    RTCBundlePolicy,
    RTCIceServer,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTCEncodedFrame
from aiortc.rtp import RTCP_PSFB_APP, AnyRtcpPacket, RtcpPsfbPacket, pack_remb_fci, unpack_remb_fci

from sealcall.e2ee.codecs import Codec
from sealcall.sframe.errors import SFrameError

from .crypto_taps import CallbackOpener, FrameOpener
from .group_connection import GroupPeerConnection, _SharedRtpSender
from .shared_encoder import SharedEncoder, SharedTrack

logger = logging.getLogger(__name__)

AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
REMB_PERIOD = 0.5  # seconds between our own REMBs while a cap is set
UNCAPPED_REMB = 20_000_000  # what we report once a cap is lifted and no estimate is known


class UnannouncedStreamError(SFrameError):
    """A forwarded frame on an m-line the SFU announced as nobody's (or not yet): dropped."""


OpenerForMid = Callable[[str], FrameOpener | None]


class _MidOpener:
    """Decrypts one receiver's frames with the keys of the member its m-line carries now."""

    encrypted = True

    def __init__(self, transceiver: RTCRtpTransceiver, lookup: OpenerForMid) -> None:
        self._transceiver = transceiver
        self._lookup = lookup

    def unprotect(self, codec: Codec, data: bytes) -> bytes:
        mid = self._transceiver.mid
        opener = None if mid is None else self._lookup(mid)
        if opener is None:  # not announced (yet), or announced as nobody we know
            raise UnannouncedStreamError("no member is announced for this stream")
        return opener.unprotect(codec, data)


class _SfuRtpSender(_SharedRtpSender):
    """A shared sender that writes the audio level of each protected frame (RFC 6464)."""

    _sealcall_audio_level: bool

    async def _next_encoded_frame(self, codec: RTCRtpCodecParameters) -> RTCEncodedFrame | None:
        frame = await super()._next_encoded_frame(codec)
        track = self.track
        if frame is not None and self._sealcall_audio_level and isinstance(track, SharedTrack):
            # aiortc writes the header as -audio_level: it keeps levels in dBov (<= 0).
            level = track.encoder.audio_level(frame.timestamp)
            frame.audio_level = None if level is None else -level  # type: ignore[assignment]
        return frame


def _unannounced(codec: Codec, data: bytes) -> bytes:
    raise UnannouncedStreamError("no member is announced for this stream")


def _without_audio_level(sdp: str) -> str:
    return "\r\n".join(line for line in sdp.split("\r\n") if AUDIO_LEVEL_URI not in line)


class SfuPeerConnection(GroupPeerConnection):
    """Our connection to the SFU (see the module docstring)."""

    def __init__(
        self,
        opener_for_mid: OpenerForMid,
        *,
        audio_level: bool = True,
        remb_cap: int | None = None,
        ice_servers: Sequence[RTCIceServer] = (),
        host_addresses: Sequence[str] | None = None,
    ) -> None:
        self.audio_level = audio_level
        self._opener_for_mid = opener_for_mid
        self._remb_cap = remb_cap
        self._estimate: int | None = None  # the last REMB figure our estimators produced
        self._remb_task: asyncio.Task[None] | None = None
        self.rembs_sent = 0  # our own REMBs (the simulated bandwidth)
        self.rembs_held = 0  # the estimator's REMBs held back while simulating
        # Every receiver gets its own _MidOpener (_opener_for): the connection-wide one is unused.
        unused = CallbackOpener(_unannounced)
        # max-bundle: with aiortc's default (balanced) the second video m-line shares the first
        # one's transport, and when the SFU's answer bundles everything aiortc moves the first
        # onto the audio transport but leaves the second behind on a stopped one: it never sends.
        super().__init__(
            unused,
            ice_servers=ice_servers,
            host_addresses=host_addresses,
            bundle_policy=RTCBundlePolicy.MAX_BUNDLE,
        )
        if remb_cap is not None:
            self.set_remb_cap(remb_cap)

    def _opener_for(self, transceiver: RTCRtpTransceiver) -> FrameOpener:
        return _MidOpener(transceiver, self._opener_for_mid)

    def _on_transceiver(self, transceiver: RTCRtpTransceiver) -> None:
        super()._on_transceiver(transceiver)
        sender = transceiver.sender
        sender.__class__ = _SfuRtpSender
        sender._sealcall_audio_level = self.audio_level and transceiver.kind == "audio"  # type: ignore[attr-defined]
        receiver = transceiver.receiver
        if transceiver.kind == "video":
            send = receiver._send_rtcp
            receiver._sealcall_send_rtcp = send  # type: ignore[attr-defined]  # our own REMBs

            async def capped(packet: AnyRtcpPacket) -> None:
                kept = self._cap(packet)
                if kept is not None:
                    await send(kept)

            receiver._send_rtcp = capped  # type: ignore[method-assign]

    def publish(self, encoder: SharedEncoder) -> RTCRtpSender:
        """Send ``encoder``'s frames on a new ``sendonly`` m-line (before the first offer: the
        SFU reads audio, thumbnail, full resolution from the m-line order)."""
        sender = self.addTransceiver(encoder.subscribe(), direction="sendonly").sender
        self._shared[id(encoder)] = (encoder, sender)
        return sender

    async def createOffer(self) -> RTCSessionDescription:  # noqa: N802 - aiortc's name
        offer = await super().createOffer()
        if self.audio_level:
            return offer
        return RTCSessionDescription(_without_audio_level(offer.sdp), offer.type)

    # -- the simulated bandwidth cap ---------------------------------------------------------

    @property
    def remb_cap(self) -> int | None:
        """The bandwidth we claim at most, bits per second (None: no cap)."""
        return self._remb_cap

    def set_remb_cap(self, bps: int | None) -> None:
        """Cap (or uncap, None) the bandwidth estimate our REMBs report to the SFU."""
        if bps is not None and bps <= 0:
            raise ValueError("a bandwidth cap must be positive")
        self._remb_cap = bps
        if self._remb_task is None:
            self._remb_task = asyncio.ensure_future(self._report())

    def _cap(self, packet: AnyRtcpPacket) -> AnyRtcpPacket | None:
        if not isinstance(packet, RtcpPsfbPacket) or packet.fmt != RTCP_PSFB_APP:
            return packet
        try:
            bitrate, _ = unpack_remb_fci(packet.fci)
        except ValueError:
            return packet
        self._estimate = bitrate
        if self._remb_cap is None:
            return packet
        self.rembs_held += 1
        return None

    def _video_receivers(self) -> list[RTCRtpReceiver]:
        return [
            t.receiver
            for t in self.getTransceivers()
            if t.kind == "video" and t.mid is not None and not t.stopped
        ]

    async def _report(self) -> None:
        """While capped, REMB the cap every REMB_PERIOD; once uncapped, one last REMB with
        what our estimators measured (or :data:`UNCAPPED_REMB`), then stop."""
        while True:
            cap = self._remb_cap
            bitrate = cap if cap is not None else self._estimate or UNCAPPED_REMB
            receivers = self._video_receivers()
            if receivers and self.connectionState == "connected":
                ssrc = getattr(receivers[0], "_RTCRtpReceiver__rtcp_ssrc", None)
                if ssrc is not None:
                    remb = RtcpPsfbPacket(
                        fmt=RTCP_PSFB_APP, ssrc=ssrc, media_ssrc=0, fci=pack_remb_fci(bitrate, [])
                    )
                    with contextlib.suppress(ConnectionError):
                        await receivers[0]._sealcall_send_rtcp(remb)  # type: ignore[attr-defined]
                        self.rembs_sent += 1
                    if cap is None:
                        self._remb_task = None
                        return
            await asyncio.sleep(REMB_PERIOD)

    async def close(self) -> None:
        """Stop reporting, unsubscribe from the shared encoders, close."""
        task, self._remb_task = self._remb_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await super().close()

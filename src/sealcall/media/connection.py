"""Peer connections with explicit ICE settings, and with end-to-end encrypted media.

:class:`PeerConnection` is aiortc's ``RTCPeerConnection`` that never falls back to aiortc's default
outside STUN server and can be held to given host addresses (loopback for tests and demos), and
whose remote tracks hold only their newest frames.
:class:`EncryptedPeerConnection` adds frame encryption: every transceiver it creates gets its own
:class:`~sealcall.media.crypto_taps.SenderTap` and
:class:`~sealcall.media.crypto_taps.ReceiverTap` bound to the connection's
:class:`~sealcall.media.keys.MediaKeys`. The hooks are per object (no module of aiortc is
patched), so plain connections in the same process stay plain.
"""

import queue
from collections.abc import Sequence
from typing import Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTCEncodedFrame
from aiortc.rtp import RTP_HISTORY_SIZE

from .crypto_taps import SUPPORTED_MIME_TYPES, ReceiverTap, SenderTap
from .encoders import encrypting_encoder
from .ice_hooks import end_check_pacing_early, patient_consent_checks, restrict_host_addresses
from .jitter import BufferedFrame, install_jitter_buffer
from .keys import MediaKeys
from .remote_tracks import bound_receiver
from .turn_fallback import prefer_reachable_turn

LOOPBACK = ("127.0.0.1",)


def ice_urls(servers: Sequence[RTCIceServer]) -> list[str]:
    """Every URL of ``servers`` (an entry's ``urls`` is one string or a list)."""
    return [
        str(url)
        for server in servers
        for url in (server.urls if isinstance(server.urls, list) else [server.urls])
    ]


class PeerConnection(RTCPeerConnection):
    """An ``RTCPeerConnection`` whose ICE servers are always explicit.

    ``ice_servers`` defaults to none (host candidates only): aiortc's built-in default STUN
    server is never used. ``host_addresses`` limits the local addresses ICE binds to;
    ``relay_only`` gathers and uses TURN relay candidates only (ICE transport policy ``relay``). Its
    remote tracks keep only their newest frames (:mod:`sealcall.media.remote_tracks`), so a
    track nobody reads does not grow, and its receivers reassemble frames with
    :mod:`sealcall.media.jitter` (bounded waits for lost packets, lost audio concealed). Where
    UDP does not reach the TURN server, ICE gathers over a TCP TURN URI of ``ice_servers``
    instead (:mod:`sealcall.media.turn_fallback`; aiortc alone uses only the first one).

    aiortc has no ``disconnected`` state: :attr:`path_interrupted` says whether ICE consent
    checks have gone unanswered (the path is down, the ICE session still up), and the event
    ``pathstatechange`` is emitted when that changes.
    """

    def __init__(
        self,
        *,
        ice_servers: Sequence[RTCIceServer] = (),
        host_addresses: Sequence[str] | None = None,
        bundle_policy: RTCBundlePolicy = RTCBundlePolicy.BALANCED,
        relay_only: bool = False,
    ) -> None:
        policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
        super().__init__(
            RTCConfiguration(
                iceServers=list(ice_servers), bundlePolicy=bundle_policy, iceTransportPolicy=policy
            )
        )
        self._host_addresses = tuple(host_addresses) if host_addresses is not None else None
        self._ice_servers = tuple(ice_servers)
        self._quiet_paths: set[object] = set()  # ICE connections whose checks go unanswered

    def _RTCPeerConnection__createTransceiver(  # noqa: N802 - overrides aiortc's private hook
        self, direction: str, kind: str, sender_track: MediaStreamTrack | None = None
    ) -> RTCRtpTransceiver:
        create = super()._RTCPeerConnection__createTransceiver  # type: ignore[misc]
        transceiver: RTCRtpTransceiver = create(direction, kind, sender_track)
        bound_receiver(transceiver.receiver)
        install_jitter_buffer(transceiver.receiver)
        if self._host_addresses is not None:
            restrict_host_addresses(transceiver, self._host_addresses)
        end_check_pacing_early(transceiver)
        prefer_reachable_turn(transceiver, self._ice_servers)
        key = object()  # one ICE connection (bundled transceivers keep the first one's hook)
        patient_consent_checks(transceiver, lambda answers: self._path_answers(key, answers))
        self._on_transceiver(transceiver)
        return transceiver

    @property
    def path_interrupted(self) -> bool:
        """Whether an ICE path of this connection stopped answering (it may still come back)."""
        return bool(self._quiet_paths)

    def _path_answers(self, key: object, answers: bool) -> None:
        was = self.path_interrupted
        if answers:
            self._quiet_paths.discard(key)
        else:
            self._quiet_paths.add(key)
        if self.path_interrupted != was:
            self.emit("pathstatechange")

    def _on_transceiver(self, transceiver: RTCRtpTransceiver) -> None:
        """Called for every new transceiver, local or remote; subclasses attach their hooks."""

    def _forget_sender(self, sender: RTCRtpSender) -> None:
        """A rollback removed ``sender``'s transceiver; subclasses drop what they keep of it."""

    def rollback_local_offer(self) -> list[RTCRtpTransceiver]:
        """Withdraw a pending local re-offer (W3C ``rollback``, which aiortc lacks).

        Only for renegotiation: the current descriptions stay, the pending offer goes, and so do
        the transceivers that only that offer introduced (they are returned, stopped; add their
        tracks again for the next offer).
        """
        if self.signalingState != "have-local-offer":
            return []
        current = getattr(self, "_RTCPeerConnection__currentLocalDescription")  # noqa: B009
        if current is None or self.remoteDescription is None:
            raise ValueError("only a re-offer can be rolled back")
        transceivers: list[RTCRtpTransceiver] = getattr(self, "_RTCPeerConnection__transceivers")  # noqa: B009
        negotiated = {media.rtp.muxId for media in current.media}
        removed = [t for t in transceivers if t.mid is None or t.mid not in negotiated]
        for transceiver in removed:
            transceivers.remove(transceiver)
            self._forget_sender(transceiver.sender)
        setattr(self, "_RTCPeerConnection__pendingLocalDescription", None)  # noqa: B010
        getattr(self, "_RTCPeerConnection__setSignalingState")("stable")  # noqa: B009
        return removed


class _EncryptingRtpSender(RTCRtpSender):
    """An RTP sender whose encoder encrypts; installed per sender by changing its class."""

    _sealcall_tap: SenderTap

    async def _next_encoded_frame(self, codec: RTCRtpCodecParameters) -> RTCEncodedFrame | None:
        if getattr(self, "_RTCRtpSender__encoder") is None:  # noqa: B009 - name-mangled
            setattr(self, "_RTCRtpSender__encoder", encrypting_encoder(codec, self._sealcall_tap))  # noqa: B010
        frame = await super()._next_encoded_frame(codec)
        if frame is not None:
            # The RTP audio-level header would tell a relay when we speak: leave it out.
            frame.audio_level = None  # type: ignore[assignment]  # aiortc uses None for video
        return frame

    async def _retransmit(self, sequence_number: int) -> None:
        history = getattr(self, "_RTCRtpSender__rtp_history")  # noqa: B009 - as aiortc looks
        packet = history.get(sequence_number % RTP_HISTORY_SIZE)
        if packet is not None and packet.sequence_number == sequence_number:
            self._sealcall_tap.counters.retransmissions_sent += 1
        await super()._retransmit(sequence_number)

    def _send_keyframe(self) -> None:
        self._sealcall_tap.counters.keyframe_requests_received += 1
        super()._send_keyframe()


class _DecryptingQueue(queue.Queue[Any]):
    """The receiver's decoder queue: frames are decrypted on the way in, bad ones never enter."""

    def __init__(self, tap: ReceiverTap) -> None:
        super().__init__()
        self._tap = tap

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is not None:
            codec, encoded_frame = item
            if isinstance(encoded_frame, BufferedFrame) and encoded_frame.concealed:
                # Made here from a clear Opus TOC byte, never received: nothing to decrypt.
                self._tap.conceal()
            else:
                after_gap = isinstance(encoded_frame, BufferedFrame) and encoded_frame.after_gap
                data = self._tap.unprotect(codec.mimeType, encoded_frame.data, after_gap=after_gap)
                if data is None:
                    return
                encoded_frame.data = data
        super().put(item, block, timeout)


def _request_keyframe(receiver: RTCRtpReceiver) -> None:
    # aiortc sends a PLI with the next video packet when its decoder-error flag is set.
    getattr(receiver, "_RTCRtpReceiver__decoder_error").set()  # noqa: B009


class EncryptedPeerConnection(PeerConnection):
    """A peer connection whose media is SFrame-encrypted end to end with ``keys``.

    Only Opus, VP8 and H.264 are offered; anything else would have to go out in the clear and is
    therefore never negotiated (and never sent if a peer forces it).
    """

    def __init__(
        self,
        keys: MediaKeys,
        *,
        ice_servers: Sequence[RTCIceServer] = (),
        host_addresses: Sequence[str] | None = None,
        relay_only: bool = False,
    ) -> None:
        self.keys = keys
        self._sender_taps: dict[int, SenderTap] = {}
        self._receiver_taps: dict[int, ReceiverTap] = {}
        self._roles: dict[int, str] = {}
        super().__init__(
            ice_servers=ice_servers, host_addresses=host_addresses, relay_only=relay_only
        )

    def _on_transceiver(self, transceiver: RTCRtpTransceiver) -> None:
        kind = transceiver.kind
        codecs = RTCRtpSender.getCapabilities(kind).codecs
        allowed = [c for c in codecs if c.mimeType.lower() in SUPPORTED_MIME_TYPES]
        allowed += [c for c in codecs if c.mimeType.lower().endswith("/rtx")]
        transceiver.setCodecPreferences(allowed)

        sender = transceiver.sender
        sender_tap = SenderTap(self.keys, kind)
        sender.__class__ = _EncryptingRtpSender
        sender._sealcall_tap = sender_tap  # type: ignore[attr-defined]
        self._sender_taps[id(sender)] = sender_tap

        receiver = transceiver.receiver
        receiver_tap = ReceiverTap(self.keys, kind, lambda: _request_keyframe(receiver))
        setattr(receiver, "_RTCRtpReceiver__decoder_queue", _DecryptingQueue(receiver_tap))  # noqa: B010
        self._receiver_taps[id(receiver)] = receiver_tap

    # Local controls. The first audio track added is the microphone, the first video track the
    # camera; a screen share is a separate video transceiver added and removed by renegotiation.

    def addTrack(self, track: MediaStreamTrack) -> RTCRtpSender:  # noqa: N802 - aiortc's name
        sender = super().addTrack(track)
        role = "microphone" if track.kind == "audio" else "camera"
        if role not in self._roles.values():
            self._roles[id(sender)] = role
        return sender

    def add_usermedia_track(
        self, track: MediaStreamTrack, *, new_only: bool = False
    ) -> RTCRtpSender | None:
        """Add the microphone or the camera on a transceiver the far side lets us send on.

        aiortc's ``addTrack`` would reuse any transceiver of the kind, even one on which the far
        side only sends (its screen share). This picks an unused transceiver whose offered
        direction allows sending, or else adds a new transceiver. While answering, pass
        ``new_only=True``: then None comes back instead of a new transceiver, because an answer
        cannot add media (the next offer will).
        """
        role = "microphone" if track.kind == "audio" else "camera"
        for transceiver in self.getTransceivers():
            offered = getattr(transceiver, "_offerDirection", None)
            if (
                transceiver.kind == track.kind
                and transceiver.sender.track is None
                and not transceiver.stopped
                and id(transceiver.sender) not in self._roles
                and offered in (None, "sendrecv", "sendonly")
            ):
                transceiver.sender.replaceTrack(track)
                transceiver.direction = "sendrecv"
                sender = transceiver.sender
                break
        else:
            if new_only:
                return None
            sender = self.addTransceiver(track, direction="sendrecv").sender
        if role not in self._roles.values():
            self._roles[id(sender)] = role
        return sender

    def role_of(self, sender: RTCRtpSender) -> str | None:
        """``microphone``, ``camera``, ``screenshare`` or None for one of our senders."""
        return self._roles.get(id(sender))

    def senders_for(self, role: str) -> list[RTCRtpSender]:
        """This connection's senders with ``role``: microphone, camera or screenshare."""
        return [s for s in self.getSenders() if self._roles.get(id(s)) == role]

    def set_microphone_muted(self, muted: bool) -> None:
        """Mute or unmute: while muted no audio frame is encoded or sent."""
        for sender in self.senders_for("microphone"):
            self.sender_tap(sender).set_paused(muted)

    def set_camera_enabled(self, enabled: bool) -> None:
        """Turn the camera off (no video frames go out) or on again (starting with a key frame)."""
        for sender in self.senders_for("camera"):
            self.sender_tap(sender).set_paused(not enabled)

    def add_screen_share(self, track: MediaStreamTrack) -> RTCRtpSender:
        """Add a screen-share video track; renegotiate afterwards to start sending it."""
        if track.kind != "video":
            raise ValueError("a screen share is a video track")
        if self.senders_for("screenshare"):
            raise ValueError("a screen share is already active")
        sender = self.addTransceiver(track, direction="sendonly").sender
        self._roles[id(sender)] = "screenshare"
        return sender

    def remove_screen_share(self) -> bool:
        """Stop the screen share; renegotiate afterwards. False if there was none."""
        for transceiver in self.getTransceivers():
            if self._roles.get(id(transceiver.sender)) == "screenshare":
                transceiver.sender.replaceTrack(None)
                transceiver.direction = "inactive"
                del self._roles[id(transceiver.sender)]
                return True
        return False

    def _forget_sender(self, sender: RTCRtpSender) -> None:
        self._roles.pop(id(sender), None)

    def sender_tap(self, sender: RTCRtpSender) -> SenderTap:
        """The encryption state of one of this connection's senders."""
        return self._sender_taps[id(sender)]

    def receiver_tap(self, receiver: RTCRtpReceiver) -> ReceiverTap:
        """The decryption state of one of this connection's receivers."""
        return self._receiver_taps[id(receiver)]

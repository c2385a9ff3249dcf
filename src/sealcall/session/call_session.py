"""The live side of one call: its peer connection, keys and tracks, driven by the call's actions."""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import TYPE_CHECKING, Any

from aiortc import RTCIceCandidate, RTCRtpTransceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import SessionDescription as ParsedSdp
from aiortc.sdp import candidate_from_sdp

from sealcall.calls import (
    AnswerCall,
    Call,
    CallState,
    HangUp,
    LocalDescriptionReady,
    LocalMediaFailed,
    MediaClosed,
    MediaConnected,
    MediaFailed,
    RejectCall,
    SetHold,
    SetMuted,
    SetScreenShare,
    UpgradeToVideo,
)
from sealcall.calls import actions as act
from sealcall.calls.inputs import LocalInput
from sealcall.media import EncryptedPeerConnection, MediaKeys
from sealcall.signaling import Candidate, StreamPurpose

if TYPE_CHECKING:
    from .voip import VoIP

logger = logging.getLogger(__name__)


class CallSession:
    """One call as the application sees it: commands in, tracks and callbacks out.

    Commands return once the call engine has taken them (they raise
    :class:`~sealcall.calls.IllegalTransitionError` when the state does not allow them).
    """

    def __init__(self, voip: VoIP, call: Call, room_id: str) -> None:
        self.voip = voip
        self.call = call
        self.room_id = room_id
        self.keys = MediaKeys()
        self.pc: EncryptedPeerConnection | None = None
        self.remote_tracks: dict[str, MediaStreamTrack] = {}  # track id -> track
        self.remote_purposes: dict[str, StreamPurpose] = {}  # track id -> purpose
        self._usermedia_stream = uuid.uuid4().hex
        self._screen_stream = uuid.uuid4().hex
        self._local: dict[str, MediaStreamTrack] = {}  # "microphone" / "camera" / "screen"
        self._screen_transceiver: RTCRtpTransceiver | None = None
        self.reported_remote_mute = (False, False)
        self._remote_sdp = ""

    def remote_mute_state(self) -> tuple[bool, bool]:
        """Whether the far side's microphone and camera are muted (its usermedia metadata)."""
        for metadata in self.call.remote_streams.values():
            if metadata.purpose == StreamPurpose.USERMEDIA.value:
                return metadata.audio_muted, metadata.video_muted and self.call.video
        return False, False

    def __repr__(self) -> str:
        return f"CallSession({self.call!r})"

    @property
    def call_id(self) -> str:
        """The call's id."""
        return self.call.call_id

    @property
    def state(self) -> CallState:
        """The call's state."""
        return self.call.state

    # -- commands ------------------------------------------------------------------------

    @property
    def encrypted(self) -> bool:
        """False for a call whose media is not end-to-end encrypted (the far side cannot
        encrypt, and the user's policy or answer accepted that)."""
        return self.call.encrypted

    async def answer(self, video: bool | None = None, *, allow_unencrypted: bool = False) -> None:
        """Accept the ringing call (with the camera if ``video``; None: as offered).

        A call that cannot be end-to-end encrypted (``encrypted`` is False) is answered only
        with ``allow_unencrypted=True`` or a policy that allows it; otherwise
        :class:`~sealcall.calls.UnencryptedCallError` is raised and the call keeps ringing.
        """
        await self.voip.command(
            self.call_id, AnswerCall(video=video, allow_unencrypted=allow_unencrypted)
        )

    async def reject(self, *, encryption_required: bool = False) -> None:
        """Decline the ringing call on all our devices (``encryption_required``: because it
        cannot be end-to-end encrypted; the caller is told so)."""
        await self.voip.command(self.call_id, RejectCall(encryption_required=encryption_required))

    async def hangup(self) -> None:
        """End the call."""
        await self.voip.command(self.call_id, HangUp())

    async def hold(self, on_hold: bool = True) -> None:
        """Put the call on hold (or resume it with ``False``)."""
        await self.voip.command(self.call_id, SetHold(on_hold))

    async def set_microphone_muted(self, muted: bool) -> None:
        """Mute or unmute the microphone; the far side is told (MSC3291)."""
        await self.voip.command(self.call_id, SetMuted(audio=muted))

    async def set_camera_muted(self, muted: bool) -> None:
        """Turn the camera off or on again; the far side is told (MSC3291)."""
        await self.voip.command(self.call_id, SetMuted(video=muted))

    async def upgrade_to_video(self) -> None:
        """Add the camera to an audio call (renegotiates)."""
        await self.voip.command(self.call_id, UpgradeToVideo())

    async def set_screen_share(self, on: bool) -> None:
        """Start or stop sharing the screen (renegotiates)."""
        await self.voip.command(self.call_id, SetScreenShare(on))

    # -- actions from the call engine --------------------------------------------------

    def _feed(self, command: LocalInput) -> None:
        self.voip.feed(self.call_id, command)

    def _ensure_pc(self) -> EncryptedPeerConnection:
        if self.pc is None:
            pc = EncryptedPeerConnection(
                self.keys,
                ice_servers=self.voip.ice_servers,
                host_addresses=self.voip.host_addresses,
            )
            pc.on("connectionstatechange", lambda: self._on_connection_state(pc))
            pc.on("track", self._on_track)
            self.pc = pc
        return self.pc

    def _on_connection_state(self, pc: EncryptedPeerConnection) -> None:
        if pc is not self.pc or self.call.state is CallState.ENDED:
            return
        if pc.connectionState == "connected":
            self._feed(MediaConnected())
        elif pc.connectionState == "failed":
            self._feed(MediaFailed())
        elif pc.connectionState == "closed" and self._in_call():
            # Not closed by us (the call has not ended): aiortc gave up on the far side.
            self._feed(MediaClosed())

    def _in_call(self) -> bool:
        return self.call.state in (CallState.CONNECTING, CallState.CONNECTED)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self.remote_tracks[track.id] = track
        purpose = self._purpose_of(track.id)
        self.remote_purposes[track.id] = purpose
        self.voip.emit("remote_media_added", self, track, purpose)
        track.on("ended", lambda: self._on_track_ended(track))

    def gone_remote_tracks(self) -> list[tuple[MediaStreamTrack, StreamPurpose]]:
        """Forget remote tracks whose purpose the far side no longer announces (screen share
        stopped); return them."""
        announced = {m.purpose for m in self.call.remote_streams.values()}
        gone: list[tuple[MediaStreamTrack, StreamPurpose]] = [
            (self.remote_tracks[tid], purpose)
            for tid, purpose in self.remote_purposes.items()
            if purpose is StreamPurpose.SCREENSHARE and purpose.value not in announced
        ]
        for track, _ in gone:
            self.remote_tracks.pop(track.id, None)
            self.remote_purposes.pop(track.id, None)
        return gone

    def _on_track_ended(self, track: MediaStreamTrack) -> None:
        if self.remote_tracks.pop(track.id, None) is not None:
            purpose = self.remote_purposes.pop(track.id, StreamPurpose.USERMEDIA)
            self.voip.emit("remote_media_removed", self, track, purpose)

    def _purpose_of(self, track_id: str) -> StreamPurpose:
        # aiortc announces tracks while it applies a description, before it stores it.
        if not self._remote_sdp:
            return StreamPurpose.USERMEDIA
        for media in ParsedSdp.parse(self._remote_sdp).media:
            if media.msid and media.msid.split()[-1] == track_id:
                metadata = self.call.remote_streams.get(media.msid.split()[0])
                if metadata is not None and metadata.purpose == StreamPurpose.SCREENSHARE.value:
                    return StreamPurpose.SCREENSHARE
        return StreamPurpose.USERMEDIA

    def _add_local(self, role: str, pc: EncryptedPeerConnection, answering: bool = False) -> None:
        if role in self._local:
            return
        factory = {"microphone": self.voip.media.microphone, "camera": self.voip.media.camera}[role]
        track = factory()
        sender = pc.add_usermedia_track(track, new_only=answering)
        if sender is None:
            track.stop()  # an answer cannot add media the offer lacks: our next offer will
            return
        self._local[role] = track
        sender._stream_id = self._usermedia_stream

    def _prepare_tracks(
        self, pc: EncryptedPeerConnection, video: bool, screenshare: bool, answering: bool = False
    ) -> None:
        self._add_local("microphone", pc, answering)
        if video:
            self._add_local("camera", pc, answering)
        if screenshare and self._screen_transceiver is None:
            track = self.voip.media.screen()
            self._local["screen"] = track
            sender = pc.add_screen_share(track)
            sender._stream_id = self._screen_stream
            self._screen_transceiver = next(t for t in pc.getTransceivers() if t.sender is sender)
        elif not screenshare and self._screen_transceiver is not None:
            pc.remove_screen_share()
            self._screen_transceiver = None
            screen = self._local.pop("screen", None)
            if screen is not None:
                screen.stop()

    def _forget_senders(self, transceivers: list[RTCRtpTransceiver]) -> None:
        """Stop the tracks of transceivers a rollback removed; the next offer adds fresh ones."""
        tracks = {id(t.sender.track) for t in transceivers if t.sender.track is not None}
        for role, track in list(self._local.items()):
            if id(track) in tracks:
                track.stop()
                del self._local[role]
        if any(t is self._screen_transceiver for t in transceivers):
            self._screen_transceiver = None

    def _apply_hold(self, pc: EncryptedPeerConnection, on_hold: bool) -> None:
        for transceiver in pc.getTransceivers():
            if transceiver is self._screen_transceiver or transceiver.stopped:
                continue
            # W3C hold: stop receiving; keep sending so the far side can play hold media.
            transceiver.direction = "sendonly" if on_hold else "sendrecv"

    def _streams(self) -> dict[str, StreamPurpose]:
        streams = {self._usermedia_stream: StreamPurpose.USERMEDIA}
        if self._screen_transceiver is not None:
            streams[self._screen_stream] = StreamPurpose.SCREENSHARE
        return streams

    async def perform(self, action: act.Action) -> None:
        """Carry out one media action of the call engine."""
        try:
            await self._perform(action)
        except Exception as error:
            if isinstance(action, act.ClosePeerConnection):
                logger.warning("closing call %s failed: %s", self.call_id, type(error).__name__)
                return
            logger.warning("call %s: %s failed: %s", self.call_id, type(action).__name__, error)
            if self.pc is not None and self.pc.connectionState == "closed" and self._in_call():
                self._feed(MediaClosed())  # e.g. an ICE restart offer on a connection now gone
                return
            self._feed(LocalMediaFailed(f"{type(action).__name__}: {type(error).__name__}"))

    async def _perform(self, action: act.Action) -> None:
        if isinstance(action, act.CreateOffer):
            pc = self._ensure_pc()
            self._prepare_tracks(pc, action.video, action.screenshare)
            self._apply_hold(pc, action.on_hold)
            await pc.setLocalDescription(await pc.createOffer())
            self._feed(LocalDescriptionReady(pc.localDescription.sdp, self._streams()))
        elif isinstance(action, act.CreateAnswer):
            pc = self._ensure_pc()
            self._remote_sdp = action.offer_sdp
            await pc.setRemoteDescription(RTCSessionDescription(action.offer_sdp, "offer"))
            self._prepare_tracks(
                pc, action.video, self._screen_transceiver is not None, answering=True
            )
            self._apply_hold(pc, action.on_hold)
            await pc.setLocalDescription(await pc.createAnswer())
            self._feed(LocalDescriptionReady(pc.localDescription.sdp, self._streams()))
        elif isinstance(action, act.RollbackLocalOffer):
            if self.pc is not None:
                self._forget_senders(self.pc.rollback_local_offer())
        elif isinstance(action, act.ApplyAnswer):
            self._remote_sdp = action.answer_sdp
            await self._ensure_pc().setRemoteDescription(
                RTCSessionDescription(action.answer_sdp, "answer")
            )
        elif isinstance(action, act.AddRemoteCandidates):
            await self._add_candidates(action.candidates)
        elif isinstance(action, act.UseMediaKeys):
            self.keys.use_suite(action.suite)
            self.keys.set_send_key(0, action.keys.send)
            self.keys.add_receive_key(0, action.keys.receive)
        elif isinstance(action, act.AllowUnencryptedMedia):
            self.keys.allow_unencrypted()
        elif isinstance(action, act.SetLocalMute):
            if self.pc is not None:
                self.pc.set_microphone_muted(action.audio_muted)
                self.pc.set_camera_enabled(not action.video_muted)
        elif isinstance(action, act.ClosePeerConnection):
            await self.close()

    async def _add_candidates(self, candidates: tuple[Candidate, ...]) -> None:
        pc = self._ensure_pc()
        for item in candidates:
            if not item.candidate:
                await pc.addIceCandidate(None)
                continue
            with contextlib.suppress(ValueError, IndexError):
                parsed: Any = candidate_from_sdp(item.candidate.removeprefix("candidate:"))
                parsed.sdpMid = item.sdp_mid
                parsed.sdpMLineIndex = item.sdp_mline_index
                if isinstance(parsed, RTCIceCandidate):
                    await pc.addIceCandidate(parsed)

    async def close(self) -> None:
        """Release the media and forget the keys (the call engine does this when the call ends)."""
        for track in self._local.values():
            track.stop()
        self._local.clear()
        if self.pc is not None:
            await self.pc.close()
        self.keys.forget()

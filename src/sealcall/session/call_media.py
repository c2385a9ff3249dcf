"""The live media of one 1:1 call: its peer connection and tracks, driven by the call's actions.

:class:`CallMedia` carries out what a :class:`~sealcall.calls.Call` asks of the media layer
(offers, answers, candidates, hold, screen share, closing) for any kind of peer connection. What
differs between a 1:1 call and a pair of a group call's mesh is where the outgoing media comes
from, how a connection is made and who hears about it: those are the hooks a subclass supplies
(:class:`~sealcall.session.CallSession` for 1:1 calls, ``MeshPairSession`` for the mesh).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from aiortc import RTCIceCandidate, RTCRtpSender, RTCRtpTransceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import SessionDescription as ParsedSdp
from aiortc.sdp import candidate_from_sdp

from sealcall.calls import (
    Call,
    CallState,
    LocalDescriptionReady,
    LocalMediaFailed,
    MediaClosed,
    MediaConnected,
    MediaFailed,
    MediaInterrupted,
)
from sealcall.calls import actions as act
from sealcall.calls.inputs import LocalInput
from sealcall.media import PeerConnection
from sealcall.signaling import Candidate, StreamPurpose

logger = logging.getLogger(__name__)

PcT = TypeVar("PcT", bound=PeerConnection)


class CallMedia(Generic[PcT]):
    """The peer connection of one call and the tracks on it; subclasses supply the hooks."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.pc: PcT | None = None
        self.remote_tracks: dict[str, MediaStreamTrack] = {}  # track id -> track
        self.remote_purposes: dict[str, StreamPurpose] = {}  # track id -> purpose
        self.reported_remote_mute = (False, False)
        self._usermedia_stream = uuid.uuid4().hex
        self._screen_stream = uuid.uuid4().hex
        self._local: dict[str, MediaStreamTrack] = {}  # tracks this call owns, by role
        self._senders: dict[str, RTCRtpSender] = {}  # microphone / camera -> its sender
        self._screen_transceiver: RTCRtpTransceiver | None = None
        self._remote_sdp = ""

    @property
    def call_id(self) -> str:
        """The call's id."""
        return self.call.call_id

    @property
    def state(self) -> CallState:
        """The call's state."""
        return self.call.state

    def remote_mute_state(self) -> tuple[bool, bool]:
        """Whether the far side's microphone and camera are muted (its usermedia metadata)."""
        for metadata in self.call.remote_streams.values():
            if metadata.purpose == StreamPurpose.USERMEDIA.value:
                return metadata.audio_muted, metadata.video_muted and self.call.video
        return False, False

    # -- hooks -------------------------------------------------------------------------------

    def _feed(self, command: LocalInput) -> None:
        """Hand a media result to the call engine."""
        raise NotImplementedError

    def _new_pc(self) -> PcT:
        """A new peer connection for this call."""
        raise NotImplementedError

    def _attach(self, role: str, pc: PcT, answering: bool) -> RTCRtpSender | None:
        """Put the microphone or the camera (``role``) on ``pc``; None if an answer cannot."""
        raise NotImplementedError

    def _attach_screen(self, pc: PcT) -> RTCRtpSender:
        """Start sending the screen on a new transceiver of ``pc``."""
        raise NotImplementedError

    def _detach_screen(self, pc: PcT) -> None:
        """Stop sending the screen on ``pc``."""
        raise NotImplementedError

    def _set_local_mute(self, pc: PcT, action: act.SetLocalMute) -> None:
        """Stop or resume sending microphone / camera frames."""
        raise NotImplementedError

    def _media_added(self, track: MediaStreamTrack, purpose: StreamPurpose) -> None:
        """A remote track arrived."""

    def _media_removed(self, track: MediaStreamTrack, purpose: StreamPurpose) -> None:
        """A remote track ended or its purpose is no longer announced."""

    def _use_keys(self, action: act.UseMediaKeys | act.AllowUnencryptedMedia) -> None:
        """The call's key agreement finished (or the user accepted unencrypted media)."""

    async def _release(self) -> None:
        """Called by :meth:`close` after the connection is closed."""

    # -- the connection ----------------------------------------------------------------------

    def _ensure_pc(self) -> PcT:
        if self.pc is None:
            pc = self._new_pc()
            pc.on("connectionstatechange", lambda: self._on_connection_state(pc))
            pc.on("pathstatechange", lambda: self._on_path_state(pc))
            pc.on("track", self._on_track)
            self.pc = pc
        return self.pc

    def _on_connection_state(self, pc: PcT) -> None:
        if pc is not self.pc or self.call.state is CallState.ENDED:
            return
        if pc.connectionState == "connected":
            self._feed(MediaConnected())
        elif pc.connectionState == "failed":
            self._feed(MediaFailed())
        elif pc.connectionState == "closed" and self._in_call():
            # Not closed by us (the call has not ended): aiortc gave up on the far side.
            self._feed(MediaClosed())

    def _on_path_state(self, pc: PcT) -> None:
        # The ICE session is up and its consent checks stopped (or resumed) being answered.
        if pc is not self.pc or not self._in_call() or pc.connectionState != "connected":
            return
        self._feed(MediaInterrupted() if pc.path_interrupted else MediaConnected())

    def _in_call(self) -> bool:
        return self.call.state in (
            CallState.CONNECTING,
            CallState.CONNECTED,
            CallState.RECONNECTING,
        )

    def _on_track(self, track: MediaStreamTrack) -> None:
        self.remote_tracks[track.id] = track
        purpose = self._purpose_of(track)
        self.remote_purposes[track.id] = purpose
        self._media_added(track, purpose)
        track.on("ended", lambda: self._on_track_ended(track))

    def _reclassify_remote_tracks(self) -> None:
        """After a remote description: aiortc announces a receiver's track only once, but a
        later description may give its m-line another stream (the far side sends its screen
        on a transceiver first used otherwise, or shares again after it stopped)."""
        if self.pc is None:
            return
        sending = self._remote_sending_mids()
        for transceiver in self.pc.getTransceivers():
            track = transceiver.receiver.track
            if track is None or transceiver.mid not in sending or track.readyState != "live":
                continue
            purpose = self._purpose_of(track)
            old = self.remote_purposes.get(track.id)
            if old is purpose or (old is None and purpose is StreamPurpose.USERMEDIA):
                continue
            if old is not None:
                self._media_removed(track, old)
            self.remote_tracks[track.id] = track
            self.remote_purposes[track.id] = purpose
            self._media_added(track, purpose)

    def _remote_sending_mids(self) -> set[str]:
        return {
            media.rtp.muxId
            for media in ParsedSdp.parse(self._remote_sdp).media
            if media.direction in ("sendrecv", "sendonly")
        }

    def remote_mute_change(self) -> tuple[bool, bool] | None:
        """The far side's (microphone, camera) mute state if it changed since last asked."""
        mute = self.remote_mute_state()
        if mute == self.reported_remote_mute:
            return None
        self.reported_remote_mute = mute
        return mute

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
            self._media_removed(track, purpose)

    def _purpose_of(self, track: MediaStreamTrack) -> StreamPurpose:
        # By the m-line (mid) that carries the track: its stream id is the one the far side
        # sends on it now (the track's own id stays what the m-line first announced).
        # aiortc announces tracks while it applies a description, before it stores it.
        if not self._remote_sdp or self.pc is None:
            return StreamPurpose.USERMEDIA
        mid = next((t.mid for t in self.pc.getTransceivers() if t.receiver.track is track), None)
        for media in ParsedSdp.parse(self._remote_sdp).media:
            if mid is not None and media.rtp.muxId == mid and media.msid:
                metadata = self.call.remote_streams.get(media.msid.split()[0])
                if metadata is not None and metadata.purpose == StreamPurpose.SCREENSHARE.value:
                    return StreamPurpose.SCREENSHARE
        return StreamPurpose.USERMEDIA

    # -- local media -------------------------------------------------------------------------

    def _add_local(self, role: str, pc: PcT, answering: bool = False) -> None:
        if role in self._senders:
            return
        sender = self._attach(role, pc, answering)
        if sender is None:
            return  # an answer cannot add media the offer lacks: our next offer will
        self._senders[role] = sender
        sender._stream_id = self._usermedia_stream

    def _prepare_tracks(
        self, pc: PcT, video: bool, screenshare: bool, answering: bool = False
    ) -> None:
        self._add_local("microphone", pc, answering)
        if video:
            self._add_local("camera", pc, answering)
        if screenshare and self._screen_transceiver is None:
            sender = self._attach_screen(pc)
            sender._stream_id = self._screen_stream
            self._screen_transceiver = next(t for t in pc.getTransceivers() if t.sender is sender)
        elif not screenshare and self._screen_transceiver is not None:
            self._detach_screen(pc)
            self._screen_transceiver = None
            screen = self._local.pop("screen", None)
            if screen is not None:
                screen.stop()

    def _forget_senders(self, transceivers: Sequence[RTCRtpTransceiver]) -> None:
        """Forget the senders a rollback removed (stopping the tracks this call owns); the next
        offer adds fresh ones."""
        removed = {id(t.sender) for t in transceivers}
        for role, sender in list(self._senders.items()):
            if id(sender) in removed:
                del self._senders[role]
                track = self._local.pop(role, None)
                if track is not None:
                    track.stop()
        if any(t is self._screen_transceiver for t in transceivers):
            self._screen_transceiver = None
            screen = self._local.pop("screen", None)
            if screen is not None:
                screen.stop()

    def _apply_hold(self, pc: PcT, on_hold: bool) -> None:
        for transceiver in pc.getTransceivers():
            if transceiver is self._screen_transceiver or transceiver.stopped:
                continue
            # W3C hold: stop receiving; keep sending so the far side can play hold media.
            transceiver.direction = "sendonly" if on_hold else "sendrecv"
        self._hold_local_media(pc, on_hold)

    def _hold_local_media(self, pc: PcT, on_hold: bool) -> None:
        """While on hold, what we capture must not reach the held party (the user may be
        talking to someone else: call waiting's "hold and answer")."""

    def _streams(self) -> dict[str, StreamPurpose]:
        streams = {self._usermedia_stream: StreamPurpose.USERMEDIA}
        if self._screen_transceiver is not None:
            streams[self._screen_stream] = StreamPurpose.SCREENSHARE
        return streams

    # -- actions -----------------------------------------------------------------------------

    async def perform(self, action: act.Action) -> None:
        """Carry out one media action of the call engine."""
        try:
            await self._perform(action)
        except Exception as error:
            if isinstance(action, act.ClosePeerConnection):
                logger.warning("closing call %s failed: %s", self.call_id, type(error).__name__)
                return
            # The error's type only: aiortc's messages may quote the SDP (ICE credentials).
            logger.warning(
                "call %s: %s failed: %s", self.call_id, type(action).__name__, type(error).__name__
            )
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
            self._reclassify_remote_tracks()
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
            self._reclassify_remote_tracks()
        elif isinstance(action, act.AddRemoteCandidates):
            await self._add_candidates(action.candidates)
        elif isinstance(action, (act.UseMediaKeys, act.AllowUnencryptedMedia)):
            self._use_keys(action)
        elif isinstance(action, act.SetLocalMute):
            if self.pc is not None:
                self._set_local_mute(self.pc, action)
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
        """Release the media (the call engine does this when the call ends)."""
        for track in self._local.values():
            track.stop()
        self._local.clear()
        if self.pc is not None:
            await self.pc.close()
        await self._release()

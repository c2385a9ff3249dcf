"""One 1:1 call as the application sees it: commands in; its media, keys and tracks driven by
the call's actions (:class:`~sealcall.session.call_media.CallMedia`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiortc import RTCRtpSender
from aiortc.mediastreams import MediaStreamTrack

from sealcall.calls import (
    AnswerCall,
    Call,
    HangUp,
    RejectCall,
    SetHold,
    SetMuted,
    SetScreenShare,
    UpgradeToVideo,
)
from sealcall.calls import actions as act
from sealcall.calls.inputs import LocalInput
from sealcall.calls.relay_only import RELAY_UNAVAILABLE, RelayUnavailableError
from sealcall.media import EncryptedPeerConnection, MediaKeys
from sealcall.signaling import HangupReason, StreamPurpose

from .call_media import CallMedia

if TYPE_CHECKING:
    from .voip import VoIP


class CallSession(CallMedia[EncryptedPeerConnection]):
    """One call as the application sees it: commands in, tracks and callbacks out.

    Commands return once the call engine has taken them (they raise
    :class:`~sealcall.calls.IllegalTransitionError` when the state does not allow them).
    """

    def __init__(self, voip: VoIP, call: Call, room_id: str) -> None:
        super().__init__(call)
        self.voip = voip
        self.room_id = room_id
        self.keys = MediaKeys()
        self._user_mute = (False, False)  # (microphone, camera) as the user set them
        self._held = False

    def __repr__(self) -> str:
        return f"CallSession({self.call!r})"

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
        A relay-only call with no TURN server offered is declined (``ice_failed``) and
        :class:`~sealcall.calls.RelayUnavailableError` is raised: it would have gone direct.
        """
        await self.voip.refresh_ice_servers()
        if not self.voip.relay_available():
            await self.voip.command(self.call_id, HangUp(reason=HangupReason.ICE_FAILED))
            raise RelayUnavailableError(RELAY_UNAVAILABLE)
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

    # -- the media hooks -----------------------------------------------------------------

    def _feed(self, command: LocalInput) -> None:
        self.voip.feed(self.call_id, command)

    def _new_pc(self) -> EncryptedPeerConnection:
        return EncryptedPeerConnection(
            self.keys,
            ice_servers=self.voip.ice_servers,
            host_addresses=self.voip.host_addresses,
            relay_only=self.voip.manager.policy.relay_only,
        )

    def _attach(
        self, role: str, pc: EncryptedPeerConnection, answering: bool
    ) -> RTCRtpSender | None:
        factory = {"microphone": self.voip.media.microphone, "camera": self.voip.media.camera}[role]
        track = factory()
        sender = pc.add_usermedia_track(track, new_only=answering)
        if sender is None:
            track.stop()
            return None
        self._local[role] = track
        return sender

    def _attach_screen(self, pc: EncryptedPeerConnection) -> RTCRtpSender:
        track = self.voip.media.screen()
        self._local["screen"] = track
        return pc.add_screen_share(track)

    def _detach_screen(self, pc: EncryptedPeerConnection) -> None:
        pc.remove_screen_share()

    def _set_local_mute(self, pc: EncryptedPeerConnection, action: act.SetLocalMute) -> None:
        self._user_mute = (action.audio_muted, action.video_muted)
        self._pause_senders(pc)

    def _hold_local_media(self, pc: EncryptedPeerConnection, on_hold: bool) -> None:
        self._held = on_hold
        self._pause_senders(pc)

    def _pause_senders(self, pc: EncryptedPeerConnection) -> None:
        """Nothing we capture goes out while muted or on hold (the user's own mute outlives
        the hold)."""
        audio_muted, video_muted = self._user_mute
        pc.set_microphone_muted(audio_muted or self._held)
        pc.set_camera_enabled(not (video_muted or self._held))
        for sender in pc.senders_for("screenshare"):
            pc.sender_tap(sender).set_paused(self._held)

    def _media_added(self, track: MediaStreamTrack, purpose: StreamPurpose) -> None:
        self.voip.emit("remote_media_added", self, track, purpose)

    def _media_removed(self, track: MediaStreamTrack, purpose: StreamPurpose) -> None:
        self.voip.emit("remote_media_removed", self, track, purpose)

    def _use_keys(self, action: act.UseMediaKeys | act.AllowUnencryptedMedia) -> None:
        if isinstance(action, act.AllowUnencryptedMedia):
            self.keys.allow_unencrypted()
            return
        self.keys.use_suite(action.suite)
        self.keys.set_send_key(0, action.keys.send)
        self.keys.add_receive_key(0, action.keys.receive)

    async def _release(self) -> None:
        self.keys.forget()

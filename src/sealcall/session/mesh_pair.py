"""One pair of a group call's mesh: the 1:1 call's live media with one member device.

A :class:`MeshPairSession` is :class:`~sealcall.session.call_media.CallMedia` on a
:class:`~sealcall.media.GroupPeerConnection`: its senders carry the group call's shared encoders'
frames (encoded and encrypted once for every pair), its receivers decrypt with the member
device's group keys. Mute and camera state live on the shared encoders, so a pair has none of
its own; the pair's call still tells its peer (MSC3291 metadata).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiortc import RTCRtpSender
from aiortc.mediastreams import MediaStreamTrack

from sealcall.calls import Call
from sealcall.calls import actions as act
from sealcall.calls.inputs import LocalInput
from sealcall.group import MemberDevice
from sealcall.media import GroupPeerConnection, ReceiverTap
from sealcall.signaling import StreamPurpose

from .call_media import CallMedia

if TYPE_CHECKING:
    from .group_call import GroupCallSession


class MeshPairSession(CallMedia[GroupPeerConnection]):
    """Our 1:1 call with one member device of a group call, and its connection."""

    def __init__(self, group: GroupCallSession, peer: MemberDevice, call: Call) -> None:
        super().__init__(call)
        self.group = group
        self.peer = peer

    def __repr__(self) -> str:
        return f"MeshPairSession({self.peer.user_id} {self.peer.device_id}, {self.call!r})"

    def receiver_taps(self) -> list[ReceiverTap]:
        """What this pair's receivers decrypted and dropped."""
        return [] if self.pc is None else self.pc.receiver_taps()

    def _feed(self, command: LocalInput) -> None:
        self.group.feed(self.peer, self.call_id, command)

    def _new_pc(self) -> GroupPeerConnection:
        return GroupPeerConnection(
            self.group.opener(self.peer),
            ice_servers=self.group.ice_servers,
            host_addresses=self.group.host_addresses,
            relay_only=self.group.relay_only,
        )

    def _attach(self, role: str, pc: GroupPeerConnection, answering: bool) -> RTCRtpSender | None:
        encoder = self.group.encoders.get(role)
        return None if encoder is None else pc.add_shared(encoder, answering=answering)

    def _attach_screen(self, pc: GroupPeerConnection) -> RTCRtpSender:
        encoder = self.group.screen_encoder(True)
        assert encoder is not None
        sender = pc.add_shared(encoder)
        assert sender is not None
        return sender

    def _detach_screen(self, pc: GroupPeerConnection) -> None:
        encoder = self.group.screen_encoder(False)
        if encoder is not None:
            pc.remove_shared(encoder)

    def _set_local_mute(self, pc: GroupPeerConnection, action: act.SetLocalMute) -> None:
        pass  # the shared encoders pause once for every pair (GroupCallSession)

    def _media_added(self, track: MediaStreamTrack, purpose: StreamPurpose) -> None:
        self.group.remote_track_added(self, track, purpose)

    def _media_removed(self, track: MediaStreamTrack, purpose: StreamPurpose) -> None:
        self.group.remote_track_removed(self, track, purpose)

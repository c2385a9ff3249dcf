"""Renegotiation during a call (MSC2746 ``m.call.negotiate``): hold, video, screen share and ICE
restarts, one at a time, with perfect-negotiation glare handling. Part of
:class:`~sealcall.calls.call.Call`, whose transition table routes to these handlers."""

from collections import deque
from typing import Any

from sealcall.signaling import CallEvent, CallNegotiate, SessionDescription, StreamMetadata

from . import actions as act
from .inputs import LocalDescriptionReady, SetHold, SetScreenShare, UpgradeToVideo
from .policy import CallPolicy
from .states import Direction


def _is_hold_sdp(sdp: str) -> bool:
    """True if every media section of ``sdp`` stops receiving (its sender put us on hold)."""
    directions = [
        line.strip()[2:]
        for line in sdp.splitlines()
        if line.strip() in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive")
    ]
    return bool(directions) and all(d in ("sendonly", "inactive") for d in directions)


class Renegotiation:
    """The in-call offer/answer logic of a call; :class:`Call` supplies the state it uses."""

    policy: CallPolicy
    direction: Direction
    opponent_party_id: str | None
    video: bool
    encrypted: bool
    screensharing: bool
    on_hold: bool
    remote_on_hold: bool
    _now: float
    _local_streams: dict[str, Any]
    # Descriptions asked of the media layer during the call, in order: "offer", "answer",
    # or "dropped" (an offer given up in glare); and when the far side's answer is due.
    _expected: deque[str]
    _answer_deadline: float | None
    _renegotiate_again: bool
    _restart_again: bool

    def _emit(self, action: act.Action) -> None:
        raise NotImplementedError

    def _send(self, cls: type[CallEvent], **fields: Any) -> None:
        raise NotImplementedError

    def _metadata(self) -> dict[str, StreamMetadata]:
        raise NotImplementedError

    def _update_remote_streams(self, metadata: dict[str, StreamMetadata] | None) -> None:
        raise NotImplementedError

    def _refuse_unprotectable_offer(self, sdp: str) -> bool:
        raise NotImplementedError

    def _negotiating(self) -> bool:
        return bool(self._expected) or self._answer_deadline is not None

    def _offer(self, *, ice_restart: bool = False) -> None:
        if self._negotiating():
            # One negotiation at a time: this one runs when the current one is over.
            self._renegotiate_again = True
            self._restart_again = self._restart_again or ice_restart
            return
        self._expected.append("offer")
        self._emit(
            act.CreateOffer(
                video=self.video,
                screenshare=self.screensharing,
                on_hold=self.on_hold,
                ice_restart=ice_restart,
            )
        )

    def _set_hold(self, cmd: SetHold) -> None:
        if cmd.on_hold != self.on_hold:
            self.on_hold = cmd.on_hold
            self._offer()

    def _upgrade_to_video(self, _: UpgradeToVideo) -> None:
        if not self.video:
            self.video = True
            self._offer()

    def _set_screenshare(self, cmd: SetScreenShare) -> None:
        if cmd.on != self.screensharing:
            self.screensharing = cmd.on
            self._offer()

    def _send_negotiate(self, ready: LocalDescriptionReady) -> None:
        if not self._expected:
            return
        kind = self._expected.popleft()
        if kind == "dropped":
            self._next_negotiation()  # an offer we gave up for the far side's (glare)
            return
        self._local_streams = dict(ready.streams)
        self._send(
            CallNegotiate,
            lifetime=self.policy.invite_lifetime_ms,
            description=SessionDescription(type=kind, sdp=ready.sdp),
            sdp_stream_metadata=self._metadata(),
        )
        if kind == "offer":
            self._answer_deadline = self._now + self.policy.invite_lifetime_ms / 1000
        else:
            self._next_negotiation()

    def _next_negotiation(self) -> None:
        if self._renegotiate_again and not self._negotiating():
            self._renegotiate_again = False
            restart, self._restart_again = self._restart_again, False
            self._offer(ice_restart=restart)

    def _receive_negotiate(self, negotiate: CallNegotiate) -> None:
        if negotiate.party_id != self.opponent_party_id:
            return
        description = negotiate.description
        if (
            description.type == "offer"
            and self.encrypted
            and self._refuse_unprotectable_offer(description.sdp)
        ):
            return  # media we could only send in the clear: the call ends
        self._update_remote_streams(negotiate.sdp_stream_metadata)
        if description.type == "answer":
            if self._answer_deadline is not None:
                self._answer_deadline = None
                self._emit(act.ApplyAnswer(description.sdp))
                self._next_negotiation()
            return
        if "offer" in self._expected or self._answer_deadline is not None:
            if self.direction is Direction.OUTGOING:
                return  # offer glare: the caller is the impolite party and keeps its own offer
            # The polite callee gives its offer up, answers, then offers again.
            self._expected = deque("dropped" if k == "offer" else k for k in self._expected)
            self._answer_deadline = None
            self._renegotiate_again = True
            self._emit(act.RollbackLocalOffer())
        remote_hold = _is_hold_sdp(description.sdp)
        if remote_hold != self.remote_on_hold:
            self.remote_on_hold = remote_hold
            self._emit(act.RemoteHoldChanged(remote_hold))
        self._expected.append("answer")
        self._emit(act.CreateAnswer(description.sdp, video=self.video, on_hold=self.on_hold))

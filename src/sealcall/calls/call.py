"""The state machine of one 1:1 call (MSC2746 v1), without I/O.

Feed it user commands, media results and remote call events with :meth:`Call.handle`, and timer
expiry with :meth:`Call.handle_timer`; it returns the actions to carry out. ``TRANSITIONS`` below
is the whole protocol: a (state, input) pair that is not in it is refused. A local command in the
wrong state raises :class:`IllegalTransitionError`; a remote event in the wrong state is dropped
(remote peers reorder, duplicate and replay events, and none of that may disturb the call).
"""

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from sealcall.e2ee import KeyAgreementError, KeyShare, Role
from sealcall.signaling import (
    E2EE_VERSION,
    CallAnswer,
    CallAssertedIdentity,
    CallCandidates,
    CallEvent,
    CallHangup,
    CallInvite,
    CallNegotiate,
    CallReject,
    CallSdpStreamMetadataChanged,
    CallSelectAnswer,
    E2eeParams,
    HangupReason,
    SessionDescription,
    StreamMetadata,
    StreamPurpose,
)

from . import actions as act
from .history import (
    HistoryItem,
    Outcome,
    counts_as_answered,
    hangup_reason,
    reject_end,
    unanswered_outcome,
)
from .incoming import ANSWERED_ELSEWHERE as ANSWERED_ELSEWHERE
from .incoming import UNANSWERED, IncomingSide
from .inputs import (
    AnswerCall,
    HangUp,
    LocalCandidatesReady,
    LocalDescriptionReady,
    LocalMediaFailed,
    MediaClosed,
    MediaConnected,
    MediaFailed,
    MediaInterrupted,
    PlaceCall,
    RejectCall,
    SetHold,
    SetMuted,
    SetScreenShare,
    UpgradeToVideo,
)
from .policy import CallPolicy
from .relay_only import relay_only_input
from .renegotiation import Renegotiation
from .states import CallState, Direction, IllegalTransitionError

logger = logging.getLogger(__name__)

S = CallState
IN_CALL = (S.CONNECTING, S.CONNECTED, S.RECONNECTING)
ACTIVE = (S.CREATE_OFFER, S.INVITE_SENT, S.RINGING, S.CREATE_ANSWER, *IN_CALL)
# Media that flowed: what a connected call can do, it can do while its path is down too
# (renegotiation goes through the homeserver, not the media path).
MEDIA_UP = (S.CONNECTED, S.RECONNECTING)
CONNECTION_REPORTS = (MediaConnected, MediaInterrupted, MediaFailed, MediaClosed)

# An end reason that is not a hangup reason of the spec (with REJECTED, ENCRYPTION_REQUIRED,
# ANSWERED_ELSEWHERE).
REPLACED = "replaced"

_TABLE: dict[tuple[CallState, type], str] = {
    (S.FLEDGLING, PlaceCall): "_place",
    (S.FLEDGLING, CallInvite): "_receive_invite",
    (S.CREATE_OFFER, LocalDescriptionReady): "_send_invite",
    (S.INVITE_SENT, CallAnswer): "_receive_answer",
    (S.INVITE_SENT, CallReject): "_receive_reject",
    (S.RINGING, AnswerCall): "_answer",
    (S.RINGING, RejectCall): "_reject",
    (S.RINGING, CallSelectAnswer): "_selected_while_ringing",
    (S.RINGING, CallAnswer): "_answered_elsewhere",
    (S.RINGING, CallReject): "_rejected_elsewhere",
    (S.CREATE_ANSWER, LocalDescriptionReady): "_send_answer",
}
for _state in MEDIA_UP:
    _TABLE[(_state, SetHold)] = "_set_hold"
    _TABLE[(_state, UpgradeToVideo)] = "_upgrade_to_video"
    _TABLE[(_state, SetScreenShare)] = "_set_screenshare"
for _state in IN_CALL:
    _TABLE[(_state, MediaConnected)] = "_media_connected"
    _TABLE[(_state, MediaInterrupted)] = "_media_interrupted"
    _TABLE[(_state, CallSelectAnswer)] = "_check_selected"
    _TABLE[(_state, MediaFailed)] = "_media_failed"
    _TABLE[(_state, MediaClosed)] = "_media_closed"
    _TABLE[(_state, CallNegotiate)] = "_receive_negotiate"
    _TABLE[(_state, LocalDescriptionReady)] = "_send_negotiate"
for _state in ACTIVE:
    _TABLE[(_state, HangUp)] = "_hang_up"
    _TABLE[(_state, CallHangup)] = "_receive_hangup"
    _TABLE[(_state, SetMuted)] = "_set_muted"
    _TABLE[(_state, CallCandidates)] = "_receive_candidates"
    _TABLE[(_state, LocalCandidatesReady)] = "_send_candidates"
    _TABLE[(_state, CallSdpStreamMetadataChanged)] = "_receive_metadata"
    _TABLE[(_state, CallAssertedIdentity)] = "_receive_identity"
    _TABLE[(_state, LocalMediaFailed)] = "_local_media_failed"
TRANSITIONS: dict[tuple[CallState, type], str] = dict(_TABLE)


# IncomingSide first: its _refuse_unprotectable_offer is the one Renegotiation declares.
class Call(IncomingSide, Renegotiation):
    """One 1:1 call as seen from this device."""

    def __init__(
        self,
        *,
        call_id: str,
        party_id: str,
        peer: str,
        direction: Direction,
        now: float,
        policy: CallPolicy | None = None,
        invitee: str | None = None,
    ) -> None:
        self.call_id = call_id
        self.party_id = party_id
        self.peer = peer
        self.direction = direction
        self.policy = policy or CallPolicy()
        self.invitee = invitee
        self.state = S.FLEDGLING
        self.started_at = now
        self.connected_at: float | None = None
        self.ended_at: float | None = None
        self.end_reason: str | None = None
        self.opponent_party_id: str | None = None
        self._selected = False  # an answer was selected (ours, for an incoming call)
        self.video = False
        self.encrypted = True
        self.audio_muted = False
        self.video_muted = False
        self.on_hold = False
        self.remote_on_hold = False
        self.screensharing = False
        self.remote_streams: dict[str, StreamMetadata] = {}
        self.remote_identity: str | None = None
        self.history: HistoryItem | None = None
        self._share: KeyShare | None = KeyShare()
        self._invite: CallInvite | None = None
        self._expires_at: float | None = None
        self._local_streams: dict[str, StreamPurpose] = {}
        self._expected: deque[str] = deque()
        self._answer_deadline: float | None = None
        self._renegotiate_again = False
        self._restart_again = False
        self._restarts = 0
        self._restart_deadline: float | None = None
        self._reconnect_deadline: float | None = None
        self._early_candidates: dict[str, list[Any]] = {}
        self._candidates_taken = 0
        self.dropped_candidates = 0
        self._invite_age_ms = 0
        self._now = now
        self._actions: list[act.Action] = []

    def __repr__(self) -> str:
        state = f"{self.direction.value}, {self.state.value}"
        return f"Call({self.call_id!r}, {state}, peer={self.peer!r})"

    # -- entry points ------------------------------------------------------------------------

    def handle(self, event: object, now: float) -> list[act.Action]:
        """Process one input; return the actions it causes."""
        name = TRANSITIONS.get((self.state, type(event)))
        if name is None:
            if self.state is S.ENDED and isinstance(event, CONNECTION_REPORTS):
                return []  # the connection's state changed while the call was ending: stale
            if isinstance(event, CallEvent):
                logger.debug(
                    "call %s: %s ignored in state %s", self.call_id, event.TYPE, self.state.value
                )
                return []
            raise IllegalTransitionError(self.state, event)
        self._now = now
        if self.policy.relay_only:
            event = relay_only_input(event)  # the one place our candidates pass to be sent
        handler: Callable[[Any], None] = getattr(self, name)
        handler(event)
        out, self._actions = self._actions, []
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must next run, or None."""
        times = [
            t
            for t in (
                self._expires_at,
                self._restart_deadline,
                self._reconnect_deadline,
                self._answer_deadline,
            )
            if t is not None
        ]
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[act.Action]:
        """Run the timers that are due at ``now``."""
        self._now = now
        if self._expires_at is not None and now >= self._expires_at:
            self._expires_at = None
            if self.state is S.INVITE_SENT:
                self._send(CallHangup, reason=HangupReason.INVITE_TIMEOUT.value)
                self._end(HangupReason.INVITE_TIMEOUT.value, False, Outcome.MISSED)
            elif self.state is S.RINGING:
                self._end(HangupReason.INVITE_TIMEOUT.value, True, Outcome.MISSED)
        if self._answer_deadline is not None and now >= self._answer_deadline:
            # The far side never answered our offer: give up on it and go on.
            logger.info("call %s: renegotiation not answered in time", self.call_id)
            self._answer_deadline = None
            self._next_negotiation()
        if self._restart_deadline is not None and now >= self._restart_deadline:
            self._restart_deadline = None
            if self.state in IN_CALL:
                self._give_up_on_media()
        if self._reconnect_deadline is not None and now >= self._reconnect_deadline:
            self._reconnect_deadline = None
            if self.state is S.RECONNECTING:
                logger.info("call %s: media did not come back in time", self.call_id)
                self._give_up_on_media()
        out, self._actions = self._actions, []
        return out

    # -- helpers ------------------------------------------------------------------------------

    def _emit(self, action: act.Action) -> None:
        self._actions.append(action)

    def _send(self, cls: type[CallEvent], **fields: Any) -> None:
        self._emit(act.SendEvent(cls(call_id=self.call_id, party_id=self.party_id, **fields)))

    def _set_state(self, new: CallState) -> None:
        old, self.state = self.state, new
        self._emit(act.StateChanged(old, new))

    def _metadata(self) -> dict[str, StreamMetadata]:
        out = {}
        for sid, purpose in self._local_streams.items():
            usermedia = purpose is StreamPurpose.USERMEDIA
            out[sid] = StreamMetadata(
                purpose=purpose.value,
                audio_muted=usermedia and self.audio_muted,
                video_muted=usermedia and (self.video_muted or not self.video),
            )
        return out

    @property
    def reconnect_deadline(self) -> float | None:
        """When this call, ``reconnecting``, gives up on its media path (None: not reconnecting)."""
        return self._reconnect_deadline if self.state is S.RECONNECTING else None

    @property
    def public_key(self) -> bytes | None:
        """Our ephemeral X25519 public key for this call (None once the call ended)."""
        return None if self._share is None else self._share.public_bytes

    def _key_share(self) -> KeyShare:
        if self._share is None:
            raise KeyAgreementError("the call ended: its key share is gone")
        return self._share

    def _e2ee_params(self, suites: tuple[int, ...]) -> E2eeParams:
        return E2eeParams(
            version=E2EE_VERSION, suites=suites, public_key=self._key_share().public_bytes
        )

    def _end(
        self, reason: str, by_remote: bool, outcome: Outcome, *, elsewhere: bool = False
    ) -> None:
        if self.state is S.ENDED:
            return
        self._expires_at = self._restart_deadline = self._answer_deadline = None
        self._reconnect_deadline = None
        self._share = None  # the call's private key dies with it
        self._invite = None  # an ended call keeps no SDP or candidates: it stays small
        self._early_candidates.clear()
        self.end_reason = reason
        self.ended_at = self._now
        self._emit(act.ClosePeerConnection())
        self._set_state(S.ENDED)
        self._emit(act.CallEnded(reason, by_remote))
        if counts_as_answered(self._selected or self.connected_at is not None, reason):
            outcome = Outcome.ANSWERED
        if reason == REPLACED:
            return  # glare: this invite merged into the surviving call, which has the history
        self.history = HistoryItem(
            call_id=self.call_id,
            peer=self.peer,
            direction=self.direction,
            video=self.video,
            outcome=outcome,
            started_at=self.started_at,
            duration=0.0 if self.connected_at is None else max(0.0, self._now - self.connected_at),
            end_reason=reason,
            encrypted=self.encrypted,
            answered_elsewhere=elsewhere,
        )
        self._emit(act.HistoryItemReady(self.history))

    # -- outgoing ----------------------------------------------------------------------------

    def _place(self, cmd: PlaceCall) -> None:
        self.video = cmd.video
        self._set_state(S.CREATE_OFFER)
        self._emit(act.CreateOffer(video=cmd.video))

    def _send_invite(self, ready: LocalDescriptionReady) -> None:
        self._local_streams = dict(ready.streams)
        lifetime = self.policy.invite_lifetime_ms
        self._invite = CallInvite(
            call_id=self.call_id,
            party_id=self.party_id,
            lifetime=lifetime,
            offer=SessionDescription(type="offer", sdp=ready.sdp),
            invitee=self.invitee,
            sdp_stream_metadata=self._metadata(),
            e2ee=self._e2ee_params(self.policy.suites),
        )
        self._emit(act.SendEvent(self._invite))
        self._expires_at = self._now + lifetime / 1000
        self._set_state(S.INVITE_SENT)

    def _receive_answer(self, answer: CallAnswer) -> None:
        if answer.e2ee is not None:
            suite = answer.e2ee.suites[0]
            if answer.e2ee.version != E2EE_VERSION or suite not in self.policy.suites:
                self._refuse_unencrypted(f"answer chose unsupported encryption {suite}")
                return
            try:
                keys = self._key_share().derive(answer.e2ee.public_key, self.call_id, Role.CALLER)
            except KeyAgreementError as error:
                self._refuse_unencrypted(str(error))
                return
            self._emit(act.UseMediaKeys(keys, suite))
        elif self.policy.allow_unencrypted:
            self.encrypted = False
            self._emit(act.AllowUnencryptedMedia())
        else:
            self._refuse_unencrypted("the answering device did not offer media encryption")
            return
        self._expires_at = None
        self.opponent_party_id = answer.party_id
        self._send(CallSelectAnswer, selected_party_id=answer.party_id)
        self._selected = True
        self._update_remote_streams(answer.sdp_stream_metadata)
        self._set_state(S.CONNECTING)
        self._emit(act.ApplyAnswer(answer.answer.sdp))
        self._flush_candidates(answer.party_id)

    def _receive_reject(self, reject: CallReject) -> None:
        self._send(CallSelectAnswer, selected_party_id=reject.party_id)
        reason, outcome = reject_end(reject)
        self._end(reason, True, outcome)

    # -- in call ------------------------------------------------------------------------------

    def _media_connected(self, _: MediaConnected) -> None:
        self._restart_deadline = self._reconnect_deadline = None
        self._restarts = 0
        if self.state is S.CONNECTING:
            self.connected_at = self._now
        if self.state is not S.CONNECTED:
            self._set_state(S.CONNECTED)  # first connected, or the path answers again

    def _media_interrupted(self, _: MediaInterrupted) -> None:
        # Before the first connection there is nothing to reconnect: ICE is still trying.
        if self.state is S.CONNECTED:
            self._reconnecting()

    def _reconnecting(self) -> None:
        """Media flowed and its path stopped: wait for it until the reconnect deadline."""
        self._set_state(S.RECONNECTING)
        self._reconnect_deadline = self._now + self.policy.reconnect_timeout

    def _media_failed(self, _: MediaFailed) -> None:
        if self.state in MEDIA_UP:
            # Media had flowed: the call reconnects until its deadline, whatever the ICE
            # restarts do; the caller restarts ICE (a browser can; aiortc's restart is a no-op
            # re-offer, its connection recovers by itself or not at all).
            if self.state is S.CONNECTED:
                self._reconnecting()
            if self.direction is Direction.OUTGOING and (
                self._restarts < self.policy.ice_restart_attempts
            ):
                self._restarts += 1
                self._offer(ice_restart=True)
            return
        if self.direction is Direction.INCOMING:
            # The caller restarts ICE; give it the time of all its attempts.
            attempts = max(1, self.policy.ice_restart_attempts)
            if self._restart_deadline is None:
                self._restart_deadline = self._now + attempts * self.policy.ice_restart_timeout
            return
        if self._restarts >= self.policy.ice_restart_attempts:
            self._give_up_on_media()
            return
        self._restarts += 1
        self._restart_deadline = self._now + self.policy.ice_restart_timeout
        self._offer(ice_restart=True)

    def _media_closed(self, _: MediaClosed) -> None:
        # No ICE restart revives a closed connection. A peer that hangs up closes its media at
        # once and its hang-up follows through the homeserver, so give that one ICE deadline to
        # arrive; then the call ends as it would after failed restarts (hang-up, ice_timeout).
        deadline = self._now + self.policy.ice_restart_timeout
        if self._restart_deadline is None or deadline < self._restart_deadline:
            self._restart_deadline = deadline

    def _give_up_on_media(self) -> None:
        reason = (
            HangupReason.ICE_TIMEOUT if self.connected_at is not None else HangupReason.ICE_FAILED
        )
        self._send(CallHangup, reason=reason.value)
        self._end(reason.value, False, Outcome.FAILED)

    # -- any active state ---------------------------------------------------------------------

    def _hang_up(self, cmd: HangUp) -> None:
        if self.state is S.CREATE_OFFER:
            self._end(cmd.reason.value, False, Outcome.CANCELLED)
            return
        if self.state in UNANSWERED:
            # Before answering, declining is a reject (it stops the other devices too); a busy
            # callee says so in the reject's reason, as the Famedly SDK does.
            self._decline(cmd.reason)
            return
        self._send(CallHangup, reason=cmd.reason.value)
        outgoing = self.direction is Direction.OUTGOING
        outcome = unanswered_outcome(cmd.reason.value, by_caller=outgoing, direction=self.direction)
        self._end(cmd.reason.value, False, outcome)

    def _receive_hangup(self, hangup: CallHangup) -> None:
        if self.opponent_party_id is not None and hangup.party_id != self.opponent_party_id:
            return
        reason = hangup_reason(hangup)
        by_caller = self.direction is Direction.INCOMING
        self._end(
            reason, True, unanswered_outcome(reason, by_caller=by_caller, direction=self.direction)
        )

    def _local_media_failed(self, failure: LocalMediaFailed) -> None:
        logger.warning("call %s: local media failed: %s", self.call_id, failure.detail)
        if self.state in UNANSWERED:
            self._decline(HangupReason.USER_MEDIA_FAILED)
            return
        if self.state is not S.CREATE_OFFER:
            self._send(CallHangup, reason=HangupReason.USER_MEDIA_FAILED.value)
        self._end(HangupReason.USER_MEDIA_FAILED.value, False, Outcome.FAILED)

    def _set_muted(self, cmd: SetMuted) -> None:
        if cmd.audio is not None:
            self.audio_muted = cmd.audio
        if cmd.video is not None:
            self.video_muted = cmd.video
        self._emit(act.SetLocalMute(self.audio_muted, self.video_muted))
        if self._local_streams and self.state not in (S.CREATE_OFFER, S.RINGING, S.CREATE_ANSWER):
            self._send(CallSdpStreamMetadataChanged, sdp_stream_metadata=self._metadata())

    def _update_remote_streams(self, metadata: dict[str, StreamMetadata] | None) -> None:
        if metadata is not None and metadata != self.remote_streams:
            self.remote_streams = dict(metadata)
            self._emit(act.RemoteStreamsChanged(dict(metadata)))

    def _receive_metadata(self, changed: CallSdpStreamMetadataChanged) -> None:
        if changed.party_id == self.opponent_party_id:
            self._update_remote_streams(changed.sdp_stream_metadata)

    def _receive_identity(self, identity: CallAssertedIdentity) -> None:
        if identity.party_id == self.opponent_party_id:
            self.remote_identity = identity.asserted_identity.id

    def _receive_candidates(self, event: CallCandidates) -> None:
        # Not yet answered (or not yet selected): keep them for when the media exists.
        early = self.opponent_party_id is None or self.state in (S.RINGING, S.INVITE_SENT)
        if not early and event.party_id != self.opponent_party_id:
            return
        candidates = self._take_candidates(event.candidates)
        if early:
            self._early_candidates.setdefault(event.party_id, []).extend(candidates)
        elif candidates:
            self._emit(act.AddRemoteCandidates(candidates))

    def _take_candidates(self, candidates: tuple[Any, ...]) -> tuple[Any, ...]:
        """The candidates within the call's budget; the rest are dropped and counted."""
        room = max(0, self.policy.max_remote_candidates - self._candidates_taken)
        taken = candidates[:room]
        if len(taken) < len(candidates):
            if not self.dropped_candidates:  # one line per call, however long the flood
                logger.warning(
                    "call %.32s: over %d remote candidates, dropping the rest",
                    self.call_id,
                    self.policy.max_remote_candidates,
                )
            self.dropped_candidates += len(candidates) - len(taken)
        self._candidates_taken += len(taken)
        return taken

    def _flush_candidates(self, party_id: str) -> None:
        candidates = self._early_candidates.pop(party_id, [])
        self._early_candidates.clear()
        if candidates:
            self._emit(act.AddRemoteCandidates(tuple(candidates)))

    def _send_candidates(self, ready: LocalCandidatesReady) -> None:
        if ready.candidates:
            self._send(CallCandidates, candidates=ready.candidates)

    # -- glare ------------------------------------------------------------------------------------

    def replace(self, now: float, surviving_call_id: str) -> list[act.Action]:
        """End this outgoing call because glare merged it into ``surviving_call_id``."""
        self._now = now
        if self.state is S.INVITE_SENT:
            self._send(
                CallHangup,
                reason=HangupReason.USER_HANGUP.value,
                extra={"org.sealcall.replaced_by": surviving_call_id},
            )
        self._end(REPLACED, False, Outcome.CANCELLED)
        out, self._actions = self._actions, []
        return out

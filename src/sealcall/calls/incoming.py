"""The callee's side of a call: the invite checked before it rings, answering, declining, and
learning whether our answer was the one picked. Also the refusal of a call that cannot be
end-to-end encrypted, which either side may have to make. Part of
:class:`~sealcall.calls.call.Call`, whose transition table routes to these handlers."""

import logging
from typing import Any

from sealcall.e2ee import KeyAgreementError, KeyShare, Role
from sealcall.signaling import (
    E2EE_VERSION,
    CallAnswer,
    CallEvent,
    CallHangup,
    CallInvite,
    CallReject,
    CallSelectAnswer,
    E2eeParams,
    HangupReason,
    SessionDescription,
    StreamMetadata,
)

from . import actions as act
from .history import ENCRYPTION_REQUIRED, REASON_KEY, Outcome, reject_end
from .inputs import AnswerCall, LocalDescriptionReady, RejectCall
from .offer_check import unprotectable_media
from .policy import CallPolicy
from .states import CallState, Direction, UnencryptedCallError

logger = logging.getLogger(__name__)

S = CallState
# An end reason that is not a hangup reason of the spec (with REJECTED, ENCRYPTION_REQUIRED).
ANSWERED_ELSEWHERE = "answered_elsewhere"
# A call not yet answered on the wire: refusing it is an m.call.reject, not a hang-up.
UNANSWERED = (S.RINGING, S.CREATE_ANSWER)


class IncomingSide:
    """Answering and refusing a call; :class:`Call` supplies the state it uses."""

    call_id: str
    party_id: str
    direction: Direction
    policy: CallPolicy
    state: CallState
    opponent_party_id: str | None
    video: bool
    encrypted: bool
    _selected: bool
    _invite: CallInvite | None
    _invite_age_ms: int
    _expires_at: float | None
    _local_streams: dict[str, Any]
    _now: float

    def handle(self, event: object, now: float) -> list[act.Action]:
        raise NotImplementedError

    def _emit(self, action: act.Action) -> None:
        raise NotImplementedError

    def _send(self, cls: type[CallEvent], **fields: Any) -> None:
        raise NotImplementedError

    def _set_state(self, new: CallState) -> None:
        raise NotImplementedError

    def _metadata(self) -> dict[str, StreamMetadata]:
        raise NotImplementedError

    def _update_remote_streams(self, metadata: dict[str, StreamMetadata] | None) -> None:
        raise NotImplementedError

    def _key_share(self) -> KeyShare:
        raise NotImplementedError

    def _e2ee_params(self, suites: tuple[int, ...]) -> E2eeParams:
        raise NotImplementedError

    def _flush_candidates(self, party_id: str) -> None:
        raise NotImplementedError

    def _end(
        self, reason: str, by_remote: bool, outcome: Outcome, *, elsewhere: bool = False
    ) -> None:
        raise NotImplementedError

    def receive_invite(self, invite: CallInvite, now: float, age_ms: int = 0) -> list[act.Action]:
        """Start an incoming call from ``invite``, ``age_ms`` old when it reached us."""
        self._invite_age_ms = age_ms
        return self.handle(invite, now)

    def _receive_invite(self, invite: CallInvite) -> None:
        self._invite = invite
        self.opponent_party_id = invite.party_id
        self.video = invite.has_video
        self._update_remote_streams(invite.sdp_stream_metadata)
        # The caller chooses the lifetime: a huge one must not ring for ever (nor after restarts).
        lifetime = min(invite.lifetime, self.policy.max_invite_lifetime_ms)
        self._expires_at = self._now - self._invite_age_ms / 1000 + lifetime / 1000
        # Every path passes through ringing, so the history and the states read the same way.
        self._set_state(S.RINGING)
        if self._expires_at - self._now < self.policy.min_ring_seconds:
            # Too old to ring: the user could not answer it in time. Nothing is sent.
            self._end(HangupReason.INVITE_TIMEOUT.value, True, Outcome.MISSED)
            return
        if invite.e2ee is None:
            if not (self.policy.allow_unencrypted or self.policy.ask_unencrypted):
                self._refuse_unencrypted("the caller did not offer media encryption")
                return
            self.encrypted = False  # rings; answering it needs the user's opt-in
        elif invite.e2ee.version != E2EE_VERSION:
            self._refuse_unencrypted(f"unknown media encryption version {invite.e2ee.version}")
        elif not set(invite.e2ee.suites) & set(self.policy.suites):
            self._refuse_unencrypted("no SFrame suite in common with the caller")
        else:
            self._check_encryptable(invite)

    def _check_encryptable(self, invite: CallInvite) -> None:
        """Refuse now, before ringing, what answering would only find out later: a call key that
        no key agreement accepts, an offer with media that cannot be encrypted."""
        assert invite.e2ee is not None
        try:
            # The keys are derived again on answering; this only checks the caller's key.
            self._key_share().derive(invite.e2ee.public_key, self.call_id, Role.CALLEE)
        except KeyAgreementError as error:
            self._refuse_unencrypted(f"unusable call key: {error}")
            return
        self._refuse_unprotectable_offer(invite.offer.sdp)

    def _refuse_unprotectable_offer(self, sdp: str) -> bool:
        kinds = unprotectable_media(sdp)
        if kinds:
            self._refuse_unencrypted(f"no codec that can be encrypted for {', '.join(kinds)}")
        return bool(kinds)

    def _answer(self, cmd: AnswerCall) -> None:
        assert self._invite is not None
        if self._invite.e2ee is None and not (
            self.policy.allow_unencrypted or cmd.allow_unencrypted
        ):
            # Never plaintext without an explicit decision: the call keeps ringing.
            raise UnencryptedCallError(
                "this call cannot be end-to-end encrypted: answer with allow_unencrypted=True"
                " to take it with media protected only hop by hop (DTLS-SRTP)"
            )
        if cmd.video is not None:
            self.video = cmd.video
        self._expires_at = None
        e2ee = self._invite.e2ee
        if e2ee is not None:
            try:
                keys = self._key_share().derive(e2ee.public_key, self.call_id, Role.CALLEE)
            except KeyAgreementError as error:
                self._refuse_unencrypted(str(error))
                return
            self._emit(act.UseMediaKeys(keys, self._chosen_suite()))
        else:
            self._emit(act.AllowUnencryptedMedia())
        self._set_state(S.CREATE_ANSWER)
        self._emit(act.CreateAnswer(self._invite.offer.sdp, video=self.video))
        self._flush_candidates(self._invite.party_id)

    def _send_answer(self, ready: LocalDescriptionReady) -> None:
        assert self._invite is not None
        self._local_streams = dict(ready.streams)
        e2ee = None
        if self._invite.e2ee is not None:
            e2ee = self._e2ee_params((self._chosen_suite(),))
        self._emit(
            act.SendEvent(
                CallAnswer(
                    call_id=self.call_id,
                    party_id=self.party_id,
                    answer=SessionDescription(type="answer", sdp=ready.sdp),
                    sdp_stream_metadata=self._metadata(),
                    e2ee=e2ee,
                )
            )
        )
        self._set_state(S.CONNECTING)

    def _chosen_suite(self) -> int:
        """The caller's most preferred suite that our policy allows."""
        assert self._invite is not None
        assert self._invite.e2ee is not None
        return next(s for s in self._invite.e2ee.suites if s in self.policy.suites)

    def _reject(self, cmd: RejectCall) -> None:
        if cmd.encryption_required:
            self._decline(HangupReason.UNKNOWN_ERROR, {REASON_KEY: ENCRYPTION_REQUIRED})
        else:
            self._decline()

    def _selected_while_ringing(self, select: CallSelectAnswer) -> None:
        if select.party_id != self.opponent_party_id:
            return
        self._end(ANSWERED_ELSEWHERE, True, Outcome.ANSWERED, elsewhere=True)

    def _answered_elsewhere(self, answer: CallAnswer) -> None:
        # Another device of ours answered (its party id differs from ours).
        self._end(ANSWERED_ELSEWHERE, True, Outcome.ANSWERED, elsewhere=True)

    def _rejected_elsewhere(self, reject: CallReject) -> None:
        reason, outcome = reject_end(reject)
        self._end(reason, True, outcome)

    def _check_selected(self, select: CallSelectAnswer) -> None:
        if select.party_id != self.opponent_party_id or self.direction is Direction.OUTGOING:
            return
        if select.selected_party_id != self.party_id:
            self._end(ANSWERED_ELSEWHERE, True, Outcome.ANSWERED, elsewhere=True)
        else:
            self._selected = True

    # -- refusing -----------------------------------------------------------------------------

    def _refuse_unencrypted(self, detail: str) -> None:
        logger.warning("call %s refused: %s", self.call_id, detail)
        reason, extra = HangupReason.UNKNOWN_ERROR, {REASON_KEY: ENCRYPTION_REQUIRED}
        if self.state in UNANSWERED:
            self._decline(reason, extra)
            return
        self._send(CallHangup, reason=reason.value, extra=extra)
        self._end(ENCRYPTION_REQUIRED, False, Outcome.FAILED)

    def _decline(
        self, reason: HangupReason | None = None, extra: dict[str, Any] | None = None
    ) -> None:
        """Refuse a call we have not answered: ``m.call.reject`` (MSC2746), which the caller's
        SDK honours before it picked a callee (a hang-up it would ignore and ring on)."""
        reject = CallReject(
            call_id=self.call_id,
            party_id=self.party_id,
            reason=None if reason in (None, HangupReason.USER_HANGUP) else reason.value,
            extra=extra or {},
        )
        self._emit(act.SendEvent(reject))
        end_reason, outcome = reject_end(reject)
        self._end(end_reason, False, outcome)

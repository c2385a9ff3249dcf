"""The full mesh of one membership session of ours, without I/O: one 1:1 call per peer device.

Feed :class:`Mesh` the membership table's events (:meth:`Mesh.on_membership`), every to-device
message of an ``m.call.*`` type (:meth:`Mesh.receive`), the media layer's results for each pair's
call (:meth:`Mesh.command`), the user's mute and screen-share choices, and timer expiry
(:meth:`Mesh.handle_timer` at :meth:`Mesh.next_deadline`), each with ``now`` (seconds, any
monotonic clock). It returns :data:`MeshAction` s: :class:`SendSignal` (a to-device message to
send Olm-encrypted), :class:`PairMedia` (one pair call's action for the media layer or the
application) and :class:`PairEnded`.

How pairs are made (after matrix-js-sdk's and the Famedly SDK's group calls, on MatrixRTC
membership instead of their ``m.call`` state):

- Each peer member device session is a :class:`Pair` running the 1:1 machine
  (:class:`~sealcall.calls.Call`, party id = our device id). The device with the lower
  ``(user_id, device_id)`` places the call (:func:`~sealcall.group.places_call`) as soon as the
  member appears; the other waits for the invite and answers it at once with the mesh's
  ``video``: joining the group call is the acceptance, nothing rings. Call ids are derived
  (``MeshSender.call_id``): both sides agree on them, a retry is attempt N, a rejoin a new id.
- Every event a pair call sends is wrapped by one :class:`MeshSender` (``seq`` per peer
  session). The call's ``UseMediaKeys``, ``AllowUnencryptedMedia`` and ``HistoryItemReady`` are
  not passed on: group media is protected with each sender's group key
  (:mod:`sealcall.e2ee.group_keys`) and the group session keeps one history item for the whole
  call. Pair calls never take unencrypted media: the policy's ``allow_unencrypted`` and
  ``ask_unencrypted`` are forced off (an invite without ``e2ee`` is refused by the call itself).
- What arrives goes through one :class:`MeshInbox` (checked, per-peer ``seq`` order, early
  messages held until the sender's membership appears). An invite starts the callee's call; an
  invite for a newer attempt ends the pair's current call (``replaced``, nothing sent: the placer
  has already moved on) and starts the new one; an invite from a peer that we should call, or for
  an attempt not newer than the current one, is refused and counted, as is any other event that
  is not for the pair's current call.
- A member that rejoins (a new membership session) ends its pair's call with ``new_session``, a
  member that leaves with ``member_left``; nothing is sent to the gone session. The call is
  driven with ``HangUp`` and its sends are dropped, so the media layer still gets
  ``ClosePeerConnection`` and ``CallEnded`` (whose reason is rewritten to the mesh's). A pair
  with no call (waiting for an invite or a retry) just goes, with no :class:`PairEnded`. A peer
  that keeps its membershipID across joins (js-sdk does) gets the same call ids again: the old
  call has ended by then, so one id is never live twice. Not so when only our view of the
  member flickered (a sync that brought its room membership out of order: it left our view and
  came back under the same session while it kept its call): then our message numbers go on and
  the pair's next call is a newer attempt; as the callee we hang up the call it still holds
  (``ice_failed``), so that it places that attempt at once.
- A pair call that ends is retried by the placer as :class:`PairRetry` says (1, 2, 4 s, not after
  a deliberate end such as a user hang-up); :attr:`PairEnded.retry_at` tells when. The callee
  keeps the pair and waits for the next invite. A pair that gave up stays down until the
  member's session changes.
- Mute applies to every live pair call, and is remembered: a new pair call gets it right after
  ``PlaceCall`` / ``AnswerCall``, so its invite or answer metadata (MSC3291) carries it.
  Screen sharing applies to connected pair calls and to each pair once it connects.
- After :meth:`Mesh.leave` every pair call has been hung up (``user_hangup``, sent) and the mesh
  takes no more input: a rejoin of ours is a new :class:`Mesh` with the new session id. Events
  about our own device are ignored for the same reason. Make the mesh before our membership is
  sent: the members' invites to the new session may follow it at once.

Bounds: at most :data:`MAX_MEMBERS` pairs; each call, the sender and the inbox are bounded on
their own; refusals are counted under fixed names (:class:`MeshCount`), never by what a peer
wrote. Every invite we answer is a new peer connection: a pair answers at most
:data:`MAX_INVITES_PER_WINDOW` invites in :data:`INVITE_WINDOW` seconds (an honest placer sends
four at most in a burst of failures: the first and three retries); the rest are refused and
counted, and the placer's call times out and is retried. A member that rejoins to get a fresh
pair pays a state event each time. Nothing raises on hostile input; :meth:`Mesh.command`
raises the call's :class:`~sealcall.calls.IllegalTransitionError` for a command its state
does not take (the caller's own misuse), as :class:`~sealcall.calls.Call` does.
"""

import dataclasses
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from sealcall.calls import (
    AnswerCall,
    Call,
    CallPolicy,
    CallState,
    Direction,
    HangUp,
    PlaceCall,
    SetMuted,
    SetScreenShare,
    actions,
)
from sealcall.calls.call import REPLACED
from sealcall.calls.inputs import LocalInput
from sealcall.signaling import CallHangup, CallInvite, HangupReason

from .membership import (
    MAX_MEMBERS,
    Member,
    MemberDevice,
    MemberJoined,
    MemberLeft,
    MembershipEvent,
    places_call,
)
from .mesh_inbox import IncomingMessage, MeshInbox, PeerSignal
from .mesh_retry import MEMBER_LEFT, NEW_SESSION, RETRY_DELAYS, GiveUp, PairRetry
from .mesh_signaling import MeshSender, OutgoingSignal

logger = logging.getLogger(__name__)

INVITE_WINDOW = 30.0  # seconds
MAX_INVITES_PER_WINDOW = 6  # invites a pair answers within INVITE_WINDOW

# What a pair call emits that stays inside the mesh (see the module docstring).
_KEPT_INSIDE = (actions.UseMediaKeys, actions.AllowUnencryptedMedia, actions.HistoryItemReady)


class MeshCount(StrEnum):
    """What the mesh counts itself (beside the inbox's :class:`~sealcall.group.Dropped`)."""

    WRONG_DIRECTION = "wrong_direction"  # an invite from a peer that we should call
    STALE_ATTEMPT = "stale_attempt"  # an event for another attempt than the pair's current call
    DUPLICATE_INVITE = "duplicate_invite"  # a second invite for the current attempt
    NO_PAIR = "no_pair"  # a signal from a device session that has no pair
    STALE_COMMAND = "stale_command"  # a command for a call that is not the pair's current one
    OVER_CAPACITY = "pairs_over_capacity"
    PAIR_ENDED = "pair_ended"
    PAIR_RETRIED = "pair_retried"
    PAIR_GIVEN_UP = "pair_given_up"  # the retries are spent
    INVITE_RATE_LIMITED = "invite_rate_limited"  # too many new calls from one peer session


@dataclass(frozen=True)
class SendSignal:
    """Send this to-device message Olm-encrypted to its one device."""

    message: OutgoingSignal


@dataclass(frozen=True)
class PairMedia:
    """One pair call's action for the media layer or the application."""

    peer: MemberDevice
    call_id: str
    action: actions.Action


@dataclass(frozen=True)
class PairEnded:
    """A pair's call is over, for good or until ``retry_at`` (when we place it again; None: not
    retried, or we are the callee and wait for the placer's next invite)."""

    peer: MemberDevice
    call_id: str
    reason: str  # the call's end reason, or the mesh's own NEW_SESSION / MEMBER_LEFT / replaced
    retry_at: float | None


MeshAction = SendSignal | PairMedia | PairEnded


@dataclass
class Pair:
    """Our 1:1 call with one peer member device session."""

    peer: MemberDevice
    session: str  # the peer's membershipID
    created: int  # and its created_ts: with it, what tells one join of the peer from another
    places: bool  # we place the call (the lower device)
    retry: PairRetry
    call: Call | None = None  # None while waiting for an invite or a retry, or after giving up
    attempt: int = -1  # the attempt of the current (or last) call; -1: none yet
    retry_at: float | None = None
    answered: deque[float] = field(default_factory=deque)  # when recent invites were answered


class Mesh:
    """The full mesh of one own membership session: one 1:1 Call per peer member device session."""

    def __init__(
        self,
        room_id: str,
        own: MemberDevice,
        own_session: str,
        *,
        video: bool = False,
        policy: CallPolicy | None = None,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
    ) -> None:
        self.room_id = room_id
        self.own = own
        self.own_session = own_session
        self.video = video
        # Group media is encrypted with group keys or not at all: never a plaintext pair.
        self.policy = dataclasses.replace(
            policy or CallPolicy(), allow_unencrypted=False, ask_unencrypted=False
        )
        self.retry_delays = retry_delays
        self.sender = MeshSender(room_id, own, own_session)
        self.inbox = MeshInbox(room_id, own, own_session)
        self.pairs: dict[MemberDevice, Pair] = {}
        self.audio_muted = False
        self.video_muted = False
        self.screensharing = False
        self.left = False
        self._counts: Counter[str] = Counter()
        # Pairs dropped because their member left our view: (session, last attempt) by device.
        self._gone: OrderedDict[MemberDevice, tuple[str, int]] = OrderedDict()

    @property
    def counters(self) -> Counter[str]:
        """The inbox's drops plus the mesh's own counts (:class:`MeshCount`): a fresh copy."""
        return self.inbox.dropped + self._counts

    # -- inputs ---------------------------------------------------------------------------

    def on_membership(self, events: list[MembershipEvent], now: float) -> list[MeshAction]:
        """The membership table's events: make, remake and end pairs."""
        if self.left:
            return []
        signals = self.inbox.on_membership(events, now)
        out: list[MeshAction] = []
        for event in events:
            if isinstance(event, MemberJoined):
                out += self._member(event.member, now, rejoined=False)
            elif isinstance(event, MemberLeft):
                if event.member.device != self.own:
                    out += self._drop_pair(event.member.device, MEMBER_LEFT, now)
            else:
                out += self._member(event.new, now, rejoined=True)
        return out + self._route(signals, now)

    def receive(self, message: IncomingMessage, now: float) -> list[MeshAction]:
        """A to-device message of an ``m.call.*`` type (sending device verified by Olm)."""
        if self.left:
            return []
        return self._route(self.inbox.receive(message, now), now)

    def command(
        self, peer: MemberDevice, call_id: str, command: LocalInput, now: float
    ) -> list[MeshAction]:
        """A media result or command for ``peer``'s call ``call_id``.

        A call id that is not the pair's current call is stale: counted, nothing happens.
        Raises :class:`~sealcall.calls.IllegalTransitionError` for a command that the call's
        state does not take.
        """
        pair = self.pairs.get(peer)
        call = None if pair is None else pair.call
        if pair is None or call is None or call.call_id != call_id:
            self._count(MeshCount.STALE_COMMAND)
            return []
        return self._run(pair, call, call.handle(command, now), now)

    def set_muted(self, audio: bool | None, video: bool | None, now: float) -> list[MeshAction]:
        """Mute or unmute the microphone / camera (None: as it is) for every pair, now and later."""
        if audio is not None:
            self.audio_muted = audio
        if video is not None:
            self.video_muted = video
        out: list[MeshAction] = []
        for pair, call in self._live_calls():
            out += self._run(pair, call, call.handle(SetMuted(audio, video), now), now)
        return out

    def set_screenshare(self, on: bool, now: float) -> list[MeshAction]:
        """Start or stop sharing the screen: every connected pair now, the others once connected."""
        self.screensharing = on
        out: list[MeshAction] = []
        for pair, call in self._live_calls():
            out += self._share_screen(pair, call, now)
        return out

    def leave(self, now: float) -> list[MeshAction]:
        """Hang up every pair call (``user_hangup``, sent); the mesh takes no more input."""
        if self.left:
            return []
        self.left = True
        out: list[MeshAction] = []
        for pair, call in self._live_calls():
            out += self._run(pair, call, call.handle(HangUp(), now), now)
        self.pairs.clear()
        return out

    def handle_timer(self, now: float) -> list[MeshAction]:
        """Run what is due at ``now``: the inbox's gaps and early messages, each call's timers,
        and the retries."""
        if self.left:
            return []
        out = self._route(self.inbox.tick(now), now)
        for pair in list(self.pairs.values()):
            call = pair.call
            if call is not None:
                deadline = call.next_deadline()
                if deadline is not None and deadline <= now:
                    out += self._run(pair, call, call.handle_timer(now), now)
            if pair.retry_at is not None and pair.retry_at <= now and pair.call is None:
                self._count(MeshCount.PAIR_RETRIED)
                out += self._place(pair, pair.retry.attempt, now)
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must next run, or None."""
        if self.left:
            return None
        times = [self.inbox.next_deadline()]
        for pair in self.pairs.values():
            times.append(pair.retry_at)
            if pair.call is not None:
                times.append(pair.call.next_deadline())
        due = [t for t in times if t is not None]
        return min(due) if due else None

    # -- pairs ----------------------------------------------------------------------------

    def _live_calls(self) -> list[tuple[Pair, Call]]:
        return [
            (pair, pair.call)
            for pair in list(self.pairs.values())
            if pair.call is not None and pair.call.state is not CallState.ENDED
        ]

    def _member(self, member: Member, now: float, *, rejoined: bool) -> list[MeshAction]:
        """``member`` counts now: it joined, or ``rejoined`` under a new session (which may
        keep its membershipID: js-sdk's is constant, its ``created_ts`` tells the sessions apart).
        """
        device = member.device
        if device == self.own:
            return []  # our own rejoin is a new Mesh
        out: list[MeshAction] = []
        old = self.pairs.get(device)
        if old is not None:
            if old.session == member.member_id and (not rejoined or old.created == member.created):
                return []  # told twice (after our own rejoin, the new mesh starts from the table)
            out += self._drop_pair(device, NEW_SESSION, now)
        gone = self._gone.pop(device, None)
        if gone is not None and gone[0] != member.member_id:
            self.sender.forget(device)  # a new session: numbered from 0
            gone = None
        if len(self.pairs) >= MAX_MEMBERS:
            self._count(MeshCount.OVER_CAPACITY)
            return out
        pair = Pair(
            peer=device,
            session=member.member_id,
            created=member.created,
            places=places_call(self.own, device),
            retry=PairRetry(self.retry_delays),
        )
        self.pairs[device] = pair
        if gone is not None and gone[1] >= 0:
            # Not the call it may still hold: a newer attempt. As the callee, tell it that call
            # is over, so that it places the next one now, not once its media times out.
            pair.retry.attempt, pair.attempt = gone[1] + 1, gone[1]
            if not pair.places:
                call_id = self.sender.call_id(device, member.member_id, gone[1])
                hangup = CallHangup(
                    call_id=call_id,
                    party_id=self.own.device_id,
                    reason=HangupReason.ICE_FAILED.value,
                )
                out.append(SendSignal(self.sender.wrap(hangup, device, member.member_id)))
        if pair.places:
            out += self._place(pair, pair.retry.attempt, now)
        return out

    def _drop_pair(self, device: MemberDevice, reason: str, now: float) -> list[MeshAction]:
        """End ``device``'s pair without a word to its session (it is gone) and forget it."""
        pair = self.pairs.pop(device, None)
        if pair is None or reason != MEMBER_LEFT:
            self.sender.forget(device)  # a new session of it numbers our messages from 0 again
            return [] if pair is None else self._end_silently(pair, reason, now)
        # Our view of it may only have flickered (a sync that brought its room membership out
        # of order): if the same session comes back, it may still hold this pair's call and
        # our message numbers, so the numbers go on and the next call is a newer attempt.
        self._gone[device] = (pair.session, pair.attempt)
        self._gone.move_to_end(device)
        while len(self._gone) > MAX_MEMBERS:
            self.sender.forget(self._gone.popitem(last=False)[0])
        return self._end_silently(pair, reason, now)

    def _end_silently(self, pair: Pair, reason: str, now: float) -> list[MeshAction]:
        pair.retry_at = None
        call = pair.call
        if call is None or call.state is CallState.ENDED:
            return []
        return self._run(pair, call, call.handle(HangUp(), now), now, silent=reason)

    def _place(self, pair: Pair, attempt: int, now: float) -> list[MeshAction]:
        pair.attempt, pair.retry_at = attempt, None
        call = Call(
            call_id=self.sender.call_id(pair.peer, pair.session, attempt),
            party_id=self.own.device_id,
            peer=pair.peer.user_id,
            direction=Direction.OUTGOING,
            now=now,
            policy=self.policy,
            invitee=pair.peer.user_id,
        )
        pair.call = call
        out = self._run(pair, call, call.handle(PlaceCall(video=self.video), now), now)
        return out + self._apply_mute(pair, call, now)

    def _accept(
        self, pair: Pair, signal: PeerSignal, invite: CallInvite, now: float
    ) -> list[MeshAction]:
        out = self._end_silently(pair, REPLACED, now)  # the placer moved on to a new attempt
        pair.attempt = signal.attempt
        call = Call(
            call_id=invite.call_id,
            party_id=self.own.device_id,
            peer=pair.peer.user_id,
            direction=Direction.INCOMING,
            now=now,
            policy=self.policy,
        )
        pair.call = call
        out += self._run(pair, call, call.receive_invite(invite, now), now)
        if call.state is CallState.RINGING:  # not refused: joining the call is the acceptance
            out += self._run(pair, call, call.handle(AnswerCall(video=self.video), now), now)
            out += self._apply_mute(pair, call, now)
        return out

    def _apply_mute(self, pair: Pair, call: Call, now: float) -> list[MeshAction]:
        """Give a new pair call the remembered mute state, before its invite or answer."""
        if not (self.audio_muted or self.video_muted) or call.state is CallState.ENDED:
            return []
        muted = SetMuted(self.audio_muted, self.video_muted)
        return self._run(pair, call, call.handle(muted, now), now)

    def _share_screen(self, pair: Pair, call: Call, now: float) -> list[MeshAction]:
        if call.state is not CallState.CONNECTED or call.screensharing == self.screensharing:
            return []
        return self._run(pair, call, call.handle(SetScreenShare(self.screensharing), now), now)

    # -- signals --------------------------------------------------------------------------

    def _route(self, signals: Iterable[PeerSignal], now: float) -> list[MeshAction]:
        out: list[MeshAction] = []
        for signal in signals:
            out += self._signal(signal, now)
        return out

    def _signal(self, signal: PeerSignal, now: float) -> list[MeshAction]:
        """Give one of a peer's ordered events to its pair's current call."""
        pair = self.pairs.get(signal.peer)
        if pair is None or pair.session != signal.session:
            self._count(MeshCount.NO_PAIR)
            return []
        event = signal.event
        if isinstance(event, CallInvite):
            if pair.places:
                self._count(MeshCount.WRONG_DIRECTION)
                return []
            if signal.attempt < pair.attempt:
                self._count(MeshCount.STALE_ATTEMPT)
                return []
            if signal.attempt == pair.attempt:
                self._count(MeshCount.DUPLICATE_INVITE)
                return []
            while pair.answered and pair.answered[0] <= now - INVITE_WINDOW:
                pair.answered.popleft()
            if len(pair.answered) >= MAX_INVITES_PER_WINDOW:
                self._count(MeshCount.INVITE_RATE_LIMITED)
                return []
            pair.answered.append(now)
            return self._accept(pair, signal, event, now)
        call = pair.call
        if call is None or signal.attempt != pair.attempt:
            self._count(MeshCount.STALE_ATTEMPT)
            return []
        return self._run(pair, call, call.handle(event, now), now)

    # -- a pair call's actions --------------------------------------------------------------

    def _run(
        self,
        pair: Pair,
        call: Call,
        produced: list[actions.Action],
        now: float,
        *,
        silent: str | None = None,
    ) -> list[MeshAction]:
        """Turn a pair call's actions into the mesh's. ``silent``: the mesh ends the call with
        this reason and nothing it would send goes out."""
        out: list[MeshAction] = []
        connected = False
        for action in produced:
            if isinstance(action, actions.SendEvent):
                if silent is None:
                    out.append(SendSignal(self.sender.wrap(action.event, pair.peer, pair.session)))
                continue
            if isinstance(action, _KEPT_INSIDE):
                continue
            if isinstance(action, actions.CallEnded):
                reason = action.reason if silent is None else silent
                ended = action if silent is None else actions.CallEnded(silent, True)
                out.append(PairMedia(pair.peer, call.call_id, ended))
                out.append(self._ended(pair, call, reason, now))
                continue
            if isinstance(action, actions.StateChanged) and action.new is CallState.CONNECTED:
                connected = True
            out.append(PairMedia(pair.peer, call.call_id, action))
        if connected and pair.call is call:
            pair.retry.connected()
            out += self._share_screen(pair, call, now)
        return out

    def _ended(self, pair: Pair, call: Call, reason: str, now: float) -> PairEnded:
        self._count(MeshCount.PAIR_ENDED)
        if pair.call is call:
            pair.call = None
        retry_at = None
        if pair.places and not self.left:
            decision = pair.retry.ended(reason, now)
            if isinstance(decision, GiveUp):
                if not decision.deliberate:
                    self._count(MeshCount.PAIR_GIVEN_UP)
            elif self.pairs.get(pair.peer) is pair:
                retry_at = pair.retry_at = decision.at
        return PairEnded(pair.peer, call.call_id, reason, retry_at)

    def _count(self, what: MeshCount) -> None:
        if not self._counts[what] and what not in _ROUTINE:
            logger.info("mesh: %s", what.value)  # the first of each kind; the rest are counted
        self._counts[what] += 1


_ROUTINE = frozenset({MeshCount.PAIR_ENDED, MeshCount.PAIR_RETRIED})

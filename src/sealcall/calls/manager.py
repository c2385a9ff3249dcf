"""The call manager: routes call events to calls, resolves glare, handles busy and call waiting.

Sans-I/O like :class:`~sealcall.calls.call.Call`: it takes events, commands and ``now``, and
returns :class:`ManagerAction` items (a call's action together with the call it concerns) plus
its own notifications, :class:`IncomingCall` and :class:`CallWaiting`.
"""

import hashlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sealcall.signaling import (
    CallAnswer,
    CallCandidates,
    CallEvent,
    CallInvite,
    CallReject,
    HangupReason,
)

from . import actions as act
from .call import Call
from .inputs import AnswerCall, HangUp, LocalInput, PlaceCall, RejectCall
from .policy import BusyPolicy, CallPolicy
from .states import CallError, CallState, Direction

logger = logging.getLogger(__name__)

# Events for calls we have not seen the invite of (reordered delivery) wait here, bounded, and
# for at most the longest invite lifetime (an invite later than that could not ring anyway).
EARLY_CALLS = 64
EARLY_EVENTS_PER_CALL = 32
# Ended calls are kept this long (late events for them are recognised), then only their ids.
KEEP_ENDED_SECONDS = 600.0
MAX_IGNORED = 4096


@dataclass(frozen=True)
class RemoteEvent:
    """A call event as the transport delivered it."""

    room_id: str
    sender: str
    event: CallEvent
    age_ms: int = 0


@dataclass(frozen=True)
class IncomingCall:
    """Notification: a call rings (nothing else is in progress)."""

    call: Call


@dataclass(frozen=True)
class CallWaiting:
    """Notification: a second call rings while ``current`` is in progress."""

    call: Call
    current: Call


@dataclass(frozen=True)
class ManagerAction:
    """An action of one call (``call``), or a manager notification (``action``)."""

    call: Call
    room_id: str
    action: "act.Action | IncomingCall | CallWaiting"


class UnknownCallError(CallError):
    """A command names a call the manager does not have."""


class CallManager:
    """All calls of one device (``party_id``) of one user (``user_id``)."""

    def __init__(
        self,
        user_id: str,
        party_id: str,
        policy: CallPolicy | None = None,
        new_call_id: Callable[[], str] | None = None,
    ) -> None:
        self.user_id = user_id
        self.party_id = party_id
        self.policy = policy or CallPolicy()
        self.calls: dict[str, Call] = {}
        self.rooms: dict[str, str] = {}
        self._new_call_id = new_call_id or (lambda: uuid.uuid4().hex)
        # Digests of call ids: a sender picks the id, and its length is not bounded.
        self._ignored: OrderedDict[bytes, None] = OrderedDict()
        self._early: OrderedDict[str, list[RemoteEvent]] = OrderedDict()
        self._early_since: dict[str, float] = {}  # call id -> when its first early event came
        self.dropped_events = 0

    # -- queries --------------------------------------------------------------------------

    def active_calls(self) -> list[Call]:
        """Calls not yet ended."""
        return [c for c in self.calls.values() if c.state is not CallState.ENDED]

    def next_deadline(self) -> float | None:
        """The earliest timer of any call, or when ended calls or early events are forgotten."""
        times = [t for c in self.active_calls() if (t := c.next_deadline()) is not None]
        ended = [c.ended_at for c in self.calls.values() if c.ended_at is not None]
        times += [t + KEEP_ENDED_SECONDS for t in ended]
        times += [t + self._early_seconds() for t in self._early_since.values()]
        return min(times) if times else None

    # -- commands -------------------------------------------------------------------------

    def place_call(
        self, room_id: str, peer: str, now: float, *, video: bool = False
    ) -> tuple[Call, list[ManagerAction]]:
        """Start an outgoing call to ``peer`` in ``room_id``."""
        call = Call(
            call_id=self._new_call_id(),
            party_id=self.party_id,
            peer=peer,
            direction=Direction.OUTGOING,
            now=now,
            policy=self.policy,
            invitee=peer,
        )
        self.calls[call.call_id] = call
        self.rooms[call.call_id] = room_id
        return call, self._wrap(call, call.handle(PlaceCall(video=video), now))

    def command(self, call_id: str, command: LocalInput, now: float) -> list[ManagerAction]:
        """Give a user command or media result to one call."""
        call = self.calls.get(call_id)
        if call is None:
            raise UnknownCallError(f"no call {call_id!r}")
        return self._wrap(call, call.handle(command, now))

    def handle_timer(self, now: float) -> list[ManagerAction]:
        """Run every call's due timers and forget stale early events and ended calls."""
        self.forget_ended(now)
        out: list[ManagerAction] = []
        for call in self.active_calls():
            deadline = call.next_deadline()
            if deadline is not None and now >= deadline:
                out += self._wrap(call, call.handle_timer(now))
        return out

    # -- remote events --------------------------------------------------------------------

    @staticmethod
    def _digest(call_id: str) -> bytes:
        return hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).digest()

    def _ignore(self, call_id: str) -> None:
        self._ignored[self._digest(call_id)] = None
        while len(self._ignored) > MAX_IGNORED:
            self._ignored.popitem(last=False)

    def forget_ended(self, now: float) -> None:
        """Drop calls that ended :data:`KEEP_ENDED_SECONDS` ago (their ids stay known), and early
        events that waited for their invite longer than an invite may live."""
        for call_id, call in list(self.calls.items()):
            if call.ended_at is not None and now - call.ended_at >= KEEP_ENDED_SECONDS:
                del self.calls[call_id]
                self.rooms.pop(call_id, None)
                self._ignore(call_id)
        for call_id, since in list(self._early_since.items()):
            if call_id not in self._early or now - since >= self._early_seconds():
                del self._early_since[call_id]
                self.dropped_events += len(self._early.pop(call_id, []))

    def _early_seconds(self) -> float:
        return self.policy.max_invite_lifetime_ms / 1000

    def handle_remote(self, remote: RemoteEvent, now: float) -> list[ManagerAction]:
        """Route one remote call event."""
        self.forget_ended(now)
        event = remote.event
        own_echo = event.party_id == self.party_id and remote.sender == self.user_id
        if own_echo or self._digest(event.call_id) in self._ignored:
            return []  # our own echo, or a call that glare or the invitee rule set aside
        call = self.calls.get(event.call_id)
        if isinstance(event, CallInvite):
            if call is not None:
                return []  # a duplicate
            return self._new_invite(remote, now)
        if call is None:
            self._keep_early(remote, now)
            return []
        if not self._sender_may_send(call, remote):
            self.dropped_events += 1
            logger.info("dropped %s for call %s from %s", event.TYPE, call.call_id, remote.sender)
            return []
        return self._wrap(call, call.handle(event, now))

    def _sender_may_send(self, call: Call, remote: RemoteEvent) -> bool:
        """Only the far party, or (for an incoming call) our own other devices, act on a call.

        Party ids are chosen by senders; user ids are vouched for by the homeserver and, in an
        encrypted room, by Megolm. Checking them keeps a third room member from answering,
        hanging up or renegotiating someone else's call.
        """
        if remote.sender == call.peer:
            return True
        own_device = remote.sender == self.user_id
        return (
            own_device
            and call.direction is Direction.INCOMING
            and isinstance(remote.event, (CallAnswer, CallReject))
        )

    def _keep_early(self, remote: RemoteEvent, now: float) -> None:
        queue = self._early.setdefault(remote.event.call_id, [])
        self._early.move_to_end(remote.event.call_id)
        self._early_since.setdefault(remote.event.call_id, now)
        if len(queue) >= EARLY_EVENTS_PER_CALL or (
            # The call takes only so many candidates: keep no more of them than that.
            isinstance(remote.event, CallCandidates)
            and len(remote.event.candidates) + _candidates(queue)
            > self.policy.max_remote_candidates
        ):
            self.dropped_events += 1
            return
        queue.append(remote)
        while len(self._early) > EARLY_CALLS:
            _, dropped = self._early.popitem(last=False)
            self.dropped_events += len(dropped)

    def _new_invite(self, remote: RemoteEvent, now: float) -> list[ManagerAction]:
        invite = remote.event
        assert isinstance(invite, CallInvite)
        if invite.invitee is not None and invite.invitee != self.user_id:
            self._ignore(invite.call_id)
            return []
        if remote.sender == self.user_id and invite.invitee != self.user_id:
            self._ignore(invite.call_id)  # placed by another device of ours
            return []
        out: list[ManagerAction] = []
        glare = self._glare_partner(remote.room_id, remote.sender)
        if glare is not None:
            keep_ours = glare.state is CallState.INVITE_SENT and glare.call_id < invite.call_id
            if keep_ours:
                # The other side yields to our call (the smaller id) and answers it.
                self._ignore(invite.call_id)
                self._early.pop(invite.call_id, None)
                return []
        call = Call(
            call_id=invite.call_id,
            party_id=self.party_id,
            peer=remote.sender,
            direction=Direction.INCOMING,
            now=now,
            policy=self.policy,
        )
        self.calls[call.call_id] = call
        self.rooms[call.call_id] = remote.room_id
        out += self._wrap(call, call.receive_invite(invite, now, remote.age_ms))
        for early in self._early.pop(call.call_id, []):
            if self._sender_may_send(call, early):
                out += self._wrap(call, call.handle(early.event, now))
        if call.state is not CallState.RINGING:
            return out  # stale, refused or already over: our own call, if any, goes on
        if glare is not None and not call.encrypted and not self.policy.allow_unencrypted:
            # Merging would answer a call that cannot be encrypted without asking: refuse it.
            return out + self._wrap(call, call.handle(RejectCall(encryption_required=True), now))
        if glare is not None:
            out += self._wrap(glare, glare.replace(now, invite.call_id))
            out += self._wrap(call, call.handle(AnswerCall(video=glare.video or None), now))
            return out
        current = next((c for c in self.active_calls() if c is not call), None)
        if current is None:
            out.append(ManagerAction(call, remote.room_id, IncomingCall(call)))
        elif self.policy.busy is BusyPolicy.REJECT:
            out += self._wrap(call, call.handle(HangUp(reason=HangupReason.USER_BUSY), now))
        else:
            out.append(ManagerAction(call, remote.room_id, CallWaiting(call, current)))
        return out

    def _glare_partner(self, room_id: str, sender: str) -> Call | None:
        for call in self.active_calls():
            if (
                call.direction is Direction.OUTGOING
                and call.peer == sender
                and self.rooms.get(call.call_id) == room_id
                and call.state in (CallState.CREATE_OFFER, CallState.INVITE_SENT)
            ):
                return call
        return None

    def _wrap(self, call: Call, actions: list[act.Action]) -> list[ManagerAction]:
        room = self.rooms[call.call_id]
        return [ManagerAction(call, room, a) for a in actions]


def _candidates(queue: list[RemoteEvent]) -> int:
    return sum(len(r.event.candidates) for r in queue if isinstance(r.event, CallCandidates))

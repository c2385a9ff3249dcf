"""A connected call whose media path goes down: ``reconnecting`` (not ended) while it waits,
``connected`` again when the path answers, ``ice_timeout`` only once its deadline has passed.
The call engine without I/O, on a fake clock."""

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from call_harness import Peer, Room
from mesh_harness import MeshNet
from sealcall.calls import (
    TRANSITIONS,
    AnswerCall,
    CallPolicy,
    CallState,
    HangUp,
    MediaClosed,
    MediaConnected,
    MediaFailed,
    MediaInterrupted,
    Outcome,
    SetHold,
    SetScreenShare,
    actions,
)
from sealcall.group import MemberDevice

S = CallState
RECONNECT = 8.0
CLOSED = 3.0


def connected(**policy: Any) -> tuple[Room, Peer, Peer, str]:
    room = Room()
    settings_ = {"reconnect_timeout": RECONNECT, "ice_restart_timeout": CLOSED, **policy}
    alice = room.add("@alice:local", "ALICE", CallPolicy(**settings_))
    bob = room.add("@bob:local", "BOB", CallPolicy(**settings_))
    call_id = alice.place()
    room.settle()
    bob.do(call_id, AnswerCall())
    room.settle()
    assert alice.call(call_id).state is bob.call(call_id).state is S.CONNECTED
    return room, alice, bob, call_id


def test_the_table_has_the_reconnecting_transitions() -> None:
    assert TRANSITIONS[(S.CONNECTED, MediaInterrupted)] == "_media_interrupted"
    assert TRANSITIONS[(S.RECONNECTING, MediaConnected)] == "_media_connected"
    for command in (HangUp, MediaFailed, MediaClosed, SetHold, SetScreenShare):
        assert (S.RECONNECTING, command) in TRANSITIONS
    assert CallState("reconnecting") is S.RECONNECTING


@pytest.mark.parametrize("side", ["caller", "callee"])
def test_an_interrupted_path_reconnects_and_the_call_goes_on(side: str) -> None:
    room, alice, bob, call_id = connected()
    peer = alice if side == "caller" else bob
    sent = len(peer.sent)
    peer.do(call_id, MediaInterrupted())
    assert peer.call(call_id).state is S.RECONNECTING
    room.wait(RECONNECT - 0.1)
    peer.do(call_id, MediaConnected())
    assert peer.states[call_id][-3:] == [S.CONNECTED, S.RECONNECTING, S.CONNECTED]
    assert len(peer.sent) == sent  # nothing told the far side: the call never ended
    room.wait(RECONNECT * 3)
    assert alice.call(call_id).state is bob.call(call_id).state is S.CONNECTED
    assert alice.history == bob.history == []


def test_a_path_that_never_comes_back_ends_as_ice_timeout_at_the_deadline() -> None:
    room, alice, bob, call_id = connected()
    room.wait(30)
    interrupted_at = room.now
    alice.do(call_id, MediaInterrupted())
    alice.do(call_id, MediaInterrupted())  # told twice: the deadline does not move
    assert alice.manager.next_deadline() == pytest.approx(interrupted_at + RECONNECT)
    room.wait(RECONNECT - 0.01)
    assert alice.call(call_id).state is S.RECONNECTING
    room.wait(0.02)
    call = alice.call(call_id)
    assert (call.state, call.end_reason) == (S.ENDED, "ice_timeout")
    assert call.ended_at == pytest.approx(interrupted_at + RECONNECT)
    assert alice.sent[-1].TYPE == "m.call.hangup"
    assert alice.sent[-1].reason == "ice_timeout"
    (item,) = alice.history
    assert (item.outcome, item.end_reason) == (Outcome.ANSWERED, "ice_timeout")
    assert item.duration == pytest.approx(30 + RECONNECT, abs=0.2)  # connected time counts
    room.settle()
    assert bob.call(call_id).end_reason == "ice_timeout"
    assert bob.history[0].outcome is Outcome.ANSWERED


def test_restored_path_gives_the_next_outage_a_fresh_deadline() -> None:
    room, alice, _, call_id = connected()
    alice.do(call_id, MediaInterrupted())
    room.wait(RECONNECT - 1)
    alice.do(call_id, MediaConnected())
    alice.do(call_id, MediaInterrupted())
    room.wait(RECONNECT - 1)
    assert alice.call(call_id).state is S.RECONNECTING


def test_hang_up_while_reconnecting_is_an_answered_call() -> None:
    room, alice, bob, call_id = connected()
    bob.do(call_id, MediaInterrupted())
    bob.do(call_id, HangUp())
    room.settle()
    assert bob.call(call_id).end_reason == alice.call(call_id).end_reason == "user_hangup"
    assert [h.outcome for h in alice.history + bob.history] == [Outcome.ANSWERED] * 2
    assert bob.call(call_id).next_deadline() is None  # the reconnect deadline went with it


def test_hold_and_screen_share_work_while_reconnecting() -> None:
    room, alice, bob, call_id = connected()
    alice.do(call_id, MediaInterrupted())
    alice.do(call_id, SetHold(True))
    alice.do(call_id, SetScreenShare(True))
    room.settle()
    assert bob.call(call_id).remote_on_hold
    assert alice.call(call_id).state is S.RECONNECTING


def test_an_interruption_before_media_connected_is_not_a_reconnect() -> None:
    room = Room()
    room.media_ready = lambda *_: None  # type: ignore[method-assign]
    alice = room.add("@alice:local", "ALICE")
    bob = room.add("@bob:local", "BOB")
    call_id = alice.place()
    room.settle()
    bob.do(call_id, AnswerCall())
    room.settle()
    alice.do(call_id, MediaInterrupted())
    assert alice.call(call_id).state is S.CONNECTING


def test_failed_ice_restarts_within_the_reconnect_deadline() -> None:
    room, alice, _, call_id = connected(ice_restart_attempts=2)
    alice.do(call_id, MediaFailed())  # a browser's 'failed': reconnecting, the caller restarts
    room.settle()
    restarts = [m for m in alice.media if isinstance(m, actions.CreateOffer) and m.ice_restart]
    assert len(restarts) == 1
    assert alice.call(call_id).state is S.RECONNECTING
    alice.do(call_id, MediaConnected())
    room.wait(RECONNECT * 2)
    assert alice.call(call_id).state is S.CONNECTED


# -- any sequence of connection reports, waits and a hang-up -----------------------------------

Step = tuple[str, float]
STEPS = st.one_of(
    st.tuples(st.sampled_from(["interrupted", "connected", "failed", "closed"]), st.just(0.0)),
    st.tuples(st.just("wait"), st.floats(0.0, RECONNECT * 1.5)),
    st.tuples(st.just("hangup"), st.just(0.0)),
)


class Model:
    """What the call should do: the rules of the reconnecting state, written out plainly."""

    def __init__(self, now: float) -> None:
        self.state, self.reason, self.ended_at = S.CONNECTED, None, None
        self.reconnect: float | None = None  # when a reconnecting call gives up
        self.closed: float | None = None  # when a call whose connection closed gives up
        self.now = now

    def advance(self, to: float) -> None:
        due = [t for t in (self.reconnect if self.state is S.RECONNECTING else None, self.closed)]
        due_times = [t for t in due if t is not None and t <= to]
        if self.state is not S.ENDED and due_times:
            self.state, self.reason, self.ended_at = S.ENDED, "ice_timeout", min(due_times)
        self.now = to

    def report(self, what: str) -> None:
        if self.state is S.ENDED:
            return
        if what in ("interrupted", "failed") and self.state is S.CONNECTED:
            self.state, self.reconnect = S.RECONNECTING, self.now + RECONNECT
        elif what == "connected":
            self.state, self.reconnect, self.closed = S.CONNECTED, None, None
        elif what == "closed":
            self.closed = min(self.closed or float("inf"), self.now + CLOSED)
        elif what == "hangup":
            self.state, self.reason, self.ended_at = S.ENDED, "user_hangup", self.now


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(side=st.sampled_from(["caller", "callee"]), steps=st.lists(STEPS, max_size=12))
def test_any_sequence_of_reports_follows_the_deadline_rules(side: str, steps: list[Step]) -> None:
    room, alice, bob, call_id = connected()
    peer, other = (alice, bob) if side == "caller" else (bob, alice)
    model = Model(room.now)
    inputs = {
        "interrupted": MediaInterrupted,
        "connected": MediaConnected,
        "failed": MediaFailed,
        "closed": MediaClosed,
    }
    for what, seconds in steps:
        if what == "wait":
            room.wait(seconds)
            model.advance(room.now)
        elif peer.call(call_id).state is not S.ENDED:
            peer.do(call_id, HangUp() if what == "hangup" else inputs[what]())
            model.report(what)
        call = peer.call(call_id)
        assert call.state is model.state, (what, call.state, model.state)
    room.wait(RECONNECT + CLOSED + 1)
    model.advance(room.now)
    call = peer.call(call_id)
    assert call.state is model.state
    if model.state is S.ENDED:
        assert call.end_reason == model.reason
        assert call.ended_at == pytest.approx(model.ended_at)  # never before its deadline
        assert [h.outcome for h in peer.history] == [Outcome.ANSWERED]
        room.settle()
        assert other.call(call_id).end_reason == model.reason  # the far side was told why
    else:
        assert peer.history == []


# -- a pair of a group call's mesh runs the same machine -----------------------------------------


def test_a_reconnecting_mesh_pair_is_not_a_lost_member_until_its_deadline() -> None:
    alice, bob = MemberDevice("@alice:hs", "A1"), MemberDevice("@bob:hs", "B1")
    net = MeshNet(policy=CallPolicy(reconnect_timeout=RECONNECT))
    for device in (alice, bob):
        net.join(device, f"s-{device.device_id}")
    net.wait(5)
    net.assert_all_connected()
    node = net.nodes[alice]
    call = node.call(bob)
    assert call is not None
    node.do(bob, call.call_id, MediaInterrupted())
    assert node.state(bob) is S.RECONNECTING
    net.wait(RECONNECT - 0.5)
    assert node.ended == []  # still a member's pair, not retried
    assert node.call(bob) is call
    node.do(bob, call.call_id, MediaConnected())
    net.wait(RECONNECT * 2)
    assert node.state(bob) is S.CONNECTED
    assert node.ended == []
    node.do(bob, call.call_id, MediaInterrupted())  # this time it never comes back
    interrupted_at = net.now
    net.wait(RECONNECT + 1)
    (ended,) = node.ended
    assert (ended.call_id, ended.reason) == (call.call_id, "ice_timeout")
    assert node.ended_at[0] == pytest.approx(interrupted_at + RECONNECT)

"""Property tests: whatever the room does to the events (reorder, duplicate, delay past the
invite's lifetime) and whenever the users act, both sides end in the same state, and every call
yields exactly one history item on each side."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from call_harness import Room
from sealcall.calls import AnswerCall, CallPolicy, CallState, HangUp, RejectCall

LIFETIME_S = 20


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    jitter=st.floats(0, 4),
    duplicate=st.floats(0, 0.6),
    seed=st.integers(0, 2**16),
    invite_delay=st.sampled_from([0.0, 0.0, LIFETIME_S + 1.0]),
    callee=st.sampled_from(["answer", "reject", "nothing"]),
    callee_at=st.floats(0, LIFETIME_S * 1.5),
    caller_hangup_at=st.one_of(st.none(), st.floats(0, LIFETIME_S * 3)),
    callee_hangup_at=st.one_of(st.none(), st.floats(0, LIFETIME_S * 3)),
)
def test_any_interleaving_converges(
    jitter: float,
    duplicate: float,
    seed: int,
    invite_delay: float,
    callee: str,
    callee_at: float,
    caller_hangup_at: float | None,
    callee_hangup_at: float | None,
) -> None:
    room = Room(jitter=jitter, duplicate=duplicate, seed=seed)
    room.extra_delay["m.call.invite"] = invite_delay
    policy = CallPolicy(invite_lifetime_ms=LIFETIME_S * 1000)
    alice = room.add("@alice:local", "ALICE", policy)
    bob = room.add("@bob:local", "BOB", policy)
    start = room.now
    call_id = alice.place()

    plan = [(callee_at, bob, callee)]
    if caller_hangup_at is not None:
        plan.append((caller_hangup_at, alice, "hangup"))
    if callee_hangup_at is not None:
        plan.append((callee_hangup_at, bob, "hangup"))
    for at, peer, what in sorted(plan, key=lambda p: p[0]):
        room.wait(max(0.0, start + at - room.now))
        call = peer.manager.calls.get(call_id)
        if call is None or call.state is CallState.ENDED:
            continue
        if what == "answer" and call.state is CallState.RINGING:
            peer.do(call_id, AnswerCall())
        elif what == "reject" and call.state is CallState.RINGING:
            peer.do(call_id, RejectCall())
        elif what == "hangup" and call.state not in (CallState.RINGING,):
            peer.do(call_id, HangUp())
    room.wait(LIFETIME_S * 4)
    room.settle()

    a_state = alice.call(call_id).state
    b_call = bob.manager.calls.get(call_id)
    b_state = b_call.state if b_call is not None else CallState.ENDED
    assert a_state == b_state
    if a_state is CallState.CONNECTED:
        alice.do(call_id, HangUp())
        room.settle()
        assert bob.call(call_id).state is CallState.ENDED
    for peer in (alice, bob):
        items = [h for h in peer.history if h.call_id == call_id]
        if peer is bob and b_call is None:
            assert items == []  # the invite never reached Bob at all
            continue
        assert len(items) == 1, (peer.device_id, items)

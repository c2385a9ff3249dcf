"""The room's call record (``sealcall history``) and each device's HistoryItem agree.

Each scenario runs the call engine on the simulated room, which also keeps the room's timeline
as the server would store it; then, for every device that made a history item, the room view
from that device's user must say the same: direction, other party, kind, outcome, duration.
"""

from collections.abc import Callable

import pytest

from call_harness import ROOM, Peer, Room
from sealcall.calls import (
    AnswerCall,
    BusyPolicy,
    CallPolicy,
    CallState,
    Direction,
    HangUp,
    MediaFailed,
    Outcome,
    RejectCall,
)
from sealcall.calls.room_history import calls_from_timeline

ALICE, BOB = "@alice:local", "@bob:local"


def answered(room: Room, alice: Peer, bob: Peer) -> None:
    call_id = alice.place(video=True)
    room.settle()
    bob.do(call_id, AnswerCall())
    room.settle()
    room.wait(65)
    alice.do(call_id, HangUp())
    room.settle()


def callee_hangs_up(room: Room, alice: Peer, bob: Peer) -> None:
    call_id = alice.place()
    room.settle()
    bob.do(call_id, AnswerCall())
    room.settle()
    room.wait(12)
    bob.do(call_id, HangUp())
    room.settle()


def rejected(room: Room, alice: Peer, bob: Peer) -> None:
    call_id = alice.place()
    room.settle()
    bob.do(call_id, RejectCall())
    room.settle()


def caller_cancels(room: Room, alice: Peer, bob: Peer) -> None:
    alice.place()
    room.wait(3)
    alice.do(alice.manager.active_calls()[0].call_id, HangUp())
    room.settle()


def rings_out(room: Room, alice: Peer, bob: Peer) -> None:
    alice.place()
    room.wait(70)


def callee_refuses_unencrypted(room: Room, alice: Peer, bob: Peer) -> None:
    alice.place()
    room.strip_in_flight("org.sealcall.e2ee")  # an Element-family caller
    room.settle()


def caller_refuses_unencrypted_answer(room: Room, alice: Peer, bob: Peer) -> None:
    # The callee answers without encryption; the caller's policy refuses that answer.
    bob.policy = bob.manager.policy = CallPolicy(allow_unencrypted=True)
    call_id = alice.place()
    room.strip_in_flight("org.sealcall.e2ee")
    room.settle()
    bob.do(call_id, AnswerCall())
    room.settle()


def ice_never_connects(room: Room, alice: Peer, bob: Peer) -> None:
    room.media_ready = lambda *_: None  # type: ignore[method-assign]
    call_id = alice.place()
    room.settle()
    bob.do(call_id, AnswerCall())
    room.settle()
    while alice.call(call_id).state is not CallState.ENDED:
        alice.do(call_id, MediaFailed())
        room.wait(11)


def hung_up_while_connecting(room: Room, alice: Peer, bob: Peer) -> None:
    room.media_ready = lambda *_: None  # type: ignore[method-assign]
    call_id = alice.place()
    room.settle()
    bob.do(call_id, AnswerCall())
    room.settle()
    alice.do(call_id, HangUp())
    room.settle()


def hang_up_races_the_answer(room: Room, alice: Peer, bob: Peer) -> None:
    call_id = alice.place()
    room.settle()
    bob.do(call_id, AnswerCall())
    alice.do(call_id, HangUp())
    room.settle()


def no_invitee(then: Callable[[Room, Peer, Peer], None]) -> Callable[[Room, Peer, Peer], None]:
    """The same scenario with js-sdk's room-call invite, which names no invitee."""

    def scenario(room: Room, alice: Peer, bob: Peer) -> None:
        place = alice.place

        def place_without_invitee(video: bool = False) -> str:
            call_id = place(video)
            room.strip_in_flight("invitee")
            return call_id

        alice.place = place_without_invitee  # type: ignore[method-assign]
        then(room, alice, bob)

    return scenario


SCENARIOS = {
    "answered": answered,
    "callee_hangs_up": callee_hangs_up,
    "rejected": rejected,
    "caller_cancels": caller_cancels,
    "rings_out": rings_out,
    "callee_refuses_unencrypted": callee_refuses_unencrypted,
    "caller_refuses_unencrypted_answer": caller_refuses_unencrypted_answer,
    "ice_never_connects": ice_never_connects,
    "hung_up_while_connecting": hung_up_while_connecting,
    "hang_up_races_the_answer": hang_up_races_the_answer,
    "no_invitee_answered": no_invitee(answered),
    "no_invitee_cancelled": no_invitee(caller_cancels),
    "no_invitee_rings_out": no_invitee(rings_out),
}


def assert_agree(room: Room, *peers: Peer) -> None:
    members = sorted({p.user_id for p in room.peers})
    checked = 0
    for peer in peers:
        entries = {e.call_id: e for e in calls_from_timeline(room.timeline, peer.user_id, members)}
        for item in peer.history:
            entry = entries[item.call_id]
            seen = (entry.direction, entry.peer, entry.video, entry.outcome)
            assert seen == (item.direction, item.peer, item.video, item.outcome), peer.device_id
            if not item.answered_elsewhere:
                # The room measures from the selection, the device from media: one hop apart.
                assert entry.duration == pytest.approx(item.duration, abs=0.5)
            checked += 1
    assert checked


@pytest.mark.parametrize("name", SCENARIOS)
def test_room_history_agrees_with_each_device(name: str) -> None:
    room = Room()
    alice = room.add(ALICE, "ALICE")
    bob = room.add(BOB, "BOB")
    SCENARIOS[name](room, alice, bob)
    assert len(alice.history) == len(bob.history) == 1
    assert_agree(room, alice, bob)


def test_expected_outcomes_per_side() -> None:
    # The rules themselves, spelled out for the cases the issue names.
    expected = {
        "answered": (Outcome.ANSWERED, Outcome.ANSWERED),
        "caller_cancels": (Outcome.CANCELLED, Outcome.MISSED),
        "rings_out": (Outcome.MISSED, Outcome.MISSED),
        "callee_refuses_unencrypted": (Outcome.FAILED, Outcome.FAILED),
        "caller_refuses_unencrypted_answer": (Outcome.FAILED, Outcome.FAILED),
        "hung_up_while_connecting": (Outcome.ANSWERED, Outcome.ANSWERED),
        "hang_up_races_the_answer": (Outcome.CANCELLED, Outcome.MISSED),
    }
    for name, outcomes in expected.items():
        room = Room()
        alice, bob = room.add(ALICE, "ALICE"), room.add(BOB, "BOB")
        SCENARIOS[name](room, alice, bob)
        assert (alice.history[0].outcome, bob.history[0].outcome) == outcomes, name
        by_viewer = tuple(
            calls_from_timeline(room.timeline, viewer)[0].outcome for viewer in (ALICE, BOB)
        )
        assert by_viewer == outcomes, name


def test_refused_call_is_not_shown_as_answered() -> None:
    room = Room()
    alice, bob = room.add(ALICE, "ALICE"), room.add(BOB, "BOB")
    caller_refuses_unencrypted_answer(room, alice, bob)
    (entry,) = calls_from_timeline(room.timeline, ALICE)
    assert entry.describe() == f"{ALICE} -> {BOB}  voice  failed"
    assert entry.end_reason == "encryption_required"


def test_callee_of_a_room_call_without_invitee_is_named() -> None:
    room = Room()
    alice, bob = room.add(ALICE, "ALICE"), room.add(BOB, "BOB")
    no_invitee(rings_out)(room, alice, bob)
    assert "invitee" not in room.timeline[0].event["content"]
    (entry,) = calls_from_timeline(room.timeline, BOB, [ALICE, BOB])
    assert (entry.callee, entry.direction, entry.peer) == (BOB, Direction.INCOMING, ALICE)
    assert entry.describe() == f"{ALICE} -> {BOB}  voice  missed"


def test_answered_elsewhere_and_busy_agree() -> None:
    room = Room()
    alice = room.add(ALICE, "ALICE")
    phone = room.add(BOB, "BOBPHONE")
    laptop = room.add(BOB, "BOBLAPTOP")
    answered_by = phone
    call_id = alice.place()
    room.settle()
    answered_by.do(call_id, AnswerCall())
    room.settle()
    room.wait(20)
    alice.do(call_id, HangUp())
    room.settle()
    assert laptop.history[0].answered_elsewhere
    assert_agree(room, alice, phone, laptop)

    room = Room()
    alice = room.add(ALICE, "ALICE")
    bob = room.add(BOB, "BOB", CallPolicy(busy=BusyPolicy.REJECT))
    carol = room.add("@carol:local", "CAROL")
    first, out = alice.manager.place_call(ROOM, BOB, room.now)
    alice.run(out)
    room.settle()
    bob.do(first.call_id, AnswerCall())
    room.settle()
    second, out = carol.manager.place_call(ROOM, BOB, room.now)
    carol.run(out)
    room.settle()
    assert carol.history[0].outcome is Outcome.BUSY
    assert_agree(room, carol, bob)
    assert bob.history[0].call_id == second.call_id
    assert bob.history[0].direction is Direction.INCOMING

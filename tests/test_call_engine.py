"""The call engine without I/O: whole sequences of states and sent events, on a fake clock."""

import pytest

from call_harness import Room
from sealcall.calls import (
    ANSWERED_ELSEWHERE,
    ENCRYPTION_REQUIRED,
    AnswerCall,
    BusyPolicy,
    CallPolicy,
    CallState,
    CallWaiting,
    Direction,
    HangUp,
    IllegalTransitionError,
    IncomingCall,
    LocalMediaFailed,
    MediaConnected,
    MediaFailed,
    Outcome,
    RejectCall,
    SetHold,
    SetMuted,
    SetScreenShare,
    UnencryptedCallError,
    UpgradeToVideo,
    actions,
)
from sealcall.signaling import CallHangup, CallInvite, HangupReason

S = CallState


def two_peers(**policy: object) -> tuple[Room, "object", "object"]:
    room = Room()
    return (
        room,
        room.add("@alice:local", "ALICE", CallPolicy(**policy)),
        room.add("@bob:local", "BOB", CallPolicy(**policy)),
    )  # type: ignore[arg-type]


def connected_call(video: bool = False) -> tuple[Room, object, object, str]:
    room, alice, bob = two_peers()
    call_id = alice.place(video=video)
    room.settle()
    bob.do(call_id, AnswerCall())
    room.settle()
    assert alice.call(call_id).state is S.CONNECTED
    assert bob.call(call_id).state is S.CONNECTED
    return room, alice, bob, call_id


def test_normal_call() -> None:
    room, alice, bob = two_peers()
    call_id = alice.place()
    room.settle()
    assert [type(n) for n in bob.notices] == [IncomingCall]
    bob.do(call_id, AnswerCall())
    room.settle()
    room.wait(30)
    alice.do(call_id, HangUp())
    room.settle()
    assert alice.states[call_id] == [
        S.CREATE_OFFER,
        S.INVITE_SENT,
        S.CONNECTING,
        S.CONNECTED,
        S.ENDED,
    ]
    assert bob.states[call_id] == [S.RINGING, S.CREATE_ANSWER, S.CONNECTING, S.CONNECTED, S.ENDED]
    assert alice.sent_types() == ["invite", "select_answer", "hangup"]
    assert bob.sent_types() == ["answer"]
    (a,), (b,) = alice.history, bob.history
    assert (a.direction, a.outcome, a.video) == (Direction.OUTGOING, Outcome.ANSWERED, False)
    assert (b.direction, b.outcome) == (Direction.INCOMING, Outcome.ANSWERED)
    assert a.duration == pytest.approx(30, abs=0.5)
    assert a.encrypted
    assert b.encrypted
    # Both sides derived the same media keys from the invite and the answer.
    a_keys = next(m.keys for m in alice.media if isinstance(m, actions.UseMediaKeys))
    b_keys = next(m.keys for m in bob.media if isinstance(m, actions.UseMediaKeys))
    assert a_keys.send == b_keys.receive
    assert a_keys.receive == b_keys.send


def test_reject() -> None:
    room, alice, bob = two_peers()
    call_id = alice.place()
    room.settle()
    bob.do(call_id, RejectCall())
    room.settle()
    assert alice.states[call_id] == [S.CREATE_OFFER, S.INVITE_SENT, S.ENDED]
    assert bob.states[call_id] == [S.RINGING, S.ENDED]
    assert alice.sent_types() == ["invite", "select_answer"]
    assert bob.sent_types() == ["reject"]
    assert [h.outcome for h in alice.history + bob.history] == [Outcome.REJECTED] * 2


def test_caller_cancels() -> None:
    room, alice, bob = two_peers()
    call_id = alice.place()
    room.settle()
    alice.do(call_id, HangUp())
    room.settle()
    assert bob.states[call_id] == [S.RINGING, S.ENDED]
    assert alice.sent_types() == ["invite", "hangup"]
    assert bob.sent_types() == []
    assert (alice.history[0].outcome, bob.history[0].outcome) == (Outcome.CANCELLED, Outcome.MISSED)


def test_ring_timeout() -> None:
    room, alice, bob = two_peers(invite_lifetime_ms=20_000)
    call_id = alice.place()
    room.settle()
    room.wait(19)
    assert bob.call(call_id).state is S.RINGING
    room.wait(2)
    assert alice.sent_types() == ["invite", "hangup"]
    assert alice.sent[-1].reason == "invite_timeout"
    assert bob.call(call_id).state is S.ENDED
    assert [h.outcome for h in alice.history + bob.history] == [Outcome.MISSED] * 2


def test_invite_older_than_its_lifetime_never_rings() -> None:
    room, alice, bob = two_peers(invite_lifetime_ms=5_000)
    room.extra_delay["m.call.invite"] = 6.0
    call_id = alice.place()
    room.settle()
    assert bob.notices == []
    assert bob.states[call_id] == [S.RINGING, S.ENDED]  # recorded, never announced
    assert bob.history[0].outcome is Outcome.MISSED


def test_glare_ends_in_one_connected_call() -> None:
    room, alice, bob = two_peers()
    a_call = alice.place()
    b_call = bob.place()
    room.settle()
    survivor = min(a_call, b_call)
    loser = max(a_call, b_call)
    for peer in (alice, bob):
        assert peer.call(survivor).state is S.CONNECTED
        active = [c.call_id for c in peer.manager.active_calls()]
        assert active == [survivor]
    assert bob.call(loser).state is S.ENDED
    assert bob.call(loser).end_reason == "replaced"
    assert loser not in alice.manager.calls
    bob.do(survivor, HangUp())
    room.settle()
    assert [h.call_id for h in alice.history] == [survivor]
    assert [h.call_id for h in bob.history] == [survivor]
    assert alice.notices == []
    assert bob.notices == []


def test_call_waiting_then_switch() -> None:
    room = Room()
    alice = room.add("@alice:local", "ALICE")
    bob = room.add("@bob:local", "BOB")
    carol = room.add("@carol:local", "CAROL")
    first = alice.manager.place_call("!dm:local", "@bob:local", room.now)
    alice.run(first[1])
    room.settle()
    bob.do(first[0].call_id, AnswerCall())
    room.settle()
    second, out = carol.manager.place_call("!dm:local", "@bob:local", room.now)
    carol.run(out)
    room.settle()
    waiting = [n for n in bob.notices if isinstance(n, CallWaiting)]
    assert len(waiting) == 1
    assert waiting[0].current.call_id == first[0].call_id
    assert bob.call(second.call_id).state is S.RINGING
    # The user holds the first call and answers the second.
    bob.do(first[0].call_id, SetHold(True))
    bob.do(second.call_id, AnswerCall())
    room.settle()
    assert bob.call(second.call_id).state is S.CONNECTED
    assert bob.call(first[0].call_id).state is S.CONNECTED
    assert bob.call(first[0].call_id).on_hold
    assert alice.call(first[0].call_id).remote_on_hold


def test_busy_policy_answers_user_busy() -> None:
    room = Room()
    alice = room.add("@alice:local", "ALICE")
    bob = room.add("@bob:local", "BOB", CallPolicy(busy=BusyPolicy.REJECT))
    carol = room.add("@carol:local", "CAROL")
    first, out = alice.manager.place_call("!dm:local", "@bob:local", room.now)
    alice.run(out)
    room.settle()
    bob.do(first.call_id, AnswerCall())
    room.settle()
    second, out = carol.manager.place_call("!dm:local", "@bob:local", room.now)
    carol.run(out)
    room.settle()
    # A reject, not a hang-up: matrix-js-sdk ignores a hang-up before it picked a callee.
    assert bob.sent_types(second.call_id) == ["reject"]
    assert bob.sent[-1].reason == "user_busy"
    assert carol.history[0].outcome is Outcome.BUSY
    assert bob.history[-1].outcome is Outcome.BUSY
    assert bob.call(first.call_id).state is S.CONNECTED


def test_answered_on_another_device() -> None:
    room = Room()
    alice = room.add("@alice:local", "ALICE")
    phone = room.add("@bob:local", "BOBPHONE")
    laptop = room.add("@bob:local", "BOBLAPTOP")
    call_id = alice.place()
    room.settle()
    assert phone.call(call_id).state is laptop.call(call_id).state is S.RINGING
    phone.do(call_id, AnswerCall())
    room.settle()
    assert phone.call(call_id).state is S.CONNECTED
    assert laptop.call(call_id).state is S.ENDED
    assert laptop.call(call_id).end_reason == ANSWERED_ELSEWHERE
    assert laptop.sent == []
    assert laptop.history[0].answered_elsewhere
    select = [e for e in alice.sent if e.TYPE == "m.call.select_answer"]
    assert [e.selected_party_id for e in select] == ["BOBPHONE"]


def test_ice_restart_then_recovery() -> None:
    room, alice, bob, call_id = connected_call()
    alice.do(call_id, MediaFailed())
    bob.do(call_id, MediaFailed())
    room.settle()
    restart = [m for m in alice.media if isinstance(m, actions.CreateOffer) and m.ice_restart]
    assert len(restart) == 1
    assert alice.sent_types() == ["invite", "select_answer", "negotiate"]
    assert bob.sent_types() == ["answer", "negotiate"]
    alice.do(call_id, MediaConnected())
    bob.do(call_id, MediaConnected())
    room.wait(60)
    assert alice.call(call_id).state is bob.call(call_id).state is S.CONNECTED


def test_ice_failure_hangs_up() -> None:
    room, alice, bob, call_id = connected_call()
    for _ in range(4):
        alice.do(call_id, MediaFailed())
        room.settle()
    restarts = [m for m in alice.media if isinstance(m, actions.CreateOffer) and m.ice_restart]
    assert len(restarts) == 3  # ice_restart_attempts; the call waits for its reconnect deadline
    assert alice.call(call_id).state is S.RECONNECTING
    room.wait(CallPolicy().reconnect_timeout)
    assert alice.sent[-1].TYPE == "m.call.hangup"
    assert alice.sent[-1].reason == "ice_timeout"  # media had flowed before
    assert bob.call(call_id).state is S.ENDED
    assert alice.history[0].outcome is Outcome.ANSWERED


def test_ice_never_connects_hangs_up_ice_failed() -> None:
    room, alice, bob = two_peers(ice_restart_attempts=1, ice_restart_timeout=5)
    room._ready.clear()
    call_id = alice.place()
    room.settle()
    room.media_ready = lambda *_: None  # type: ignore[method-assign]
    bob.do(call_id, AnswerCall())
    room.settle()
    alice.do(call_id, MediaFailed())
    room.settle()
    room.wait(6)
    assert alice.sent[-1].reason == "ice_failed"
    assert [h.outcome for h in alice.history + bob.history] == [Outcome.FAILED] * 2


def test_hold_and_resume() -> None:
    room, alice, bob, call_id = connected_call()
    alice.do(call_id, SetHold(True))
    room.settle()
    holds = [m.on_hold for m in bob.media if isinstance(m, actions.RemoteHoldChanged)]
    assert holds == [True]
    alice.do(call_id, SetHold(False))
    room.settle()
    assert [m.on_hold for m in bob.media if isinstance(m, actions.RemoteHoldChanged)] == [
        True,
        False,
    ]
    assert alice.sent_types().count("negotiate") == 2
    assert bob.sent_types().count("negotiate") == 2


def test_audio_to_video_upgrade_and_mute_metadata() -> None:
    room, alice, bob, call_id = connected_call(video=False)
    assert bob.call(call_id).remote_streams["ALICE-um"].video_muted
    alice.do(call_id, UpgradeToVideo())
    room.settle()
    offer = [m for m in alice.media if isinstance(m, actions.CreateOffer)][-1]
    assert offer.video
    assert not bob.call(call_id).remote_streams["ALICE-um"].video_muted
    alice.do(call_id, SetMuted(audio=True))
    room.settle()
    assert alice.sent_types()[-1] == "sdp_stream_metadata_changed"
    assert bob.call(call_id).remote_streams["ALICE-um"].audio_muted


def test_screenshare_start_and_stop() -> None:
    room, alice, bob, call_id = connected_call(video=True)
    alice.do(call_id, SetScreenShare(True))
    room.settle()
    purposes = {m.purpose for m in bob.call(call_id).remote_streams.values()}
    assert purposes == {"m.usermedia", "m.screenshare"}
    alice.do(call_id, SetScreenShare(False))
    room.settle()
    assert {m.purpose for m in bob.call(call_id).remote_streams.values()} == {"m.usermedia"}


def test_unencrypted_peer_is_refused_unless_policy_allows() -> None:
    room, alice, bob = two_peers()
    call_id = alice.place()
    # As a client without sealcall sends it: no E2EE offer.
    room.strip_in_flight("org.sealcall.e2ee")
    room.settle()
    assert bob.notices == []
    assert bob.history[0].end_reason == ENCRYPTION_REQUIRED
    assert alice.call(call_id).end_reason == ENCRYPTION_REQUIRED
    assert alice.history[0].outcome is Outcome.FAILED

    room, alice, bob = two_peers(allow_unencrypted=True)
    call_id = alice.place()
    room.strip_in_flight("org.sealcall.e2ee")
    room.settle()
    assert bob.call(call_id).state is S.RINGING
    assert not bob.call(call_id).encrypted
    bob.do(call_id, AnswerCall())
    assert any(isinstance(m, actions.AllowUnencryptedMedia) for m in bob.media)


def test_a_ringing_call_is_refused_with_a_reject_that_says_why() -> None:
    # Issue 8, item 6: refusing an invite we never answered is m.call.reject (MSC2746).
    room, alice, bob = two_peers()
    alice.place()
    room.strip_in_flight("org.sealcall.e2ee")  # as an Element-family caller sends it
    room.settle()
    assert bob.sent_types() == ["reject"]
    reject = bob.sent[0]
    assert reject.reason == "unknown_error"
    assert reject.extra == {"org.sealcall.reason": ENCRYPTION_REQUIRED}
    # The caller shows the refusal with our reason, not as a plain "rejected".
    assert alice.sent_types() == ["invite", "select_answer"]
    assert [h.outcome for h in alice.history + bob.history] == [Outcome.FAILED] * 2
    assert [h.end_reason for h in alice.history + bob.history] == [ENCRYPTION_REQUIRED] * 2


def test_ask_policy_rings_an_unencrypted_call_and_answering_needs_the_opt_in() -> None:
    # Issue 8, item 8: the application asks the user about a call that cannot be encrypted.
    room = Room()
    alice = room.add("@alice:local", "ALICE", CallPolicy(allow_unencrypted=True))
    bob = room.add("@bob:local", "BOB", CallPolicy(ask_unencrypted=True))
    call_id = alice.place()
    room.strip_in_flight("org.sealcall.e2ee")  # as an Element-family caller sends it
    room.settle()
    assert [type(n) for n in bob.notices] == [IncomingCall]
    assert not bob.call(call_id).encrypted
    with pytest.raises(UnencryptedCallError):
        bob.do(call_id, AnswerCall())
    assert bob.call(call_id).state is S.RINGING
    assert bob.sent == []
    bob.do(call_id, AnswerCall(allow_unencrypted=True))
    room.settle()
    assert alice.call(call_id).state is bob.call(call_id).state is S.CONNECTED
    assert any(isinstance(m, actions.AllowUnencryptedMedia) for m in bob.media)
    alice.do(call_id, HangUp())
    room.settle()
    assert [(h.outcome, h.encrypted) for h in alice.history + bob.history] == [
        (Outcome.ANSWERED, False)
    ] * 2


def test_declining_an_unencrypted_call_tells_the_caller_why() -> None:
    room = Room()
    alice = room.add("@alice:local", "ALICE")
    bob = room.add("@bob:local", "BOB", CallPolicy(ask_unencrypted=True))
    call_id = alice.place()
    room.strip_in_flight("org.sealcall.e2ee")
    room.settle()
    bob.do(call_id, RejectCall(encryption_required=True))
    room.settle()
    assert bob.sent_types() == ["reject"]
    assert alice.call(call_id).end_reason == ENCRYPTION_REQUIRED
    assert [h.outcome for h in alice.history + bob.history] == [Outcome.FAILED] * 2


def test_glare_never_merges_into_an_unencrypted_call_without_the_opt_in() -> None:
    room = Room()
    alice = room.add("@alice:local", "ALICE", CallPolicy(allow_unencrypted=True))
    bob = room.add("@bob:local", "BOB", CallPolicy(ask_unencrypted=True))
    alice_call = alice.place()
    bob.place()
    room.strip_in_flight("org.sealcall.e2ee")
    room.settle()  # bob's call (the larger id) would yield and auto-answer alice's
    assert bob.sent_types(alice_call) == ["reject"]
    assert not any(isinstance(m, actions.AllowUnencryptedMedia) for m in bob.media)
    assert alice.history[0].end_reason == ENCRYPTION_REQUIRED


def test_local_media_failure_before_the_answer_is_a_reject() -> None:
    room, alice, bob = two_peers()
    call_id = alice.place()
    room.settle()
    bob.do(call_id, LocalMediaFailed("no microphone"))
    room.settle()
    assert bob.sent_types() == ["reject"]
    assert bob.sent[0].reason == "user_media_failed"
    assert alice.history[0].outcome is bob.history[0].outcome is Outcome.FAILED
    assert alice.history[0].end_reason == "user_media_failed"


def test_illegal_local_command_names_state_and_event() -> None:
    _room, alice, _ = two_peers()
    call_id = alice.place()
    with pytest.raises(
        IllegalTransitionError, match="AnswerCall is not allowed in state invite_sent"
    ):
        alice.do(call_id, AnswerCall())


def test_candidates_before_the_invite_are_kept() -> None:
    room, alice, bob = two_peers()
    room.extra_delay["m.call.invite"] = 1.0
    call_id = alice.place()
    from sealcall.signaling import CallCandidates, Candidate

    alice.run(
        alice.manager._wrap(  # the media layer gathered one more candidate
            alice.call(call_id),
            [
                actions.SendEvent(
                    CallCandidates(
                        call_id=call_id,
                        party_id="ALICE",
                        candidates=(Candidate(candidate="c1", sdp_mid="0"),),
                    )
                )
            ],
        )
    )
    room.settle()
    bob.do(call_id, AnswerCall())
    added = [m for m in bob.media if isinstance(m, actions.AddRemoteCandidates)]
    assert [c.candidate for c in added[0].candidates] == ["c1"]


def test_remote_event_in_wrong_state_is_dropped() -> None:
    room, alice, bob, call_id = connected_call()
    invite = next(e for e in alice.sent if isinstance(e, CallInvite))
    from sealcall.calls import RemoteEvent

    assert (
        bob.manager.handle_remote(RemoteEvent("!dm:local", "@alice:local", invite), room.now) == []
    )
    assert bob.call(call_id).state is S.CONNECTED
    assert HangupReason.USER_BUSY.value == "user_busy"


def test_renegotiation_glare_caller_wins_and_callee_offers_again() -> None:
    room, alice, bob, call_id = connected_call()
    alice.do(call_id, SetHold(True))
    bob.do(call_id, UpgradeToVideo())
    room.settle()
    # Both offers crossed; Bob (polite) withdrew his, answered Alice's, then offered again,
    # while Alice (impolite) ignored Bob's first offer.
    assert any(isinstance(m, actions.RollbackLocalOffer) for m in bob.media)
    negotiates = [e for e in bob.sent if e.TYPE == "m.call.negotiate"]
    assert [e.description.type for e in negotiates] == ["offer", "answer", "offer"]
    assert [e.description.type for e in alice.sent if e.TYPE == "m.call.negotiate"] == [
        "offer",
        "answer",
    ]
    assert alice.call(call_id).remote_streams["BOB-um"].video_muted is False
    assert bob.call(call_id).remote_on_hold
    assert alice.call(call_id)._answer_deadline is None
    assert bob.call(call_id)._answer_deadline is None


def test_unanswered_renegotiation_times_out_and_the_next_one_runs() -> None:
    room, alice, bob, call_id = connected_call()
    room.peers.remove(bob)  # Bob's device is gone for a while: nothing reaches it
    alice.do(call_id, SetHold(True))
    alice.do(call_id, SetScreenShare(True))  # queued behind the hold
    room.wait(61)
    offers = [m for m in alice.media if isinstance(m, actions.CreateOffer)]
    assert [(o.on_hold, o.screenshare) for o in offers][-2:] == [(True, False), (True, True)]


def test_events_from_a_third_member_are_dropped() -> None:
    room, alice, _bob, call_id = connected_call()
    from sealcall.calls import RemoteEvent

    mallory_hangup = CallHangup(call_id=call_id, party_id="BOB", reason="user_hangup")
    out = alice.manager.handle_remote(
        RemoteEvent("!dm:local", "@mallory:local", mallory_hangup), room.now
    )
    assert out == []
    assert alice.call(call_id).state is S.CONNECTED
    assert alice.manager.dropped_events == 1


def test_stale_invite_in_glare_does_not_end_our_call() -> None:
    room, alice, _bob = two_peers(invite_lifetime_ms=5_000)
    a_call = alice.place()
    room.settle()
    from sealcall.calls import RemoteEvent

    stale = CallInvite(
        call_id="0-older",  # smaller id: would win glare if it counted
        party_id="BOB",
        lifetime=5_000,
        offer=next(e for e in alice.sent if isinstance(e, CallInvite)).offer,
    )
    out = alice.manager.handle_remote(
        RemoteEvent("!dm:local", "@bob:local", stale, age_ms=60_000), room.now
    )
    assert alice.call(a_call).state is S.INVITE_SENT
    assert not any(isinstance(a.action, actions.SendEvent) for a in out)


def test_ended_calls_are_forgotten_but_their_late_events_still_ignored() -> None:
    room, alice, bob, call_id = connected_call()
    alice.do(call_id, HangUp())
    room.settle()
    late_invite = next(e for e in alice.sent if isinstance(e, CallInvite))
    room.wait(601)
    from sealcall.calls import RemoteEvent

    bob.manager.forget_ended(room.now)
    assert call_id not in bob.manager.calls
    # The invite replayed later does not ring again.
    assert (
        bob.manager.handle_remote(RemoteEvent("!dm:local", "@alice:local", late_invite), room.now)
        == []
    )

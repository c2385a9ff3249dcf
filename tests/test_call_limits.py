"""The call engine against vanished peers and hostile callers, without I/O, on a fake clock:
closed media, candidate floods, endless invite lifetimes, unusable call keys and offers."""

import base64
from typing import Any

import pytest

from call_harness import Peer, Room
from sealcall.calls import (
    ENCRYPTION_REQUIRED,
    AnswerCall,
    CallPolicy,
    CallState,
    HangUp,
    MediaClosed,
    MediaFailed,
    Outcome,
    UpgradeToVideo,
    actions,
)
from sealcall.calls.offer_check import unprotectable_media
from sealcall.signaling import CallCandidates, Candidate

S = CallState
E2EE = "org.sealcall.e2ee"


def peers(**policy: Any) -> tuple[Room, Peer, Peer]:
    room = Room()
    alice = room.add("@alice:local", "ALICE", CallPolicy(**policy))
    bob = room.add("@bob:local", "BOB", CallPolicy(**policy))
    return room, alice, bob


def connected(**policy: Any) -> tuple[Room, Peer, Peer, str]:
    room, alice, bob = peers(**policy)
    call_id = alice.place()
    room.settle()
    bob.do(call_id, AnswerCall())
    room.settle()
    assert alice.call(call_id).state is bob.call(call_id).state is S.CONNECTED
    return room, alice, bob, call_id


def send_candidates(peer: Peer, call_id: str, count: int, tag: str = "c") -> None:
    """``peer`` sends one m.call.candidates event with ``count`` candidates."""
    candidates = tuple(Candidate(candidate=f"{tag}{i}", sdp_mid="0") for i in range(count))
    event = CallCandidates(call_id=call_id, party_id=peer.device_id, candidates=candidates)
    peer.run(peer.manager._wrap(peer.call(call_id), [actions.SendEvent(event)]))


def added_candidates(peer: Peer) -> list[str]:
    return [
        c.candidate
        for m in peer.media
        if isinstance(m, actions.AddRemoteCandidates)
        for c in m.candidates
    ]


def edit_in_flight(room: Room, event_type: str, edit: Any) -> None:
    """Let ``edit`` change the content of every ``event_type`` event in flight (a hostile or
    foreign sender)."""
    for _, _, _, data, _ in room._queue:
        if data["type"] == event_type:
            edit(data["content"])


# -- a connection that closes under a live call ----------------------------------------------


@pytest.mark.parametrize("side", ["caller", "callee"])
def test_closed_connection_ends_the_call_as_ice_timeout_at_the_ice_deadline(side: str) -> None:
    room, alice, bob, call_id = connected(ice_restart_timeout=5)
    vanished, survivor = (bob, alice) if side == "caller" else (alice, bob)
    room.wait(60)
    vanished.room = Room()  # the far side is gone: nothing it sends arrives any more
    survivor.do(call_id, MediaClosed())
    room.wait(4.9)
    assert survivor.call(call_id).state is S.CONNECTED  # a hang-up may still be on its way
    room.wait(0.2)
    call = survivor.call(call_id)
    assert call.state is S.ENDED
    assert call.end_reason == "ice_timeout"
    assert survivor.sent[-1].TYPE == "m.call.hangup"
    assert survivor.sent[-1].reason == "ice_timeout"
    (item,) = survivor.history
    assert (item.outcome, item.end_reason) == (Outcome.ANSWERED, "ice_timeout")
    assert item.duration == pytest.approx(65, abs=0.2)
    assert survivor.manager.active_calls() == []  # the next call rings, not as call waiting


def test_hang_up_arriving_after_the_media_closed_keeps_its_reason() -> None:
    room, alice, bob, call_id = connected()
    bob.do(call_id, HangUp())  # bob's media closes at once; his hang-up is still travelling
    alice.do(call_id, MediaClosed())
    room.settle()
    assert alice.call(call_id).end_reason == "user_hangup"
    assert "hangup" not in alice.sent_types()
    assert alice.history[0].outcome is Outcome.ANSWERED


def test_restart_then_closed_connection_ends_at_the_earlier_deadline() -> None:
    room, _, bob, call_id = connected(ice_restart_timeout=5, ice_restart_attempts=3)
    bob.do(call_id, MediaFailed())  # the callee waits for the caller's restarts: 15 s
    room.wait(1)
    bob.do(call_id, MediaClosed())
    room.wait(5.1)
    assert bob.call(call_id).end_reason == "ice_timeout"


# -- candidate floods -----------------------------------------------------------------------------


def test_candidates_for_a_ringing_call_are_capped() -> None:
    room, alice, bob = peers(max_remote_candidates=200)
    call_id = alice.place()
    for batch in range(5):
        send_candidates(alice, call_id, 100, tag=f"r{batch}-")
    room.settle()
    call = bob.call(call_id)
    assert call.state is S.RINGING
    assert call.dropped_candidates == 300
    bob.do(call_id, AnswerCall())
    room.settle()
    added = added_candidates(bob)
    assert len(added) == 200
    assert added[0] == "r0-0"
    # Once the budget is spent, later candidates of the call are dropped as well.
    send_candidates(alice, call_id, 10)
    room.settle()
    assert len(added_candidates(bob)) == 200
    assert call.dropped_candidates == 310
    assert call.state is S.CONNECTED


def test_candidates_before_the_invite_are_capped_per_call() -> None:
    room, alice, bob = peers(max_remote_candidates=200)
    room.extra_delay["m.call.invite"] = 1.0
    call_id = alice.place()
    for batch in range(5):
        send_candidates(alice, call_id, 100, tag=f"e{batch}-")
    room.settle()
    assert bob.manager.dropped_events == 3
    bob.do(call_id, AnswerCall())
    assert len(added_candidates(bob)) == 200


def test_early_events_are_forgotten_after_the_longest_invite_lifetime() -> None:
    room, alice, bob = peers(max_invite_lifetime_ms=30_000)
    room.extra_delay["m.call.invite"] = 1_000.0  # the invite never comes in time
    call_id = alice.place()
    send_candidates(alice, call_id, 10)
    room.wait(29)
    assert call_id in bob.manager._early
    room.wait(2)  # no further event needed: the manager's own timer forgets them
    assert call_id not in bob.manager._early
    assert bob.manager.dropped_events == 1


# -- invite lifetimes -----------------------------------------------------------------------------


def test_an_endless_invite_lifetime_rings_at_most_the_cap() -> None:
    room = Room()
    alice = room.add("@alice:local", "ALICE", CallPolicy(invite_lifetime_ms=2**53 - 1))
    bob = room.add("@bob:local", "BOB", CallPolicy())  # caps at 120 s
    call_id = alice.place()
    room.settle()
    assert bob.call(call_id).state is S.RINGING
    room.wait(119)
    assert bob.call(call_id).state is S.RINGING
    room.wait(2)
    assert bob.call(call_id).end_reason == "invite_timeout"
    assert bob.history[0].outcome is Outcome.MISSED


def test_an_endless_invite_older_than_the_cap_never_rings() -> None:
    room = Room()
    alice = room.add("@alice:local", "ALICE", CallPolicy(invite_lifetime_ms=2**53 - 1))
    bob = room.add("@bob:local", "BOB", CallPolicy())
    room.extra_delay["m.call.invite"] = 121.0  # e.g. delivered again after a restart
    call_id = alice.place()
    room.settle()
    assert bob.notices == []
    assert bob.call(call_id).end_reason == "invite_timeout"


def test_ended_calls_are_forgotten_without_further_events() -> None:
    room, alice, bob, call_id = connected()
    alice.do(call_id, HangUp())
    room.settle()
    room.wait(601)
    assert call_id not in alice.manager.calls
    assert call_id not in bob.manager.calls
    assert alice.manager.next_deadline() is None


# -- unusable call keys and offers ---------------------------------------------------------------

P = 2**255 - 19
LOW_ORDER_POINTS = {
    "zero": 0,
    "one": 1,
    "order 8": 0x00B8495F16056286FDB1329CEB8D09DA6AC49FF1FAE35616AEB8413B7C7AEBE0,
    "p - 1": P - 1,
    "p (non-canonical zero)": P,
    "p + 1 (non-canonical one)": P + 1,
}


@pytest.mark.parametrize("name", LOW_ORDER_POINTS)
def test_low_order_call_key_is_refused_on_arrival_and_never_rings(name: str) -> None:
    room, alice, bob = peers()
    call_id = alice.place()
    key = LOW_ORDER_POINTS[name].to_bytes(32, "little")
    text = base64.urlsafe_b64encode(key).decode().rstrip("=")
    edit_in_flight(room, "m.call.invite", lambda c: c[E2EE].update(public_key=text))
    room.settle()
    assert bob.notices == []
    assert bob.states[call_id] == [S.RINGING, S.ENDED]
    assert (bob.history[0].end_reason, bob.history[0].outcome) == (
        ENCRYPTION_REQUIRED,
        Outcome.FAILED,
    )
    assert alice.call(call_id).end_reason == ENCRYPTION_REQUIRED


def only_pcmu(content: dict[str, Any], key: str = "offer") -> None:
    sdp = content[key]["sdp"]
    content[key]["sdp"] = sdp.replace("opus/48000/2", "PCMU/8000")


def test_offer_without_encryptable_codecs_is_refused_as_encryption_required() -> None:
    room, alice, bob = peers()
    call_id = alice.place()
    edit_in_flight(room, "m.call.invite", only_pcmu)
    room.settle()
    assert bob.notices == []
    assert bob.history[0].end_reason == ENCRYPTION_REQUIRED
    assert not any(isinstance(m, actions.CreateAnswer) for m in bob.media)
    assert alice.call(call_id).end_reason == ENCRYPTION_REQUIRED
    assert alice.history[0].outcome is Outcome.FAILED


def test_unencrypted_call_is_not_refused_for_its_codecs() -> None:
    # Allowed plaintext (the user's explicit choice) is not an encryption refusal.
    room, alice, bob = peers(allow_unencrypted=True)
    call_id = alice.place()
    room.strip_in_flight(E2EE)
    edit_in_flight(room, "m.call.invite", only_pcmu)
    room.settle()
    assert bob.call(call_id).state is S.RINGING


def test_renegotiation_offer_without_encryptable_video_ends_the_call() -> None:
    room, alice, bob, call_id = connected()
    alice.do(call_id, UpgradeToVideo())
    edit_in_flight(
        room,
        "m.call.negotiate",
        lambda c: c["description"].update(sdp=c["description"]["sdp"].replace("VP8", "H265")),
    )
    room.settle()
    assert bob.call(call_id).end_reason == ENCRYPTION_REQUIRED
    assert alice.call(call_id).end_reason == ENCRYPTION_REQUIRED
    assert bob.sent_types(call_id)[-1] == "hangup"


def test_unprotectable_media_reads_codecs_per_section() -> None:
    def sdp(*sections: str) -> str:
        return "v=0\r\ns=-\r\n" + "".join(sections)

    opus = (
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 OPUS/48000/2\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    pcmu = "m=audio 9 UDP/TLS/RTP/SAVPF 0 8\r\na=rtpmap:0 PCMU/8000\r\n"
    static = "m=audio 9 RTP/AVP 0 8\r\n"  # static payload types, no rtpmap
    vp8 = "m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\n"
    h265 = (
        "m=video 9 UDP/TLS/RTP/SAVPF 98 99\r\na=rtpmap:98 H265/90000\r\na=rtpmap:99 rtx/90000\r\n"
    )
    opus_in_video = "m=video 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
    rejected = "m=video 0 UDP/TLS/RTP/SAVPF 98\r\na=rtpmap:98 H265/90000\r\n"
    data = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
    assert unprotectable_media(sdp(opus, vp8, rejected, data)) == []
    assert unprotectable_media(sdp(pcmu)) == ["audio"]
    assert unprotectable_media(sdp(static, vp8)) == ["audio"]
    assert unprotectable_media(sdp(opus, h265)) == ["video"]
    assert unprotectable_media(sdp(opus_in_video)) == ["video"]


def test_connection_closing_after_the_call_ended_is_ignored() -> None:
    # The far side's hang-up is processed first; its connection's close is reported after.
    room, alice, bob, call_id = connected()
    bob.do(call_id, HangUp())
    room.settle()
    before = len(alice.sent)
    alice.do(call_id, MediaClosed())
    alice.do(call_id, MediaFailed())
    assert len(alice.sent) == before
    assert alice.call(call_id).end_reason == "user_hangup"

"""The mesh's pair signaling: the to-device envelope around 1:1 call events, the checks and
ordering of what arrives, the buffer for messages ahead of their sender's membership, and the
pair retry policy."""

import json
from typing import Any

import pytest

from call_harness import fake_sdp
from sealcall.calls import (
    CallManager,
    CallPolicy,
    CallState,
    Direction,
    IncomingCall,
    LocalDescriptionReady,
    PlaceCall,
    RemoteEvent,
    actions,
)
from sealcall.calls.call import Call
from sealcall.group import (
    Dropped,
    GiveUp,
    MemberDevice,
    MembershipEvent,
    MembershipTable,
    MemberStateEvent,
    MeshInbox,
    MeshSender,
    PairRetry,
    PeerSignal,
    RetryAt,
    SignalEnvelope,
    is_deliberate,
    member_state_key,
    mesh_member,
    pair_call_id,
    unwrap_signal,
    wrap_signal,
)
from sealcall.group.mesh_signaling import pair_attempt, pair_call_prefix
from sealcall.signaling import (
    CallCandidates,
    CallHangup,
    CallInvite,
    Candidate,
    FieldTypeError,
    MissingFieldError,
    SignalingError,
    StreamPurpose,
    UnknownEventTypeError,
)
from sealcall.transport.matrix.to_device import DeviceMessage

ROOM = "!room:hs"
ALICE = MemberDevice("@alice:hs", "ADEV")
BOB = MemberDevice("@bob:hs", "BDEV")
CAROL = MemberDevice("@carol:hs", "CDEV")
NOW_MS = 1_700_000_000_000


class Members:
    """A real membership table, driven by member state events."""

    def __init__(self) -> None:
        self.table = MembershipTable(own=BOB)
        self.table.set_joined_users([d.user_id for d in (ALICE, BOB, CAROL)], NOW_MS)

    def join(self, device: MemberDevice, session: str) -> list[MembershipEvent]:
        content = mesh_member(
            device_id=device.device_id, membership_id=session, created_ts=NOW_MS, expires=3_600_000
        ).to_json()
        return self._state(device, content)

    def leave(self, device: MemberDevice) -> list[MembershipEvent]:
        return self._state(device, {})

    def _state(self, device: MemberDevice, content: dict[str, Any]) -> list[MembershipEvent]:
        key = member_state_key(device.user_id, device.device_id)
        return self.table.handle(MemberStateEvent(device.user_id, key, content, NOW_MS), NOW_MS)


def inbox(**kwargs: Any) -> MeshInbox:
    return MeshInbox(ROOM, BOB, "bob-1", **kwargs)


def joined_inbox(alice_session: str = "alice-1", **kwargs: Any) -> tuple[MeshInbox, Members]:
    members = Members()
    box = inbox(**kwargs)
    box.on_membership(members.join(BOB, "bob-1") + members.join(ALICE, alice_session), 0.0)
    return box, members


def candidates(call_id: str, n: int) -> CallCandidates:
    return CallCandidates(
        call_id=call_id,
        party_id="ADEV",
        candidates=(Candidate(candidate=f"candidate:{n} 1 udp 1 10.0.0.{n} 9 typ host"),),
    )


def messages(
    count: int,
    *,
    sender: MeshSender | None = None,
    session: str = "alice-1",
    dest_session: str = "bob-1",
) -> list[DeviceMessage]:
    """``count`` signaling messages to Bob (from Alice unless ``sender`` says), seq 0..count-1."""
    sender = sender or MeshSender(ROOM, ALICE, session)
    call_id = sender.call_id(BOB, dest_session, 0)
    out = []
    for n in range(count):
        signal = sender.wrap(candidates(call_id, n), BOB, dest_session)
        own = sender.own
        out.append(DeviceMessage(own.user_id, own.device_id, signal.type, signal.content))
    return out


def seqs(signals: list[PeerSignal]) -> list[int]:
    return [s.seq for s in signals]


def real_invite(call_id: str) -> CallInvite:
    """The invite the 1:1 call machine sends for a video call."""
    call = Call(
        call_id=call_id,
        party_id="ADEV",
        peer=BOB.user_id,
        direction=Direction.OUTGOING,
        now=0.0,
        policy=CallPolicy(),
        invitee=BOB.user_id,
    )
    call.handle(PlaceCall(video=True), 0.0)
    sdp = fake_sdp("offer", video=True, screenshare=False, on_hold=False, tag="1")
    done = call.handle(LocalDescriptionReady(sdp, {"s1": StreamPurpose.USERMEDIA}), 0.0)
    sent = [a.event for a in done if isinstance(a, actions.SendEvent)]
    assert len(sent) == 1
    assert isinstance(sent[0], CallInvite)
    return sent[0]


# -- the envelope ---------------------------------------------------------------------------


def test_a_real_invite_survives_wrap_and_unwrap() -> None:
    sender = MeshSender(ROOM, ALICE, "alice-1")
    invite = real_invite(sender.call_id(BOB, "bob-1", 0))
    signal = sender.wrap(invite, BOB, "bob-1")

    assert (signal.user_id, signal.device_id, signal.type) == (
        *BOB.__dict__.values(),
        "m.call.invite",
    )
    assert {k: signal.content[k] for k in ("conf_id", "room_id", "device_id", "seq")} == {
        "conf_id": ROOM,
        "room_id": ROOM,
        "device_id": "ADEV",
        "seq": 0,
    }
    assert signal.content["sender_session_id"] == "alice-1"
    assert signal.content["dest_session_id"] == "bob-1"
    wire = json.loads(json.dumps(signal.content))  # what Olm carries
    envelope, event = unwrap_signal(signal.type, wire)
    assert event == invite
    assert event.to_dict() == invite.to_dict()
    assert envelope == SignalEnvelope(ROOM, ROOM, "ADEV", 0, "alice-1", "bob-1")

    box, _ = joined_inbox()
    delivered = box.receive(DeviceMessage(ALICE.user_id, "ADEV", signal.type, wire), 1.0)
    assert [(s.peer, s.session, s.attempt, s.event) for s in delivered] == [
        (ALICE, "alice-1", 0, invite)
    ]
    # Bob's own 1:1 machine takes it as the pair's incoming call.
    manager = CallManager(BOB.user_id, "BDEV", CallPolicy())
    rings = manager.handle_remote(RemoteEvent(ROOM, ALICE.user_id, delivered[0].event), 1.0)
    incoming = [a.action for a in rings if isinstance(a.action, IncomingCall)]
    assert [i.call.call_id for i in incoming] == [invite.call_id]
    assert incoming[0].call.state is CallState.RINGING


def test_seq_counts_per_destination_session() -> None:
    sender = MeshSender(ROOM, ALICE, "alice-1")

    def seq(peer: MemberDevice, session: str) -> int:
        hangup = CallHangup(call_id=sender.call_id(peer, session, 0), party_id="p")
        return int(sender.wrap(hangup, peer, session).content["seq"])

    assert [seq(BOB, "bob-1") for _ in range(3)] == [0, 1, 2]
    assert seq(CAROL, "carol-1") == 0
    assert seq(BOB, "bob-2") == 0  # Bob rejoined
    assert seq(BOB, "bob-2") == 1
    sender.forget(CAROL)
    assert seq(CAROL, "carol-1") == 0


def test_wrapping_refuses_another_pairs_call() -> None:
    sender = MeshSender(ROOM, ALICE, "alice-1")
    carols = CallHangup(call_id=sender.call_id(CAROL, "carol-1", 0), party_id="p")
    with pytest.raises(ValueError, match="pair"):
        sender.wrap(carols, BOB, "bob-1")
    with pytest.raises(ValueError, match="itself"):
        sender.wrap(carols, ALICE, "alice-1")


def test_wrapping_refuses_an_event_that_carries_envelope_keys() -> None:
    event = CallHangup(call_id="c", party_id="p", extra={"seq": 9})
    with pytest.raises(ValueError, match="seq"):
        wrap_signal(event, SignalEnvelope(ROOM, ROOM, "ADEV", 0, "a", "b"))


@pytest.mark.parametrize(
    ("change", "error", "field"),
    [
        (lambda c: c.pop("seq"), MissingFieldError, "content.seq"),
        (lambda c: c.update(seq=True), FieldTypeError, "content.seq"),
        (lambda c: c.update(seq=-1), FieldTypeError, "content.seq"),
        (lambda c: c.update(seq=2**53), FieldTypeError, "content.seq"),
        (lambda c: c.update(dest_session_id=""), FieldTypeError, "content.dest_session_id"),
        (lambda c: c.update(sender_session_id=7), FieldTypeError, "content.sender_session_id"),
        (lambda c: c.update(device_id="x" * 256), FieldTypeError, "content.device_id"),
        (lambda c: c.pop("conf_id"), MissingFieldError, "content.conf_id"),
        (lambda c: c.update(room_id="\ud800"), FieldTypeError, "content.room_id"),
        (lambda c: c.pop("call_id"), MissingFieldError, "content.call_id"),
    ],
)
def test_a_malformed_envelope_is_a_typed_error(change: Any, error: type, field: str) -> None:
    content = messages(1)[0].content
    change(content)
    with pytest.raises(error) as raised:
        unwrap_signal("m.call.candidates", content)
    assert raised.value.field == field  # type: ignore[attr-defined]
    box, _ = joined_inbox()
    assert box.receive(DeviceMessage(ALICE.user_id, "ADEV", "m.call.candidates", content), 1) == []
    assert box.dropped == {Dropped.MALFORMED: 1}


def test_a_type_that_is_no_call_event_is_not_signaling() -> None:
    content = messages(1)[0].content
    with pytest.raises(UnknownEventTypeError):
        unwrap_signal("org.matrix.msc4143.rtc.encryption_key", content)
    box, _ = joined_inbox()
    box.receive(DeviceMessage(ALICE.user_id, "ADEV", "m.room.message", content), 1.0)
    assert box.dropped == {Dropped.NOT_SIGNALING: 1}


def test_pair_call_ids_agree_on_both_sides_and_change_with_a_session_or_attempt() -> None:
    alice, bob = (ALICE, "alice-1"), (BOB, "bob-1")
    first = pair_call_id(ROOM, alice, bob, 0)
    assert first == pair_call_id(ROOM, bob, alice, 0)
    assert MeshSender(ROOM, ALICE, "alice-1").call_id(BOB, "bob-1", 0) == first
    assert MeshSender(ROOM, BOB, "bob-1").call_id(ALICE, "alice-1", 0) == first
    others = {
        pair_call_id(ROOM, alice, bob, 1),
        pair_call_id(ROOM, (ALICE, "alice-2"), bob, 0),  # Alice rejoined
        pair_call_id(ROOM, alice, (BOB, "bob-2"), 0),
        pair_call_id(ROOM, alice, (CAROL, "bob-1"), 0),
        pair_call_id("!other:hs", alice, bob, 0),
    }
    assert first not in others
    assert len(others) == 5
    long_ids = pair_call_id(ROOM, (MemberDevice("@" + "a" * 250, "D" * 255), "s" * 255), bob, 9)
    assert len(long_ids) <= 255
    prefix = pair_call_prefix(ROOM, alice, bob)
    assert [pair_attempt(pair_call_id(ROOM, alice, bob, n), prefix) for n in (0, 3, 17)] == [
        0,
        3,
        17,
    ]
    for bad in ("c", prefix, prefix + "01", prefix + "-1", prefix + "٣", prefix + "1" * 7):
        assert pair_attempt(bad, prefix) is None
    with pytest.raises(ValueError, match="itself"):
        pair_call_id(ROOM, alice, (ALICE, "other"), 0)


# -- ordering -------------------------------------------------------------------------------


def test_reordered_and_duplicated_messages_are_applied_once_in_order() -> None:
    box, _ = joined_inbox()
    sent = messages(6)
    delivered: list[PeerSignal] = []
    for n in (3, 1, 1, 0, 5, 3, 2, 0, 4, 5):
        delivered += box.receive(sent[n], 1.0)
    assert seqs(delivered) == [0, 1, 2, 3, 4, 5]
    assert [s.event for s in delivered] == [unwrap_signal(m.type, m.content)[1] for m in sent]
    assert box.dropped == {Dropped.DUPLICATE: 4}
    assert box.buffered == 0
    assert box.buffered_bytes == 0
    assert box.next_deadline() is None


def test_a_gap_is_skipped_after_the_timeout_and_the_late_message_dropped() -> None:
    box, _ = joined_inbox(gap_timeout=2.0)
    sent = messages(4)
    assert seqs(box.receive(sent[0], 10.0)) == [0]
    assert box.receive(sent[2], 10.5) == []
    assert box.receive(sent[3], 11.0) == []
    assert box.next_deadline() == 12.5
    assert box.tick(12.4) == []
    assert seqs(box.tick(12.5)) == [2, 3]
    assert box.gaps_skipped == 1
    assert box.buffered == 0
    assert box.next_deadline() is None
    assert box.receive(sent[1], 13.0) == []
    assert box.dropped == {Dropped.DUPLICATE: 1}


def test_a_gap_is_given_up_at_once_when_too_much_is_held() -> None:
    box, _ = joined_inbox(max_held_per_peer=3)
    sent = messages(8)
    box.receive(sent[0], 1.0)
    assert [box.receive(sent[n], 1.0) for n in (2, 3, 4)] == [[], [], []]
    assert seqs(box.receive(sent[5], 1.0)) == [2, 3, 4, 5]
    assert box.gaps_skipped == 1
    assert box.buffered == 0


def test_held_bytes_count_against_the_budget() -> None:
    size = len(json.dumps(messages(1)[0].content))
    box, _ = joined_inbox(max_buffered_bytes=2 * size + size // 2)
    sent = messages(6)
    box.receive(sent[0], 1.0)
    assert box.receive(sent[2], 1.0) == []
    assert box.receive(sent[3], 1.0) == []
    assert seqs(box.receive(sent[4], 1.0)) == [2, 3, 4]
    assert box.buffered_bytes == 0


# -- what is refused --------------------------------------------------------------------------


def test_a_message_for_another_session_of_ours_is_dropped() -> None:
    box, _ = joined_inbox()
    stale = messages(1, dest_session="bob-0")[0]
    assert box.receive(stale, 1.0) == []
    assert box.dropped == {Dropped.WRONG_DEST_SESSION: 1}
    assert seqs(box.receive(messages(1)[0], 1.0)) == [0]  # the right session's stream is intact


def test_a_message_for_another_call_or_room_is_dropped() -> None:
    box, _ = joined_inbox()
    for key in ("conf_id", "room_id"):
        message = messages(1)[0]
        message.content[key] = "!elsewhere:hs"
        assert box.receive(message, 1.0) == []
    assert box.dropped == {Dropped.OTHER_CALL: 2}


def test_a_device_id_other_than_the_verified_sender_is_dropped() -> None:
    box, _ = joined_inbox()
    genuine = messages(1)[0]
    # Carol's device (verified by Olm) claims to be Alice's.
    forged = DeviceMessage(CAROL.user_id, CAROL.device_id, genuine.type, genuine.content)
    # Alice's user, another of her devices, claims to be ADEV.
    other_device = DeviceMessage(ALICE.user_id, "AOTHER", genuine.type, genuine.content)
    assert box.receive(forged, 1.0) == []
    assert box.receive(other_device, 1.0) == []
    assert box.dropped == {Dropped.SPOOFED_DEVICE: 2}
    assert seqs(box.receive(genuine, 1.0)) == [0]


def test_a_member_cannot_send_into_another_pairs_call() -> None:
    box, members = joined_inbox()
    box.on_membership(members.join(CAROL, "carol-1"), 0.0)
    alice_call = pair_call_id(ROOM, (ALICE, "alice-1"), (BOB, "bob-1"), 0)
    envelope = SignalEnvelope(ROOM, ROOM, "CDEV", 0, "carol-1", "bob-1")
    kind, content = wrap_signal(CallHangup(call_id=alice_call, party_id="x"), envelope)
    assert box.receive(DeviceMessage(CAROL.user_id, "CDEV", kind, content), 1.0) == []
    assert box.dropped == {Dropped.FOREIGN_CALL_ID: 1}


def test_a_rejoined_senders_old_session_is_stale_and_its_new_stream_starts_at_zero() -> None:
    box, members = joined_inbox()
    old = messages(4)
    assert seqs(box.receive(old[0], 1.0)) == [0]
    assert box.receive(old[2], 1.0) == []  # held behind a gap
    assert box.on_membership(members.join(ALICE, "alice-2"), 2.0) == []  # Alice rejoined
    assert box.buffered == 0
    assert box.buffered_bytes == 0
    assert box.receive(old[1], 2.0) == []
    assert box.receive(old[3], 2.0) == []
    assert box.dropped == {Dropped.STALE_SESSION: 3}
    new = messages(2, session="alice-2")
    delivered = box.receive(new[0], 2.0) + box.receive(new[1], 2.0)
    assert [(s.seq, s.session) for s in delivered] == [(0, "alice-2"), (1, "alice-2")]


def test_messages_after_the_sender_left_are_stale() -> None:
    box, members = joined_inbox()
    sent = messages(2)
    box.receive(sent[0], 1.0)
    box.on_membership(members.leave(ALICE), 2.0)
    assert box.receive(sent[1], 3.0) == []
    assert box.dropped == {Dropped.STALE_SESSION: 1}
    assert box.buffered == 0


def test_a_spoofed_member_event_does_not_let_messages_through() -> None:
    members = Members()
    box = inbox()
    box.on_membership(members.join(BOB, "bob-1"), 0.0)
    # Carol writes a membership for Alice's device: the table ignores it, so nothing is released.
    content = mesh_member(
        device_id="ADEV", membership_id="alice-1", created_ts=NOW_MS, expires=3_600_000
    ).to_json()
    key = member_state_key(ALICE.user_id, ALICE.device_id)
    forged = members.table.handle(MemberStateEvent(CAROL.user_id, key, content, NOW_MS), NOW_MS)
    assert box.receive(messages(1)[0], 1.0) == []
    assert box.on_membership(forged, 1.0) == []
    assert box.buffered == 1


# -- before the sender's membership ----------------------------------------------------------


def test_messages_before_the_membership_wait_and_are_released_in_order() -> None:
    members = Members()
    box = inbox()
    box.on_membership(members.join(BOB, "bob-1"), 0.0)
    sent = messages(3)
    for n in (1, 0, 2):
        assert box.receive(sent[n], 1.0) == []
    assert box.buffered == 3
    assert box.next_deadline() == 1.0 + 30.0
    released = box.on_membership(members.join(ALICE, "alice-1"), 2.0)
    assert seqs(released) == [0, 1, 2]
    assert box.buffered == 0
    assert box.buffered_bytes == 0
    assert box.next_deadline() is None


def test_messages_whose_membership_never_comes_expire() -> None:
    box = inbox(early_ttl=30.0)
    box.receive(messages(1)[0], 1.0)
    box.receive(messages(1, sender=MeshSender(ROOM, CAROL, "carol-1"))[0], 5.0)
    assert box.tick(30.9) == []
    assert box.buffered == 2
    box.tick(31.0)
    assert box.buffered == 1
    assert box.dropped == {Dropped.NEVER_MEMBER: 1}
    box.tick(35.0)
    assert box.buffered == 0
    assert box.buffered_bytes == 0
    assert box.next_deadline() is None
    assert box.dropped == {Dropped.NEVER_MEMBER: 2}


def test_a_message_from_the_next_session_waits_for_the_rejoin() -> None:
    box, members = joined_inbox()
    early = messages(1, session="alice-2")[0]
    assert box.receive(early, 1.0) == []
    assert box.buffered == 1
    assert seqs(box.on_membership(members.join(ALICE, "alice-2"), 2.0)) == [0]
    assert box.buffered == 0
    assert not box.dropped


def test_waiting_messages_of_an_ended_session_are_dropped_as_stale() -> None:
    box, members = joined_inbox()
    early = messages(1, session="alice-2")[0]
    box.receive(early, 1.0)
    box.on_membership(members.join(ALICE, "alice-2"), 2.0)
    box.on_membership(members.join(ALICE, "alice-3"), 3.0)
    # alice-2 is over now: a message of it that arrives late is stale at once.
    assert box.receive(messages(2, session="alice-2")[1], 4.0) == []
    assert box.dropped == {Dropped.STALE_SESSION: 1}
    assert box.buffered == 0


def test_the_early_buffer_is_bounded_per_device_and_in_total() -> None:
    box = inbox(max_early_per_device=3, max_early=5)
    for message in messages(4):
        box.receive(message, 1.0)
    assert box.buffered == 3
    assert box.dropped == {Dropped.EARLY_OVERFLOW: 1}
    for message in messages(3, sender=MeshSender(ROOM, CAROL, "carol-1")):
        box.receive(message, 2.0)
    # Over the total: Alice's oldest went.
    assert box.buffered == 5
    assert box.dropped == {Dropped.EARLY_OVERFLOW: 2}
    members = Members()
    box.on_membership(members.join(BOB, "bob-1"), 3.0)
    released = box.on_membership(members.join(ALICE, "alice-1"), 3.0)
    assert released == []  # seq 0 was pushed out: 1 and 2 wait behind the gap
    assert seqs(box.tick(5.0)) == [1, 2]
    assert box.buffered == 3  # Carol's, still waiting for her membership


def test_the_early_buffer_is_bounded_in_bytes() -> None:
    size = len(json.dumps(messages(1)[0].content))
    box = inbox(max_buffered_bytes=2 * size)
    for message in messages(3):
        box.receive(message, 1.0)
    assert box.buffered == 2
    assert box.buffered_bytes <= 2 * size
    assert box.dropped == {Dropped.EARLY_OVERFLOW: 1}


def test_a_too_large_message_is_dropped() -> None:
    box, _ = joined_inbox()
    message = messages(1)[0]
    message.content["padding"] = "x" * 70_000
    assert box.receive(message, 1.0) == []
    assert box.dropped == {Dropped.TOO_LARGE: 1}


# -- retries ----------------------------------------------------------------------------------


def test_a_failing_pair_is_retried_three_times_with_backoff() -> None:
    retry = PairRetry()
    assert retry.ended("ice_failed", 10.0) == RetryAt(1, 11.0)
    assert retry.ended("invite_timeout", 20.0) == RetryAt(2, 22.0)
    assert retry.ended("some_new_reason", 30.0) == RetryAt(3, 34.0)
    assert retry.ended("ice_failed", 40.0) == GiveUp("ice_failed", deliberate=False)
    assert retry.ended("ice_failed", 50.0) == GiveUp("ice_failed", deliberate=False)


def test_a_connection_restores_the_retries_but_attempts_keep_counting() -> None:
    retry = PairRetry()
    assert retry.ended("ice_failed", 0.0) == RetryAt(1, 1.0)
    assert retry.ended("ice_failed", 5.0) == RetryAt(2, 7.0)
    retry.connected()
    assert retry.ended("ice_timeout", 100.0) == RetryAt(3, 101.0)


@pytest.mark.parametrize(
    "reason",
    [
        "user_hangup",
        "user_busy",
        "replaced",
        "rejected",
        "encryption_required",
        "answered_elsewhere",
        "new_session",
        "member_left",
    ],
)
def test_a_deliberate_end_is_not_retried(reason: str) -> None:
    assert is_deliberate(reason)
    retry = PairRetry()
    assert retry.ended(reason, 0.0) == GiveUp(reason, deliberate=True)
    assert retry.ended("ice_failed", 1.0) == GiveUp("ice_failed", deliberate=False)


@pytest.mark.parametrize(
    "reason", ["ice_failed", "ice_timeout", "invite_timeout", "user_media_failed", "unknown_error"]
)
def test_failures_are_not_deliberate(reason: str) -> None:
    assert not is_deliberate(reason)


def test_the_replaced_end_of_a_real_glare_is_not_retried() -> None:
    """The calls layer's own reason string for a replaced call is the one the policy knows."""
    from sealcall.calls.call import REPLACED

    assert PairRetry().ended(REPLACED, 0.0) == GiveUp(REPLACED, deliberate=True)


def test_a_retry_attempt_is_accepted_as_the_pairs_call() -> None:
    box, _ = joined_inbox()
    sender = MeshSender(ROOM, ALICE, "alice-1")
    attempt = PairRetry().ended("ice_failed", 0.0)
    assert isinstance(attempt, RetryAt)
    call_id = sender.call_id(BOB, "bob-1", attempt.attempt)
    signal = sender.wrap(CallHangup(call_id=call_id, party_id="ADEV"), BOB, "bob-1")
    delivered = box.receive(DeviceMessage(ALICE.user_id, "ADEV", signal.type, signal.content), 1)
    assert [(s.attempt, s.event.call_id) for s in delivered] == [(1, call_id)]


def test_unwrap_raises_only_signaling_errors_for_non_objects() -> None:
    for value in (None, [], "x", 3, {"seq": 0}, {1: 2}):
        with pytest.raises(SignalingError):
            unwrap_signal("m.call.hangup", value)

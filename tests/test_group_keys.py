"""Group media keys, sender side and receiver key rings: whole sequences under a fake clock."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealcall.e2ee import (
    Codec,
    GroupKey,
    GroupKeyRing,
    GroupKeySender,
    KeyVerdict,
    MemberDevice,
    RequestKey,
    SendKey,
    ToDeviceSender,
    UseKey,
    protect_frame,
    unprotect_frame,
)
from sealcall.sframe import SFrameSender, UnknownKeyError

ROOM = "!call:example.org"
ME = MemberDevice("@me:example.org", "MEDEV", "m-me")
ALICE = MemberDevice("@alice:example.org", "ADEV", "m-alice")
BOB = MemberDevice("@bob:example.org", "BDEV", "m-bob")
CAROL = MemberDevice("@carol:example.org", "CDEV", "m-carol")
OPUS = b"\x78" + bytes(range(60))  # a TOC byte and a payload


def olm(member: MemberDevice) -> ToDeviceSender:
    return ToDeviceSender(member.user_id, member.device_id, olm_encrypted=True)


def sends(actions: list[SendKey | UseKey]) -> list[SendKey]:
    return [a for a in actions if isinstance(a, SendKey)]


def uses(actions: list[SendKey | UseKey]) -> list[UseKey]:
    return [a for a in actions if isinstance(a, UseKey)]


def started(members: list[MemberDevice], now: float = 0.0) -> tuple[GroupKeySender, GroupKey]:
    sender = GroupKeySender(ROOM, ME.device)
    actions = sender.start(members, now)
    return sender, uses(actions)[0].key


# --- sender ---------------------------------------------------------------------------------


def test_first_key_is_used_at_once_and_sent_to_every_other_member() -> None:
    sender = GroupKeySender(ROOM, ME.device)
    actions = sender.start([ME, ALICE, BOB], 0.0)
    assert [type(a) for a in actions] == [UseKey, SendKey]
    first = uses(actions)[0].key
    assert first.index == 0
    assert len(first.key) == 32
    assert sends(actions) == [SendKey(first, (ALICE, BOB))]  # never to ourselves
    assert sender.next_deadline() is None


def test_leave_makes_a_new_key_sent_to_the_rest_and_used_only_after_the_delay() -> None:
    sender, first = started([ALICE, BOB, CAROL])
    actions = sender.update_members([ALICE, BOB], 20.0)
    (send,) = actions
    assert isinstance(send, SendKey)
    assert send.key.index == 1
    assert send.key.key != first.key
    assert send.targets == (ALICE, BOB)  # Carol, who left, never gets it
    assert sender.current_index == 0
    assert sender.next_deadline() == 21.0
    assert sender.handle_timer(20.9) == []
    assert sender.current_index == 0
    assert sender.handle_timer(21.0) == [UseKey(send.key)]
    assert sender.current_index == 1
    assert sender.next_deadline() is None
    assert sender.counters["rotations"] == 1


def test_use_delay_is_configurable() -> None:
    sender = GroupKeySender(ROOM, ME.device, use_delay=0.25)
    sender.start([ALICE, BOB], 0.0)
    sender.update_members([ALICE], 3.0)
    assert sender.next_deadline() == 3.25


def test_frames_carry_the_new_kid_only_after_the_delay() -> None:
    sender, first = started([ALICE, BOB])
    frame_sender = SFrameSender(first.index, first.key)
    kids = []
    now = 0.0
    pending = sends(sender.update_members([ALICE], 5.0))
    while now < 7.0:
        for action in sender.handle_timer(now):
            if isinstance(action, UseKey):
                frame_sender.set_key(action.key.index, action.key.key)
        kids.append((now, frame_sender.kid))
        protect_frame(Codec.OPUS, frame_sender, OPUS)
        now = round(now + 0.25, 2)
    assert pending[0].key.index == 1
    assert {kid for t, kid in kids if t < 6.0} == {0}
    assert {kid for t, kid in kids if t >= 6.0} == {1}


def test_joiner_gets_a_young_key_and_nobody_else_is_disturbed() -> None:
    sender, first = started([ALICE])
    actions = sender.update_members([ALICE, BOB], 9.9)
    assert actions == [SendKey(first, (BOB,))]
    assert sender.counters["rotations"] == 0
    assert sender.next_deadline() is None


def test_joiner_after_ten_seconds_causes_a_new_key_for_everyone() -> None:
    sender, first = started([ALICE])
    actions = sender.update_members([ALICE, BOB], 10.0)
    (send,) = sends(actions)
    assert send.key.index == 1
    assert send.key.key != first.key
    assert send.targets == (ALICE, BOB)
    assert uses(actions) == []
    assert sender.handle_timer(11.0) == [UseKey(send.key)]


def test_joiner_during_a_pending_rotation_gets_the_pending_key_too() -> None:
    sender, _ = started([ALICE, BOB])
    (rotated,) = sends(sender.update_members([ALICE], 30.0))
    actions = sender.update_members([ALICE, CAROL], 30.5)
    # the key in use is 30 s old: Carol gets only the young pending one
    assert actions == [SendKey(rotated.key, (CAROL,))]


def test_rejoin_with_a_new_membership_is_a_join_not_a_leave() -> None:
    sender, first = started([ALICE, BOB])
    alice_again = MemberDevice(ALICE.user_id, ALICE.device_id, "m-alice-2")
    assert sender.update_members([alice_again, BOB], 2.0) == [SendKey(first, (alice_again,))]
    assert sender.counters["rotations"] == 0


def test_two_quick_leaves_each_cut_off_their_leaver() -> None:
    sender, _ = started([ALICE, BOB, CAROL])
    (k1,) = sends(sender.update_members([ALICE, BOB], 10.0))
    (k2,) = sends(sender.update_members([ALICE], 10.5))
    assert k1.targets == (ALICE, BOB)
    assert k2.targets == (ALICE,)
    assert (k1.key.index, k2.key.index) == (1, 2)
    assert sender.handle_timer(11.0) == [UseKey(k1.key)]  # Carol is out after 1 s
    assert sender.handle_timer(11.5) == [UseKey(k2.key)]  # Bob too
    assert sender.handle_timer(30.0) == []


def test_index_wraps_after_255() -> None:
    sender, _ = started([ALICE, BOB])
    indices = []
    for step in range(257):
        # Bob leaves, then rejoins 20 s later, when the key is too old to share: both rotate
        members = [ALICE] if step % 2 == 0 else [ALICE, BOB]
        now = 20.0 * (step + 1)
        indices += [a.key.index for a in sends(sender.update_members(members, now))]
        assert sender.handle_timer(now + 1.0)[0].key.index == indices[-1]
    assert indices == [(i + 1) % 256 for i in range(257)]


def test_no_change_means_no_action() -> None:
    sender, _ = started([ALICE, BOB])
    assert sender.update_members([BOB, ALICE, ME], 50.0) == []


def test_members_beyond_the_limit_are_counted_and_ignored() -> None:
    sender = GroupKeySender(ROOM, ME.device, max_members=2)
    actions = sender.start([ALICE, BOB, CAROL], 0.0)
    assert len(sends(actions)[0].targets) == 2
    assert sender.counters["excess_members"] == 1


def test_key_request_is_answered_only_for_a_current_member_over_olm() -> None:
    sender, first = started([ALICE, BOB])

    def ask(origin: ToDeviceSender, now: float, **kw: object) -> list[SendKey]:
        args: dict[str, object] = {
            "room_id": ROOM,
            "key_owner": ME.device,
            "member_id": None,
            "now": now,
        }
        args.update(kw)
        return sender.on_key_request(origin, **args)  # type: ignore[arg-type]

    assert ask(olm(ALICE), 1.0) == [SendKey(first, (ALICE,))]
    assert ask(olm(CAROL), 1.0) == []  # not a member
    plaintext = ToDeviceSender(BOB.user_id, BOB.device_id, olm_encrypted=False)
    assert ask(plaintext, 1.0) == []
    assert ask(olm(BOB), 1.0, room_id="!other:example.org") == []
    assert ask(olm(BOB), 1.0, key_owner=ALICE.device) == []
    assert ask(olm(BOB), 1.0, member_id="m-bob-old") == []
    assert ask(olm(ALICE), 1.5) == []  # answered a moment ago
    assert ask(olm(BOB), 1.0, member_id="m-bob") == [SendKey(first, (BOB,))]
    assert dict(sender.counters) == {
        "requests_answered": 2,
        "request_not_member": 1,
        "request_plaintext": 1,
        "request_wrong_room": 1,
        "request_misaddressed": 1,
        "request_stale_member": 1,
        "request_rate_limited": 1,
    }
    # a departed member is no longer answered
    sender.update_members([BOB], 5.0)
    assert ask(olm(ALICE), 9.0) == []


def test_key_request_during_a_rotation_gets_both_keys() -> None:
    sender, first = started([ALICE, BOB])
    (rotated,) = sends(sender.update_members([ALICE], 3.0))
    answer = sender.on_key_request(
        olm(ALICE), room_id=ROOM, key_owner=ME.device, member_id=None, now=3.5
    )
    assert answer == [SendKey(first, (ALICE,)), SendKey(rotated.key, (ALICE,))]


def test_key_request_never_gives_a_joiner_a_key_older_than_its_join() -> None:
    sender, first = started([ALICE])
    (rotated,) = sends(sender.update_members([ALICE, BOB], 30.0))  # key 0 is too old for Bob
    assert rotated.targets == (ALICE, BOB)
    answer = sender.on_key_request(
        olm(BOB), room_id=ROOM, key_owner=ME.device, member_id=None, now=30.5
    )
    assert answer == [SendKey(rotated.key, (BOB,))]  # not the key in use, made before he came
    assert all(a.key != first for a in answer)


def test_group_key_validates_and_hides_key() -> None:
    with pytest.raises(ValueError, match="index"):
        GroupKey(256, bytes(32))
    with pytest.raises(ValueError, match="32 bytes"):
        GroupKey(0, bytes(16))
    assert "secret" in repr(GroupKey(1, b"\xaa" * 32))
    assert "aa" not in repr(GroupKey(1, b"\xaa" * 32)).lower().replace("secret", "")


# --- receiver key rings -----------------------------------------------------------------------


def ring_with(*members: MemberDevice, now: float = 0.0, **kw: float) -> GroupKeyRing:
    ring = GroupKeyRing(ROOM, ME.device, **kw)  # type: ignore[arg-type]
    ring.set_members([ME, *members], now)
    return ring


def give(
    ring: GroupKeyRing,
    origin: ToDeviceSender,
    key: GroupKey,
    now: float,
    *,
    member_id: str | None = None,
    room_id: str = ROOM,
    claimed_device_id: str | None = None,
) -> KeyVerdict:
    return ring.on_key(
        origin,
        room_id=room_id,
        member_id=member_id,
        claimed_device_id=claimed_device_id,
        key=key,
        now=now,
    )


def key(index: int, fill: int) -> GroupKey:
    return GroupKey(index, bytes([fill]) * 32)


def sealed(k: GroupKey) -> bytes:
    return protect_frame(Codec.OPUS, SFrameSender(k.index, k.key), OPUS)


def opens(ring: GroupKeyRing, member: MemberDevice, frame: bytes) -> bool:
    receiver = ring.receiver(member.user_id, member.device_id)
    if receiver is None:
        return False
    try:
        return unprotect_frame(Codec.OPUS, receiver, frame) == OPUS
    except UnknownKeyError:
        return False


def test_key_from_a_member_over_olm_decrypts_that_members_frames_only() -> None:
    ring = ring_with(ALICE, BOB)
    k = key(0, 1)
    assert give(ring, olm(ALICE), k, 0.0, member_id="m-alice") is KeyVerdict.ACCEPTED
    assert opens(ring, ALICE, sealed(k))
    assert not opens(ring, BOB, sealed(k))  # one ring per sender: Bob's frames need Bob's key
    assert ring.kids(*ALICE.device) == [0]
    assert ring.kids(*BOB.device) == []


@pytest.mark.parametrize(
    ("origin", "kwargs", "verdict"),
    [
        (ToDeviceSender(ALICE.user_id, ALICE.device_id, False), {}, KeyVerdict.PLAINTEXT),
        (ToDeviceSender(ALICE.user_id, None, False), {}, KeyVerdict.PLAINTEXT),
        (olm(CAROL), {}, KeyVerdict.NOT_MEMBER),
        (olm(ALICE), {"room_id": "!other:example.org"}, KeyVerdict.WRONG_ROOM),
        (olm(ALICE), {"claimed_device_id": "BDEV"}, KeyVerdict.WRONG_DEVICE),
        (olm(ALICE), {"member_id": "m-alice-old"}, KeyVerdict.STALE_MEMBER),
        # Bob, a member, passes off a key as Alice's: the Olm sender decides whose ring it is
        (olm(BOB), {"member_id": "m-alice"}, KeyVerdict.STALE_MEMBER),
        (olm(BOB), {"claimed_device_id": "ADEV"}, KeyVerdict.WRONG_DEVICE),
    ],
)
def test_keys_not_from_the_member_device_they_claim_are_refused_and_counted(
    origin: ToDeviceSender, kwargs: dict[str, str], verdict: KeyVerdict
) -> None:
    ring = ring_with(ALICE, BOB)
    k = key(0, 7)
    assert give(ring, origin, k, 0.0, **kwargs) is verdict  # type: ignore[arg-type]
    assert ring.counters[verdict.value] == 1
    assert ring.kids(*ALICE.device) == []
    assert ring.kids(*BOB.device) == []
    assert not opens(ring, ALICE, sealed(k))


def test_old_keys_live_only_for_the_grace_window() -> None:
    ring = ring_with(ALICE, grace_period=3.0)
    k0, k1 = key(0, 1), key(1, 2)
    give(ring, olm(ALICE), k0, 0.0)
    assert ring.next_deadline() is None
    give(ring, olm(ALICE), k1, 10.0)
    assert ring.kids(*ALICE.device) == [0, 1]
    assert ring.next_deadline() == 13.0
    ring.handle_timer(12.9)
    assert opens(ring, ALICE, sealed(k0))  # a frame still in flight
    ring.handle_timer(13.0)
    assert ring.kids(*ALICE.device) == [1]
    assert not opens(ring, ALICE, sealed(k0))
    assert opens(ring, ALICE, sealed(k1))
    assert ring.next_deadline() is None


def test_a_late_older_key_does_not_displace_the_newest() -> None:
    ring = ring_with(ALICE, grace_period=2.0)
    k1, k2 = key(1, 1), key(2, 2)
    give(ring, olm(ALICE), k2, 0.0)
    give(ring, olm(ALICE), k1, 0.1)  # overtaken on the way
    ring.handle_timer(5.0)
    assert ring.kids(*ALICE.device) == [2]


def test_index_wrap_is_newer() -> None:
    ring = ring_with(ALICE, grace_period=1.0)
    give(ring, olm(ALICE), key(255, 1), 0.0)
    give(ring, olm(ALICE), key(0, 2), 0.5)
    ring.handle_timer(2.0)
    assert ring.kids(*ALICE.device) == [0]


def test_a_repeated_key_is_a_duplicate_and_does_not_revive_a_retired_one() -> None:
    ring = ring_with(ALICE, grace_period=1.0)
    k0 = key(0, 1)
    give(ring, olm(ALICE), k0, 0.0)
    give(ring, olm(ALICE), key(1, 2), 1.0)
    assert give(ring, olm(ALICE), k0, 1.5) is KeyVerdict.DUPLICATE
    ring.handle_timer(2.0)
    assert ring.kids(*ALICE.device) == [1]


def test_keys_per_sender_are_bounded() -> None:
    ring = ring_with(ALICE, max_keys_per_sender=3)
    for i in range(10):
        give(ring, olm(ALICE), key(i, i + 1), float(i) / 100)
    assert ring.kids(*ALICE.device) == [7, 8, 9]
    assert ring.counters["excess_keys"] == 7


def test_senders_are_bounded() -> None:
    ring = GroupKeyRing(ROOM, ME.device, max_senders=2)
    ring.set_members([ALICE, BOB, CAROL], 0.0)
    assert len(ring.senders) == 2
    assert ring.counters["excess_members"] == 1


def test_departed_and_rejoined_senders_lose_their_keys() -> None:
    ring = ring_with(ALICE, BOB)
    k = key(0, 1)
    give(ring, olm(ALICE), k, 0.0)
    ring.set_members([BOB], 1.0)
    assert ring.receiver(*ALICE.device) is None
    assert give(ring, olm(ALICE), key(1, 2), 1.0) is KeyVerdict.NOT_MEMBER
    ring.set_members([MemberDevice(ALICE.user_id, ALICE.device_id, "m-alice-2"), BOB], 2.0)
    assert ring.kids(*ALICE.device) == []
    assert not opens(ring, ALICE, sealed(k))


def test_a_member_without_a_key_is_asked_with_backoff_and_a_bound() -> None:
    ring = ring_with(ALICE, BOB, request_delay=2.0, max_requests=3)
    give(ring, olm(BOB), key(0, 9), 0.5)
    assert ring.next_deadline() == 2.0
    assert ring.handle_timer(1.9) == []
    assert ring.handle_timer(2.0) == [RequestKey(ALICE)]  # Bob's key came: only Alice asked
    assert ring.handle_timer(3.0) == []
    assert ring.next_deadline() == 6.0  # 2 s * 2
    assert ring.handle_timer(6.0) == [RequestKey(ALICE)]
    assert ring.handle_timer(14.0) == [RequestKey(ALICE)]
    assert ring.handle_timer(100.0) == []
    assert ring.handle_timer(1000.0) == []
    assert ring.counters["requests_sent"] == 3
    assert ring.counters["requests_exhausted"] == 1


def test_a_key_arriving_stops_the_requests() -> None:
    ring = ring_with(ALICE, request_delay=1.0)
    assert ring.handle_timer(1.0) == [RequestKey(ALICE)]
    give(ring, olm(ALICE), key(0, 1), 1.5)
    assert ring.next_deadline() is None
    assert ring.handle_timer(50.0) == []


def test_an_unknown_kid_asks_at_once_then_backs_off() -> None:
    ring = ring_with(ALICE, request_delay=1.0)
    give(ring, olm(ALICE), key(0, 1), 0.0)
    assert ring.on_unknown_key(*ALICE.device, 5.0) == [RequestKey(ALICE)]
    assert ring.on_unknown_key(*ALICE.device, 5.1) == []  # a burst of frames asks once
    assert ring.on_unknown_key(*ALICE.device, 7.0) == [RequestKey(ALICE)]
    assert ring.on_unknown_key(*CAROL.device, 7.0) == []
    assert ring.counters["unknown_sender_frame"] == 1


# --- hostile sequences ------------------------------------------------------------------------

PEOPLE = [ALICE, BOB, CAROL, MemberDevice(ALICE.user_id, ALICE.device_id, "m-alice-2")]
ORIGINS = [olm(m) for m in PEOPLE] + [
    ToDeviceSender(BOB.user_id, BOB.device_id, olm_encrypted=False),
    ToDeviceSender("@mallory:example.org", "MDEV", olm_encrypted=True),
]
OPERATION = st.one_of(
    st.tuples(st.just("members"), st.lists(st.sampled_from(PEOPLE), max_size=4)),
    st.tuples(
        st.just("key"),
        st.sampled_from(ORIGINS),
        st.sampled_from([None, "m-alice", "m-bob", "m-alice-2", "x"]),
        st.sampled_from([None, "ADEV", "BDEV"]),
        st.integers(min_value=0, max_value=255),
        st.integers(min_value=0, max_value=3),
    ),
    st.tuples(st.just("timer")),
    st.tuples(st.just("unknown"), st.sampled_from(PEOPLE)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(OPERATION, st.floats(min_value=0, max_value=3)), max_size=40))
def test_any_sequence_keeps_the_ring_bounded_and_members_only(
    operations: list[tuple[tuple[object, ...], float]],
) -> None:
    ring = GroupKeyRing(ROOM, ME.device, max_keys_per_sender=3, max_requests=2)
    members: list[MemberDevice] = []
    now = 0.0
    requests = 0
    for op, step in operations:
        now += step
        if op[0] == "members":
            members = list(op[1])  # type: ignore[arg-type]
            ring.set_members(members, now)
        elif op[0] == "key":
            _, origin, member_id, claimed, index, fill = op
            assert isinstance(origin, ToDeviceSender)
            verdict = ring.on_key(
                origin,
                room_id=ROOM,
                member_id=member_id,  # type: ignore[arg-type]
                claimed_device_id=claimed,  # type: ignore[arg-type]
                key=key(index, fill),  # type: ignore[arg-type]
                now=now,
            )
            current = {s.device: s for s in ring.senders}  # one membership per device
            if verdict in (KeyVerdict.ACCEPTED, KeyVerdict.DUPLICATE):
                assert origin.olm_encrypted
                assert origin.device in current
                assert member_id in (None, current[origin.device].membership_id)  # type: ignore[index]
        elif op[0] == "timer":
            requests += len(ring.handle_timer(now))
            deadline = ring.next_deadline()
            assert deadline is None or deadline > now  # a timer never spins
        else:
            member = op[1]
            assert isinstance(member, MemberDevice)
            requests += len(ring.on_unknown_key(member.user_id, member.device_id, now))
        for sender in ring.senders:
            assert len(ring.kids(*sender.device)) <= 3
        assert set(ring.senders) <= set(members)
    assert requests == ring.counters["requests_sent"]

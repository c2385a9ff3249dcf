"""Hostile input for the mesh's pair signaling: the envelope parser lets only the project's
errors escape, and no sequence of messages and membership changes, however forged, breaks the
inbox's order, lets a stale or foreign message through, or grows its buffers past their bounds."""

import contextlib
import json
from collections import defaultdict
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealcall.group import (
    MemberDevice,
    MembershipEvent,
    MembershipTable,
    MemberStateEvent,
    MeshInbox,
    MeshSender,
    SignalEnvelope,
    member_state_key,
    mesh_member,
    unwrap_signal,
    wrap_signal,
)
from sealcall.signaling import (
    CallHangup,
    CallInvite,
    SessionDescription,
    SignalingError,
)
from sealcall.transport.matrix.to_device import DeviceMessage

from fuzz_helpers import json_values

JSON = json_values(integers=st.integers(min_value=-(2**64), max_value=2**64))
DELIVERED: list[int] = []  # per example, how many messages the inbox applied
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ROOM = "!room:hs"
BOB = MemberDevice("@bob:hs", "BDEV")  # us
PEERS = [MemberDevice("@alice:hs", "ADEV"), MemberDevice("@carol:hs", "CDEV"), BOB]
SESSIONS = ["s0", "s1"]
NOW_MS = 1_700_000_000_000


def _valid_content() -> dict[str, Any]:
    sender = MeshSender(ROOM, PEERS[0], "s0")
    invite = CallInvite(
        call_id=sender.call_id(BOB, "bob-1", 0),
        party_id="p",
        offer=SessionDescription(type="offer", sdp="v=0\r\n"),
    )
    return sender.wrap(invite, BOB, "bob-1").content


@SETTINGS
@given(
    changes=st.dictionaries(
        st.sampled_from([*_valid_content(), "extra"]), JSON | st.just(None), max_size=4
    ),
    drop=st.sets(st.sampled_from(list(_valid_content())), max_size=3),
    event_type=st.sampled_from(["m.call.invite", "m.call.hangup", "m.call.answer", "x"]),
)
def test_mutated_envelopes_raise_only_signaling_errors_or_round_trip(
    changes: dict[str, Any], drop: set[str], event_type: str
) -> None:
    content = _valid_content()
    content.update(changes)
    for key in drop:
        content.pop(key, None)
    try:
        envelope, event = unwrap_signal(event_type, content)
    except SignalingError:
        return
    out_type, out = wrap_signal(event, envelope)
    assert out_type == event_type
    assert json.dumps(out, sort_keys=True) == json.dumps(content, sort_keys=True)


@SETTINGS
@given(value=JSON, event_type=st.text(max_size=20))
def test_arbitrary_json_raises_only_signaling_errors(value: object, event_type: str) -> None:
    with contextlib.suppress(SignalingError):
        unwrap_signal(event_type, value)


def _member_events(
    table: MembershipTable, device: MemberDevice, session: str | None
) -> list[MembershipEvent]:
    content: dict[str, Any] = {}
    if session is not None:
        content = mesh_member(
            device_id=device.device_id, membership_id=session, created_ts=NOW_MS, expires=10**7
        ).to_json()
    key = member_state_key(device.user_id, device.device_id)
    return table.handle(MemberStateEvent(device.user_id, key, content, NOW_MS), NOW_MS)


TYPES = ["m.call.invite", "m.call.candidates", "m.call.hangup", "org.sealcall.x", ""]
MESSAGE = st.tuples(
    st.just("message"),
    st.integers(0, len(PEERS) - 1),  # the verified sending device
    st.sampled_from([None] * 5 + [0, 1, 2]),  # the device the envelope claims (None: its own)
    st.sampled_from(SESSIONS),
    st.sampled_from(["bob-1"] * 3 + ["bob-0"]),  # whose session it is for
    st.none() | st.integers(0, 8),  # seq (None: the next one of that stream)
    st.sampled_from(["pair"] * 3 + ["retry", "foreign", "junk"]),
)
OPERATION = st.one_of(  # messages are most of the traffic
    MESSAGE,
    MESSAGE,
    MESSAGE,
    MESSAGE,
    st.tuples(st.just("join"), st.integers(0, len(PEERS) - 1), st.sampled_from(SESSIONS)),
    st.tuples(st.just("leave"), st.integers(0, len(PEERS) - 1)),
    st.tuples(st.just("tick"), st.floats(0, 5)),
    st.tuples(st.just("replay"), st.integers(0, 100)),  # a message delivered again
    st.tuples(st.just("raw"), st.integers(0, len(PEERS) - 1), JSON, st.sampled_from(TYPES)),
)


def _message(op: tuple[Any, ...], counters: dict[Any, int]) -> DeviceMessage:
    _, sender_i, claim_i, session, dest, seq, kind = op
    sender = PEERS[sender_i]
    claimed = sender if claim_i is None else PEERS[claim_i]
    if seq is None:
        seq = counters[claimed, session, dest]
        counters[claimed, session, dest] += 1
    wrapper = MeshSender(ROOM, claimed, session)
    if kind == "junk":
        return DeviceMessage(sender.user_id, sender.device_id, "m.call.hangup", {"seq": seq})
    if claimed == BOB:
        call_id = "c"
    else:
        attempt = 2 if kind == "retry" else 0
        call_id = wrapper.call_id(BOB, dest, attempt) if kind != "foreign" else "foreign"
    event = CallHangup(call_id=call_id, party_id="p", reason=f"r{seq}")
    _, content = wrap_signal(event, _envelope(claimed, session, dest, seq))
    return DeviceMessage(sender.user_id, sender.device_id, "m.call.hangup", content)


def _envelope(claimed: MemberDevice, session: str, dest: str, seq: int) -> SignalEnvelope:
    return SignalEnvelope(ROOM, ROOM, claimed.device_id, seq, session, dest)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start_joined=st.sampled_from([True, True, True, False]),
    operations=st.lists(OPERATION, min_size=5, max_size=60),
    held=st.integers(1, 5),
    early=st.integers(1, 6),
)
def test_inbox_survives_any_sequence(
    start_joined: bool, operations: list[Any], held: int, early: int
) -> None:
    table = MembershipTable(own=BOB)
    table.set_joined_users([p.user_id for p in PEERS], NOW_MS)
    box = MeshInbox(
        ROOM, BOB, "bob-1", max_held_per_peer=held, max_early=early, max_early_per_device=early
    )
    now = 0.0
    last: dict[tuple[MemberDevice, str], int] = defaultdict(lambda: -1)
    counters: dict[Any, int] = defaultdict(int)
    sent: list[DeviceMessage] = []

    def check(signals: list[Any]) -> None:
        for signal in signals:
            member = table.member(signal.peer)
            # Only a current member's current session, each message once, in order.
            assert member is not None
            assert signal.session == member.member_id
            assert signal.peer != BOB
            assert signal.seq > last[(signal.peer, signal.session)]
            last[(signal.peer, signal.session)] = signal.seq
            assert signal.event.reason == f"r{signal.seq}"

    if start_joined:
        operations = [("join", 0, "s0"), ("join", 1, "s0"), *operations]
    for op in operations:
        if op[0] == "message":
            sent.append(_message(op, counters))
            check(box.receive(sent[-1], now))
        elif op[0] == "raw":
            device = PEERS[op[1]]
            check(box.receive(DeviceMessage(device.user_id, device.device_id, op[3], op[2]), now))
        elif op[0] == "replay":
            if sent:
                check(box.receive(sent[-1 - op[1] % len(sent)], now))
        elif op[0] in ("join", "leave"):
            events = _member_events(table, PEERS[op[1]], op[2] if op[0] == "join" else None)
            if events:  # a new membership is a new stream, from 0 (session ids are per join)
                for key in [k for k in last if k[0] == PEERS[op[1]]]:
                    del last[key]
            check(box.on_membership(events, now))
        else:
            now += op[1]
            check(box.tick(now))
        assert box.buffered <= early + held * len(PEERS)
        assert box.buffered_bytes >= 0
        assert len(box._sessions) <= len(PEERS) - 1  # members other than us
        assert (box.buffered == 0) == (box.buffered_bytes == 0)
    delivered = sum(last.values()) + len(last)
    deadline = box.next_deadline()
    while deadline is not None:
        now = max(now, deadline)
        check(box.tick(now))
        deadline = box.next_deadline()
    # Held messages drained after their gaps; early ones left only for sessions still to come.
    assert all(len(s.held) == 0 for s in box._streams.values())
    assert box.buffered == 0
    assert box.buffered_bytes == 0
    DELIVERED.append(delivered)


def test_the_sequences_above_do_deliver() -> None:
    """The fuzzing is not vacuous: many of its sequences get messages through."""
    if not DELIVERED:
        test_inbox_survives_any_sequence()
    assert sum(1 for n in DELIVERED if n > 0) >= len(DELIVERED) // 50

"""Hostile input for the group layer: every parser lets only the project's errors escape, and
no sequence of events, however forged, corrupts the membership table or our own membership."""

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealcall.group import (
    CallMember,
    JoinCall,
    LeaveCall,
    MemberJoined,
    MemberLeave,
    MemberLeft,
    MemberRejoined,
    MembershipStateError,
    MembershipTable,
    MemberStateEvent,
    OwnMembership,
    OwnState,
    RoomMembershipChanged,
    SendMemberState,
    StateKeyError,
    member_state_key,
    parse_decline,
    parse_member_content,
    parse_notification,
    state_key_user,
)
from sealcall.signaling import SignalingError

from fuzz_helpers import json_values

JSON = json_values(integers=st.integers(min_value=-(2**64), max_value=2**64))
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MEMBER = {
    "application": "m.call",
    "call_id": "",
    "scope": "m.room",
    "device_id": "D1",
    "membershipID": "m",
    "expires": 3_600_000,
    "m.call.intent": "video",
    "focus_active": {"type": "mesh"},
    "foci_preferred": [{"type": "mesh"}],
    "created_ts": 1000,
}
NOTIFICATION = {
    "m.mentions": {"user_ids": [], "room": True},
    "notification_type": "ring",
    "m.relates_to": {"event_id": "$m", "rel_type": "m.reference"},
    "m.call.intent": "audio",
    "sender_ts": 5,
    "lifetime": 30000,
}
DECLINE = {"m.relates_to": {"rel_type": "m.reference", "event_id": "$n"}}
PARSERS = [
    (parse_member_content, MEMBER),
    (parse_notification, NOTIFICATION),
    (parse_decline, DECLINE),
]


def _same(a: object, b: object) -> bool:
    return json.dumps(a) == json.dumps(b)


@SETTINGS
@given(st.sampled_from(PARSERS), st.data())
def test_mutated_contents_raise_only_signaling_errors_or_round_trip(
    parser: Any, data: st.DataObject
) -> None:
    fn, sample = parser
    content = json.loads(json.dumps(sample))
    for _ in range(data.draw(st.integers(1, 3))):
        target = content
        if data.draw(st.booleans()):  # sometimes one level down
            nested = [k for k, v in content.items() if isinstance(v, dict)]
            if nested:
                target = content[data.draw(st.sampled_from(nested))]
        key = data.draw(st.sampled_from([*target.keys(), "new"]))
        if data.draw(st.booleans()) and key in target:
            del target[key]
        else:
            target[key] = data.draw(JSON)
    try:
        parsed = fn(content)
    except SignalingError:
        return
    assert _same(parsed.to_json(), content)


@SETTINGS
@given(st.sampled_from([parse_member_content, parse_notification, parse_decline]), JSON)
def test_arbitrary_json_raises_only_signaling_errors(parser: Any, value: object) -> None:
    with contextlib.suppress(SignalingError):
        parsed = parser(value)
        assert _same(parsed.to_json(), value)


@SETTINGS
@given(st.text(max_size=30) | st.from_regex(r"_?@[a-z_]{0,3}:[a-z_.:]{0,4}(_[A-Z_]{0,3})?"))
def test_state_keys_raise_only_state_key_errors(key: str) -> None:
    try:
        user, names_device = state_key_user(key)
    except StateKeyError:
        return
    assert user.startswith("@")
    assert key.removeprefix("_").startswith(user)
    assert names_device == (key.removeprefix("_") != user)


# -- the membership table under a hostile event stream ----------------------------------------

USERS = ["@a:x", "@b:x", "@c_d:x"]
DEVICES = ["D1", "D2"]
T0 = 10_000_000


def _contents() -> st.SearchStrategy[Any]:
    valid = st.builds(
        lambda device, mid, created, expires, call_id: {
            **MEMBER,
            "device_id": device,
            "membershipID": mid,
            "created_ts": created,
            "expires": expires,
            "call_id": call_id,
        },
        st.sampled_from(DEVICES),
        st.sampled_from(["m1", "m2"]),
        st.integers(T0 - 5000, T0 + 5000),
        st.integers(0, 20_000),
        st.sampled_from(["", "", "", "other"]),
    )
    others = st.sampled_from([{}, {"leave_reason": "x"}, {"memberships": []}, {"device_id": 5}])
    return st.integers(0, 9).flatmap(lambda n: valid if n < 7 else others if n < 9 else JSON)


@st.composite
def _state_events(draw: st.DrawFn, users: list[str] = USERS) -> MemberStateEvent:
    """Mostly a user writing its own key; sometimes another user's, a per-user or a junk key."""
    sender = draw(st.sampled_from(users))
    owner = draw(st.sampled_from([sender] * 3 + USERS))
    keys = [member_state_key(owner, d) for d in DEVICES] * 3 + [f"_{owner}_D1", owner]
    key = draw(st.sampled_from(keys) if draw(st.integers(0, 9)) else st.text(max_size=6))
    return MemberStateEvent(
        sender=sender,
        state_key=key,
        content=draw(_contents()),
        origin_server_ts=draw(st.integers(T0 - 5000, T0 + 5000)),
    )


OPERATIONS = st.one_of(
    _state_events(),
    _state_events(),
    st.builds(RoomMembershipChanged, st.sampled_from(USERS), st.sampled_from([True, True, False])),
    st.integers(0, 3000),  # the clock moves on this many ms and the table ticks
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPERATIONS, min_size=8, max_size=40), st.integers(1, 4), st.integers(0, len(USERS)))
def test_table_survives_any_event_sequence(operations: list[Any], cap: int, joined: int) -> None:
    table = MembershipTable(max_members=cap)
    table.set_joined_users(USERS[:joined], T0)
    seen: dict[Any, Any] = {}  # the members as the table's events announced them
    now = T0
    for op in operations:
        before = table.members()
        if isinstance(op, int):
            now += op
            events = table.tick(now)
        else:
            events = table.handle(op, now)
        for event in events:  # every event is consistent with what was announced before
            if isinstance(event, MemberJoined):
                assert event.member.device not in seen
                seen[event.member.device] = event.member
            elif isinstance(event, MemberLeft):
                assert seen.pop(event.member.device).session == event.member.session
            else:
                assert isinstance(event, MemberRejoined)
                assert seen[event.old.device].session == event.old.session
                assert event.old.session != event.new.session
                seen[event.new.device] = event.new
        members = table.members()
        by_device = {m.device: m for m in members}
        # Refreshes change a member silently; sessions change only with an event.
        assert {d: m.session for d, m in seen.items()} == {
            d: m.session for d, m in by_device.items()
        }
        for member in members:
            assert member.expires_at > now
            assert table.is_joined(member.device.user_id)
            assert state_key_user(member.state_key)[0] == member.device.user_id  # never spoofed
            assert member.content.is_room_call
        assert len(table._records) <= cap
        if isinstance(op, MemberStateEvent) and state_key_user_or_none(op.state_key) != op.sender:
            assert members == before  # another user's write changes nothing


def state_key_user_or_none(key: str) -> str | None:
    try:
        return state_key_user(key)[0]
    except StateKeyError:
        return None


OWN_OPERATIONS = st.one_of(
    st.sampled_from([JoinCall(), LeaveCall()]),
    _state_events(["@a:x"]),
    st.integers(0, 20_000),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OWN_OPERATIONS, max_size=30))
def test_own_membership_survives_any_sequence(operations: list[Any]) -> None:
    ids = iter(range(10**6))
    me = OwnMembership(
        user_id="@a:x", device_id="D1", new_membership_id=lambda: f"id{next(ids)}", expires_ms=8000
    )
    table = MembershipTable(own=me.device)
    table.set_joined_users(["@a:x"], T0)
    now = T0
    for op in operations:
        if isinstance(op, int):
            now += op
            actions = me.tick(now) + me.observe(table.tick(now), now)
        elif isinstance(op, MemberStateEvent):
            actions = me.observe(table.handle(op, now), now)
        else:
            try:
                actions = me.handle(op, now)
            except MembershipStateError:
                continue
        for action in actions:
            if isinstance(action, SendMemberState):
                parsed = parse_member_content(action.content)
                assert isinstance(parsed, CallMember | MemberLeave)
                if isinstance(parsed, CallMember):
                    assert parsed.device_id == "D1"
                    assert parsed.expires_at(0) == now + 8000  # valid a full period from now
        assert (me.next_deadline() is None) == (me.state is OwnState.IDLE)

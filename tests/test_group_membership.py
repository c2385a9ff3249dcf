"""The room's call membership table and our own membership: sequences of state events, room
joins and leaves and clock ticks in, asserted member events and contents out."""

import itertools
from typing import Any

import pytest

from sealcall.group import (
    TRANSITIONS,
    Ignored,
    JoinCall,
    LeaveCall,
    MemberDevice,
    MemberLeft,
    MemberRejoined,
    MembershipStateError,
    MembershipTable,
    MemberStateEvent,
    OwnMembership,
    OwnState,
    OwnStateChanged,
    RoomMembershipChanged,
    SendMemberState,
    member_state_key,
    places_call,
)

T0 = 1_763_856_000_000
HOUR = 3_600_000
ALICE, BOB, EVE = "@alice:example.org", "@bob:example.org", "@eve:example.org"


def content(device: str, **extra: Any) -> dict[str, Any]:
    """A member content as current js-sdk writes it (created_ts only when given)."""
    out: dict[str, Any] = {
        "application": "m.call",
        "call_id": "",
        "scope": "m.room",
        "device_id": device,
        "expires": HOUR,
        "focus_active": {"type": "mesh"},
        "foci_preferred": [{"type": "mesh"}],
    }
    out.update(extra)
    return out


def state(sender: str, device: str, body: Any, ts: int, key: str | None = None) -> MemberStateEvent:
    return MemberStateEvent(
        sender=sender,
        state_key=key if key is not None else member_state_key(sender, device),
        content=body,
        origin_server_ts=ts,
        event_id=f"${ts}",
    )


def joined(*users: str) -> MembershipTable:
    table = MembershipTable()
    table.set_joined_users(list(users), T0)
    return table


def kinds(events: list[Any]) -> list[tuple[str, str, str]]:
    """(event class, device, reason) triples, for compact assertions."""
    out = []
    for e in events:
        member = e.new if isinstance(e, MemberRejoined) else e.member
        reason = e.reason.value if isinstance(e, MemberLeft) else ""
        out.append((type(e).__name__, member.device.device_id, reason))
    return out


def test_join_then_leave_with_empty_content() -> None:
    table = joined(ALICE)
    events = table.handle(state(ALICE, "A1", content("A1"), T0), T0)
    assert kinds(events) == [("MemberJoined", "A1", "")]
    member = table.members()[0]
    assert member.device == MemberDevice(ALICE, "A1")
    assert member.created == T0  # no created_ts: the event's own timestamp
    assert member.expires_at == T0 + HOUR
    assert member.member_id == f"{ALICE}:A1"
    assert {member: "connection"}[member] == "connection"  # members key the mesh's dicts

    events = table.handle(state(ALICE, "A1", {}, T0 + 10), T0 + 10)
    assert kinds(events) == [("MemberLeft", "A1", "left")]
    assert table.members() == []
    assert table.next_deadline() is None


def test_refresh_keeps_the_member_and_moves_its_expiry() -> None:
    table = joined(ALICE)
    table.handle(state(ALICE, "A1", content("A1"), T0), T0)
    assert table.next_deadline() == T0 + HOUR
    # js-sdk's refresh: created_ts kept (the first event's timestamp), expires grown.
    refresh = content("A1", expires=2 * HOUR, created_ts=T0)
    assert table.handle(state(ALICE, "A1", refresh, T0 + HOUR - 5000), T0 + HOUR - 5000) == []
    assert table.next_deadline() == T0 + 2 * HOUR
    assert table.tick(T0 + HOUR + 1) == []
    assert [m.device.device_id for m in table.members()] == ["A1"]


def test_expiry_without_refresh() -> None:
    table = joined(ALICE, BOB)
    table.handle(state(ALICE, "A1", content("A1"), T0), T0)
    table.handle(state(BOB, "B1", content("B1", expires=2 * HOUR), T0), T0)
    assert table.next_deadline() == T0 + HOUR
    assert table.tick(T0 + HOUR - 1) == []
    assert kinds(table.tick(T0 + HOUR)) == [("MemberLeft", "A1", "expired")]
    assert table.next_deadline() == T0 + 2 * HOUR
    # Expiry also applies before any other input handled later.
    events = table.handle(RoomMembershipChanged(EVE, True), T0 + 3 * HOUR)
    assert kinds(events) == [("MemberLeft", "B1", "expired")]
    assert table.members() == []


def test_event_already_expired_on_arrival_is_not_counted() -> None:
    table = joined(ALICE)
    assert table.handle(state(ALICE, "A1", content("A1"), T0), T0 + HOUR) == []
    assert table.ignored[Ignored.STALE] == 1


def test_spoofed_sender_is_ignored_and_counted() -> None:
    table = joined(ALICE, EVE)
    table.handle(state(ALICE, "A1", content("A1"), T0), T0)
    alice_key = member_state_key(ALICE, "A1")
    # Eve writes at Alice's key: neither a fake member nor Alice's removal.
    assert (
        table.handle(
            state(EVE, "A1", content("A1", membershipID="evil"), T0 + 1, alice_key), T0 + 1
        )
        == []
    )
    assert table.handle(state(EVE, "A1", {}, T0 + 2, alice_key), T0 + 2) == []
    assert (
        table.handle(state(EVE, "X", content("X"), T0 + 3, member_state_key(BOB, "X")), T0 + 3)
        == []
    )
    assert table.ignored[Ignored.SPOOFED] == 3
    (member,) = table.members()
    assert member.device == MemberDevice(ALICE, "A1")
    assert member.member_id == f"{ALICE}:A1"


def test_sender_not_joined_counts_only_once_joined() -> None:
    table = joined(ALICE)
    assert table.handle(state(BOB, "B1", content("B1"), T0), T0) == []
    assert table.ignored[Ignored.NOT_JOINED] == 1
    assert table.members() == []
    assert kinds(table.handle(RoomMembershipChanged(BOB, True), T0 + 5)) == [
        ("MemberJoined", "B1", "")
    ]


def test_user_leaving_the_room_removes_its_devices_for_good() -> None:
    table = joined(ALICE, BOB)
    table.handle(state(BOB, "B1", content("B1"), T0), T0)
    table.handle(state(BOB, "B2", content("B2"), T0), T0)
    events = table.handle(RoomMembershipChanged(BOB, False), T0 + 1)
    assert kinds(events) == [
        ("MemberLeft", "B1", "user_left_room"),
        ("MemberLeft", "B2", "user_left_room"),
    ]
    # Back in the room, the old (unexpired) memberships do not come back as ghosts.
    assert table.handle(RoomMembershipChanged(BOB, True), T0 + 2) == []
    assert table.members() == []


def test_legacy_memberships_form_is_ignored() -> None:
    table = joined(ALICE)
    legacy = {"memberships": [dict(content("A1"), membershipID="m", expires_ts=T0 + HOUR)]}
    assert table.handle(state(ALICE, "A1", legacy, T0, key=ALICE), T0) == []  # per-user key
    assert table.handle(state(ALICE, "A1", legacy, T0), T0) == []  # at a device key too
    assert table.ignored[Ignored.LEGACY] == 2
    assert table.members() == []


def test_content_is_read_not_the_key() -> None:
    table = joined(ALICE)
    # js-sdk 37's key has no "_m.call"; the device comes from the content.
    events = table.handle(state(ALICE, "A1", content("A1"), T0, key=f"_{ALICE}_A1"), T0)
    assert kinds(events) == [("MemberJoined", "A1", "")]
    assert table.members()[0].state_key == f"_{ALICE}_A1"


def test_rejoin_with_new_membership_id() -> None:
    table = joined(ALICE)
    table.handle(state(ALICE, "A1", content("A1", membershipID="m1", created_ts=T0), T0), T0)
    events = table.handle(
        state(ALICE, "A1", content("A1", membershipID="m2", created_ts=T0 + 9), T0 + 9), T0 + 9
    )
    assert len(events) == 1
    rejoined = events[0]
    assert isinstance(rejoined, MemberRejoined)
    assert (rejoined.old.member_id, rejoined.new.member_id) == ("m1", "m2")


def test_jssdk_rejoin_is_seen_from_its_new_created_ts() -> None:
    # js-sdk writes the same membershipID each time; a fresh join omits created_ts.
    table = joined(ALICE)
    table.handle(state(ALICE, "A1", content("A1"), T0), T0)
    assert table.handle(state(ALICE, "A1", content("A1", created_ts=T0), T0 + 50), T0 + 50) == []
    events = table.handle(state(ALICE, "A1", content("A1"), T0 + 99), T0 + 99)
    assert kinds(events) == [("MemberRejoined", "A1", "")]


def test_malformed_and_foreign_contents() -> None:
    table = joined(ALICE)
    table.handle(state(ALICE, "A1", content("A1"), T0), T0)
    # The sender's own malformed write replaced its membership in the room state.
    events = table.handle(
        state(ALICE, "A1", {"device_id": 5, "application": "m.call"}, T0 + 1), T0 + 1
    )
    assert kinds(events) == [("MemberLeft", "A1", "left")]
    assert table.ignored[Ignored.MALFORMED] == 1
    other = content("A2", call_id="breakout")
    assert table.handle(state(ALICE, "A2", other, T0 + 2), T0 + 2) == []
    assert table.ignored[Ignored.OTHER_CALL] == 1
    bad_key = state(ALICE, "A3", content("A3"), T0 + 3, key="not-a-user")
    assert table.handle(bad_key, T0 + 3) == []
    hostile = MemberStateEvent(sender=5, state_key="_@a:x_D", content={}, origin_server_ts=True)  # type: ignore[arg-type]
    assert table.handle(hostile, T0 + 4) == []
    assert table.ignored[Ignored.BAD_STATE_KEY] == 1
    assert table.ignored[Ignored.MALFORMED] == 2
    assert table.members() == []


def test_member_cap_drops_new_devices_and_counts() -> None:
    own = MemberDevice(ALICE, "OWN")
    table = MembershipTable(own=own, max_members=3)
    table.set_joined_users([ALICE, BOB], T0)
    for i in range(5):
        table.handle(state(BOB, f"B{i}", content(f"B{i}"), T0), T0)
    assert [m.device.device_id for m in table.members()] == ["B0", "B1", "B2"]
    assert table.ignored[Ignored.OVER_CAPACITY] == 2
    # Our own device is always tracked, and known devices still refresh and leave.
    assert kinds(table.handle(state(ALICE, "OWN", content("OWN"), T0), T0)) == [
        ("MemberJoined", "OWN", "")
    ]
    assert table.handle(state(BOB, "B0", content("B0", created_ts=T0), T0 + 1), T0 + 1) == []
    assert kinds(table.handle(state(BOB, "B1", {}, T0 + 2), T0 + 2)) == [
        ("MemberLeft", "B1", "left")
    ]


def test_places_call_is_the_lower_device() -> None:
    a1, a2, b1 = MemberDevice(ALICE, "A1"), MemberDevice(ALICE, "A2"), MemberDevice(BOB, "A0")
    assert places_call(a1, b1)
    assert not places_call(b1, a1)
    assert places_call(a1, a2)
    assert not places_call(a2, a1)
    for x, y in itertools.permutations([a1, a2, b1], 2):
        assert places_call(x, y) != places_call(y, x)  # exactly one side calls
    with pytest.raises(ValueError, match="itself"):
        places_call(a1, a1)


# -- our own membership --------------------------------------------------------------------


def own_membership(expires_ms: int = HOUR) -> OwnMembership:
    ids = iter(["m1", "m2", "m3"])
    return OwnMembership(
        user_id=ALICE, device_id="OWN", new_membership_id=lambda: next(ids), expires_ms=expires_ms
    )


def sent(actions: list[Any]) -> list[SendMemberState]:
    return [a for a in actions if isinstance(a, SendMemberState)]


def test_own_join_refresh_leave() -> None:
    me = own_membership()
    table = MembershipTable(own=me.device)
    table.set_joined_users([ALICE], T0)
    (join,) = sent(me.handle(JoinCall(intent="audio"), T0))
    assert join.state_key == f"_{ALICE}_OWN_m.call"
    assert join.content == {
        "application": "m.call",
        "call_id": "",
        "scope": "m.room",
        "device_id": "OWN",
        "membershipID": "m1",
        "expires": HOUR,
        "m.call.intent": "audio",
        "focus_active": {"type": "mesh"},
        "foci_preferred": [{"type": "mesh"}],
        "created_ts": T0,
    }
    assert me.state is OwnState.JOINING
    # The echo of our join makes us joined.
    echo = table.handle(state(ALICE, "OWN", join.content, T0 + 40, key=join.state_key), T0 + 40)
    assert me.observe(echo, T0 + 40) == [OwnStateChanged(OwnState.JOINING, OwnState.JOINED)]
    # Refresh at 75 % of the validity: same session, valid for another hour from now.
    assert me.next_deadline() == T0 + HOUR * 3 // 4
    assert me.tick(T0 + HOUR // 2) == []
    (refresh,) = sent(me.tick(T0 + HOUR * 3 // 4))
    assert refresh.content["created_ts"] == T0
    assert refresh.content["membershipID"] == "m1"
    assert refresh.content["expires"] == HOUR * 3 // 4 + HOUR
    later = T0 + HOUR * 3 // 4 + 100
    echo = table.handle(state(ALICE, "OWN", refresh.content, later), later)
    assert echo == []  # a refresh is no news to the others either
    assert table.tick(T0 + HOUR + HOUR // 2) == []  # the refresh kept us past the first hour
    # Leave: {} at the same key, and no more refreshes.
    actions = me.handle(LeaveCall(), T0 + HOUR + 1)
    assert sent(actions) == [SendMemberState(join.state_key, {})]
    assert me.state is OwnState.IDLE
    assert me.next_deadline() is None
    assert me.observe(table.handle(state(ALICE, "OWN", {}, T0 + HOUR + 5), T0 + HOUR + 5), T0) == []
    # Joining again is a new session.
    (again,) = sent(me.handle(JoinCall(), T0 + HOUR + 9))
    assert (again.content["membershipID"], again.content["created_ts"]) == ("m2", T0 + HOUR + 9)


def test_late_echo_of_a_session_we_left_is_not_cleared_again() -> None:
    me = own_membership()
    table = MembershipTable(own=me.device)
    table.set_joined_users([ALICE], T0)
    (join,) = sent(me.handle(JoinCall(), T0))
    me.handle(LeaveCall(), T0 + 1)
    # The echo of the join comes after we left; our leave is already on its way.
    echo = table.handle(state(ALICE, "OWN", join.content, T0 + 2), T0 + 2)
    assert kinds(echo) == [("MemberJoined", "OWN", "")]
    assert me.observe(echo, T0 + 2) == []


def test_own_membership_vanishing_makes_us_join_again_as_a_new_session() -> None:
    me = own_membership()
    table = MembershipTable(own=me.device)
    table.set_joined_users([ALICE], T0)
    (join,) = sent(me.handle(JoinCall(), T0))
    me.observe(table.handle(state(ALICE, "OWN", join.content, T0, key=join.state_key), T0), T0)
    assert me.state is OwnState.JOINED
    # The delayed leave fired (we stalled): the room state says we left.
    gone = table.handle(state(ALICE, "OWN", {}, T0 + 5), T0 + 5)
    actions = me.observe(gone, T0 + 5)
    (again,) = sent(actions)
    assert again.content["membershipID"] == "m2"
    assert again.content["created_ts"] == T0 + 5
    assert me.state is OwnState.JOINING


def test_leftover_own_membership_from_an_earlier_run_is_cleared() -> None:
    me = own_membership()
    table = MembershipTable(own=me.device)
    table.set_joined_users([ALICE], T0)
    ghost = content("OWN", membershipID="crashed", created_ts=T0 - 1000)
    events = table.handle(state(ALICE, "OWN", ghost, T0), T0)
    assert sent(me.observe(events, T0)) == [SendMemberState(member_state_key(ALICE, "OWN"), {})]
    # While joining, a leftover is not ours and does not confirm the join.
    me.handle(JoinCall(), T0 + 1)
    assert me.observe(events, T0 + 1) == []
    assert me.state is OwnState.JOINING


def test_own_commands_in_the_wrong_state_are_refused() -> None:
    me = own_membership()
    with pytest.raises(MembershipStateError):
        me.handle(LeaveCall(), T0)
    me.handle(JoinCall(), T0)
    with pytest.raises(MembershipStateError):
        me.handle(JoinCall(), T0)
    assert all(state in OwnState for state, _ in TRANSITIONS)


def test_expires_ms_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        own_membership(expires_ms=0)

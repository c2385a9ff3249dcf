"""Room membership events reach the membership table through a queue, after a ``/state``
snapshot: an older event applied after a newer state must not take a joined user out of the
call (seen in the group demo: a member's stale invite, applied after its join, made every
device ignore its call membership as "sender not joined")."""

from types import SimpleNamespace

from nio.rooms import MatrixRoom

from sealcall.group import (
    MemberDevice,
    MembershipTable,
    MemberStateEvent,
    RoomMembershipChanged,
    mesh_member,
)
from sealcall.session.group_membership import ROOM_MEMBER, table_input
from sealcall.transport.matrix import StateEvent

ROOM = "!room:hs"
NOW = 1_000_000


def member_event(user: str, membership: str, ts: int) -> StateEvent:
    return StateEvent(ROOM, user, ROOM_MEMBER, user, {"membership": membership}, ts)


def client_view(joined: list[str], invited: tuple[str, ...] = ()) -> SimpleNamespace:
    """A transport whose client sees ``joined`` in the room (and ``invited`` invited)."""
    room = MatrixRoom(ROOM, "@me:hs")
    for user in joined:
        room.add_member(user, None, None)
    for user in invited:
        room.add_member(user, None, None, invited=True)
    return SimpleNamespace(client=SimpleNamespace(rooms={ROOM: room}))


def test_a_stale_invite_does_not_take_a_joined_user_out() -> None:
    transport = client_view(["@x:hs", "@me:hs"])
    stale = table_input(member_event("@x:hs", "invite", NOW - 5000), transport)  # type: ignore[arg-type]
    assert stale == RoomMembershipChanged("@x:hs", True)


def test_the_client_view_decides_both_ways() -> None:
    left = client_view(["@me:hs"])
    assert table_input(member_event("@x:hs", "join", NOW), left) == RoomMembershipChanged(  # type: ignore[arg-type]
        "@x:hs", False
    )
    invited = client_view(["@me:hs"], invited=("@x:hs",))
    assert table_input(member_event("@x:hs", "join", NOW), invited) == RoomMembershipChanged(  # type: ignore[arg-type]
        "@x:hs", False
    )
    # No view of the room (no client): the event's own content.
    assert table_input(member_event("@x:hs", "join", NOW)) == RoomMembershipChanged("@x:hs", True)


def test_the_member_stays_in_the_table_after_a_stale_replay() -> None:
    transport = client_view(["@x:hs", "@me:hs"])
    table = MembershipTable(own=MemberDevice("@me:hs", "ME"))
    table.set_joined_users(["@x:hs", "@me:hs"], NOW)
    content = mesh_member(device_id="XDEV", membership_id="s1", created_ts=NOW, expires=60_000)
    key = "_@x:hs_XDEV_m.call"
    table.handle(MemberStateEvent("@x:hs", key, content.to_json(), NOW, "$m"), NOW)
    assert [m.device for m in table.members()] == [MemberDevice("@x:hs", "XDEV")]
    for event in (member_event("@x:hs", "invite", NOW - 9000), member_event("@x:hs", "join", NOW)):
        table.handle(table_input(event, transport), NOW + 1)  # type: ignore[arg-type]
    assert [m.device for m in table.members()] == [MemberDevice("@x:hs", "XDEV")]

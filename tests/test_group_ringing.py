"""RingTable, group-call ringing without I/O: which notifications ring, until when, why a ring
stops; hostile notifications and declines (malformed, our own, stale, stretched lifetimes,
floods) are dropped and counted; fuzzed input sequences keep the table bounded and consistent."""

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealcall.group import (
    MAX_RINGS_PER_ROOM,
    CallSnapshot,
    CallStateReceived,
    DeclineReceived,
    FetchCallState,
    GroupRing,
    MemberStateEvent,
    NoRingError,
    NotificationReceived,
    RingDeclined,
    RingEnded,
    RingEndReason,
    RingEvent,
    RingIgnored,
    RingStarted,
    RingTable,
    RoomMembershipChanged,
    decline,
    member_state_key,
    mesh_member,
    ring_notification,
)

from fuzz_helpers import json_values

ME = "@me:example.org"
ALICE = "@alice:example.org"
BOB = "@bob:example.org"
ROOM = "!room:example.org"
NOW = 1_763_856_000_000


def ring_content(sent: int = NOW, **changes: Any) -> dict[str, Any]:
    return {**ring_notification("$member", sent).to_json(), **changes}


def notified(
    event_id: str = "$ring",
    *,
    sender: str = ALICE,
    room: str = ROOM,
    content: Any = None,
    server_ts: int = NOW,
) -> NotificationReceived:
    body = ring_content() if content is None else content
    return NotificationReceived(room, sender, event_id, body, server_ts)


def member(user: str, device: str = "D", ts: int = NOW) -> MemberStateEvent:
    content = mesh_member(
        device_id=device, membership_id="m-" + device, created_ts=ts, expires=3_600_000
    ).to_json()
    return MemberStateEvent(user, member_state_key(user, device), content, ts, f"$m-{user}{device}")


def left(user: str, device: str = "D", ts: int = NOW) -> MemberStateEvent:
    return MemberStateEvent(user, member_state_key(user, device), {}, ts, f"$l-{user}{device}")


def snapshot(room: str = ROOM, *members: MemberStateEvent) -> CallSnapshot:
    """The room's call state: ``members`` (Alice alone by default), all joined to the room."""
    members = members or (member(ALICE),)
    return CallSnapshot(room, members, tuple(sorted({m.sender for m in members} | {ME})))


def ringing(table: RingTable, item: NotificationReceived, now: int = NOW) -> list[RingEvent]:
    """Feed a notification and, when asked, the room's call state (Alice in the call)."""
    out = table.handle(item, now)
    if FetchCallState(item.room_id) in out:
        out = [e for e in out if not isinstance(e, FetchCallState)]
        out += table.handle(snapshot(item.room_id), now)
    return out


def started(events: list[RingEvent]) -> list[str]:
    return [e.ring.event_id for e in events if isinstance(e, RingStarted)]


def ended(events: list[RingEvent]) -> list[tuple[str, RingEndReason]]:
    return [(e.ring.event_id, e.reason) for e in events if isinstance(e, RingEnded)]


def test_a_ring_starts_once_the_rooms_call_state_is_read() -> None:
    table = RingTable(ME)
    assert table.handle(notified(), NOW) == [FetchCallState(ROOM)]
    assert table.ringing() == []  # not before we know whether we are in the call already
    # A second ring in the room while it is being read asks for nothing more.
    assert table.handle(notified("$ring2", sender=BOB), NOW) == []
    out = table.handle(snapshot(ROOM, member(ALICE), member(BOB)), NOW)
    assert started(out) == ["$ring", "$ring2"]
    [ring, _] = table.ringing()
    assert (ring.room_id, ring.sender, ring.member_event_id) == (ROOM, ALICE, "$member")
    assert ring.ring_until == NOW + 30_000
    assert table.next_deadline() == NOW + 30_000


def test_own_rings_other_kinds_rings_for_others_and_duplicates_do_not_ring() -> None:
    table = RingTable(ME)
    assert ringing(table, notified("$own", sender=ME)) == []
    assert (
        ringing(table, notified("$n", content=ring_content(notification_type="notification"))) == []
    )
    others = {"m.mentions": {"user_ids": [BOB], "room": False}}
    assert ringing(table, notified("$bob", content=ring_content(**others))) == []
    assert started(ringing(table, notified("$r"))) == ["$r"]
    assert ringing(table, notified("$r")) == []
    assert table.ignored == {
        RingIgnored.OWN: 1,
        RingIgnored.NOT_A_RING: 1,
        RingIgnored.NOT_FOR_US: 1,
        RingIgnored.DUPLICATE: 1,
    }
    # Named, or no m.mentions at all (the room's): it rings.
    named = {"m.mentions": {"user_ids": [ME], "room": False}}
    assert started(ringing(table, notified("$me", room="!b:x", content=ring_content(**named))))
    bare = {k: v for k, v in ring_content().items() if k != "m.mentions"}
    assert started(ringing(table, notified("$bare", room="!c:x", content=bare)))


@pytest.mark.parametrize(
    "item",
    [
        notified(content="ring"),
        notified(content={"notification_type": "ring"}),
        notified(content=ring_content(lifetime=-1)),
        notified(content=ring_content(lifetime=True)),
        notified(content=ring_content(notification_type="call")),
        notified(content=ring_content(**{"m.relates_to": {"event_id": 5}})),
        notified(event_id=""),
        notified(sender="\ud800"),
        notified(server_ts=-5),
        NotificationReceived(ROOM, ALICE, "$x", ring_content(), True),  # type: ignore[arg-type]
        DeclineReceived(
            ROOM, BOB, {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$r"}}
        ),
        DeclineReceived(ROOM, BOB, []),
    ],
)
def test_a_malformed_notification_or_decline_is_dropped_and_counted(item: Any) -> None:
    table = RingTable(ME)
    assert table.handle(item, NOW) == []
    assert table.ignored == {RingIgnored.MALFORMED: 1}
    assert table.ringing() == []


def test_a_notification_past_its_lifetime_does_not_ring() -> None:
    table = RingTable(ME)
    # From an initial sync: sent two minutes ago, its lifetime long over.
    old = notified(content=ring_content(NOW - 120_000), server_ts=NOW - 120_000)
    assert ringing(table, old) == []
    # Its lifetime says ten minutes, but a receiver rings at most 90 s.
    stretched = notified(
        "$stretched", content=ring_content(NOW - 91_000, lifetime=600_000), server_ts=NOW - 91_000
    )
    assert ringing(table, stretched) == []
    assert table.ignored == {RingIgnored.STALE: 2}


def test_a_lifetime_is_capped_at_90_s_whatever_the_clocks_say() -> None:
    table = RingTable(ME)
    long = notified("$long", content=ring_content(lifetime=10**9))
    ringing(table, long)
    # The sender's clock is 5 minutes ahead of the server's: the server's time counts.
    ahead = notified("$ahead", sender=BOB, content=ring_content(NOW + 300_000, lifetime=60_000))
    ringing(table, ahead)
    # The server's timestamp itself claims the future: still 90 s from now at most.
    future = NOW + 10**9
    forged = notified("$forged", room="!b:x", content=ring_content(future), server_ts=future)
    ringing(table, forged)
    until = {r.event_id: r.ring_until for r in table.ringing()}
    assert until == {"$long": NOW + 90_000, "$ahead": NOW + 60_000, "$forged": NOW + 90_000}
    assert max(until.values()) <= NOW + 90_000


def test_rings_expire() -> None:
    table = RingTable(ME)
    ringing(table, notified())
    assert table.tick(NOW + 29_999) == []
    assert ended(table.tick(NOW + 30_000)) == [("$ring", RingEndReason.EXPIRED)]
    assert table.ringing() == []
    assert table.next_deadline() is None


def test_joining_here_or_on_another_device_stops_the_ring_and_keeps_the_room_quiet() -> None:
    table = RingTable(ME)
    ringing(table, notified("$1"))
    assert ended(table.joined(ROOM, NOW)) == [("$1", RingEndReason.JOINED)]
    assert ringing(table, notified("$2")) == []
    assert table.ignored[RingIgnored.IN_CALL] == 1
    table.left(ROOM)
    assert started(ringing(table, notified("$3"))) == ["$3"]
    # Another device of ours joins: seen in the room's call state.
    out = table.handle(CallStateReceived(ROOM, member(ME, "OTHER")), NOW)
    assert ended(out) == [("$3", RingEndReason.JOINED)]


def test_a_room_whose_call_we_are_in_or_that_is_over_does_not_ring() -> None:
    table = RingTable(ME)
    assert table.handle(notified("$1"), NOW) == [FetchCallState(ROOM)]
    assert table.handle(snapshot(ROOM, member(ALICE), member(ME, "OTHER")), NOW) == []
    assert table.handle(notified("$2", room="!b:x"), NOW) == [FetchCallState("!b:x")]
    assert table.handle(snapshot("!b:x", left(ALICE)), NOW) == []
    assert table.ignored == {RingIgnored.IN_CALL: 1, RingIgnored.CALL_ENDED: 1}
    # Unreadable state: the ring rings (and expires).
    assert table.handle(notified("$3", room="!c:x"), NOW) == [FetchCallState("!c:x")]
    assert started(table.handle(CallSnapshot("!c:x", None), NOW)) == ["$3"]


def test_the_ring_stops_when_everybody_left_the_call() -> None:
    table = RingTable(ME)
    table.handle(notified(), NOW)
    table.handle(snapshot(ROOM, member(ALICE), member(BOB)), NOW)
    assert table.handle(CallStateReceived(ROOM, left(ALICE)), NOW) == []
    out = table.handle(CallStateReceived(ROOM, RoomMembershipChanged(BOB, False)), NOW)
    assert ended(out) == [("$ring", RingEndReason.CALL_ENDED)]
    # A membership that expires ends it too.
    table.handle(notified("$2", room="!b:x"), NOW)
    short = mesh_member(device_id="D", membership_id="m", created_ts=NOW, expires=10_000).to_json()
    alone = MemberStateEvent(ALICE, member_state_key(ALICE, "D"), short, NOW, "$m")
    table.handle(CallSnapshot("!b:x", (alone,), (ALICE, ME)), NOW)
    assert table.next_deadline() == NOW + 10_000
    assert ended(table.tick(NOW + 10_000)) == [("$2", RingEndReason.CALL_ENDED)]
    # The room's state is not kept once it rings no more.
    assert table.handle(CallStateReceived(ROOM, member(ALICE)), NOW) == []


def test_declines_here_elsewhere_and_of_our_own_rings() -> None:
    table = RingTable(ME)
    with pytest.raises(NoRingError):
        table.decline(ROOM, NOW)
    ringing(table, notified("$1"))
    assert ended(table.decline(ROOM, NOW)) == [("$1", RingEndReason.DECLINED)]
    # The echo of our decline changes nothing; a late copy of the ring does not ring again.
    assert table.handle(DeclineReceived(ROOM, ME, decline("$1").to_json()), NOW) == []
    assert ringing(table, notified("$1")) == []
    ringing(table, notified("$2"))
    out = table.handle(DeclineReceived(ROOM, ME, decline("$2").to_json()), NOW)
    assert ended(out) == [("$2", RingEndReason.DECLINED_ELSEWHERE)]
    # Someone declines a ring we sent: reported; one we did not send: counted.
    table.sent(ROOM, "$mine")
    out = table.handle(DeclineReceived(ROOM, BOB, decline("$mine").to_json()), NOW)
    assert out == [RingDeclined(ROOM, BOB, "$mine")]
    assert table.handle(DeclineReceived("!b:x", BOB, decline("$mine").to_json()), NOW) == []
    assert table.ignored[RingIgnored.UNKNOWN_RING] == 1


def test_rings_are_bounded_per_room_and_in_all() -> None:
    table = RingTable(ME, max_rings=6)
    for n in range(MAX_RINGS_PER_ROOM + 2):
        ringing(table, notified(f"$r{n}", sender=f"@u{n}:x"))
    for n in range(4):
        ringing(table, notified(f"$s{n}", room=f"!r{n}:x"))
    assert len([r for r in table.ringing() if r.room_id == ROOM]) == MAX_RINGS_PER_ROOM
    assert len(table.ringing()) == 6
    assert table.ignored == {RingIgnored.OVER_CAPACITY: 4}


ROOMS = st.sampled_from([ROOM, "!b:x"])
USERS = st.sampled_from([ME, ALICE, BOB])
IDS = st.sampled_from(["$1", "$2", "$3", ""])
TIMES = st.integers(NOW - 200_000, NOW + 200_000)
CONTENTS = st.one_of(
    st.builds(ring_content, TIMES, lifetime=st.integers(-5, 10**6)),
    st.builds(lambda e: decline(e).to_json(), IDS),
    json_values(),
)
INPUTS = st.one_of(
    st.builds(NotificationReceived, ROOMS, USERS, IDS, CONTENTS, TIMES),
    st.builds(DeclineReceived, ROOMS, USERS, CONTENTS),
    st.builds(
        CallStateReceived,
        ROOMS,
        st.one_of(
            st.builds(member, USERS, st.sampled_from("DE"), TIMES),
            st.builds(left, USERS),
            st.builds(RoomMembershipChanged, USERS, st.booleans()),
        ),
    ),
    st.builds(lambda r: snapshot(r), ROOMS),
    st.builds(lambda r: CallSnapshot(r, None), ROOMS),
    st.tuples(st.sampled_from(["joined", "left", "decline", "tick", "sent"]), ROOMS, IDS),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(INPUTS, st.integers(0, 40_000)), max_size=25))
def test_fuzzed_inputs_keep_the_table_bounded_and_consistent(steps: list[Any]) -> None:
    table = RingTable(ME, max_rings=3, max_rings_per_room=2)
    now = NOW
    live: set[GroupRing] = set()
    for item, elapsed in steps:
        now += elapsed
        if isinstance(item, tuple):
            command, room, event_id = item
            if command == "decline":
                try:
                    out = table.decline(room, now)
                except NoRingError:
                    out = []
            elif command == "joined":
                out = table.joined(room, now)
            elif command == "left":
                table.left(room)
                out = []
            elif command == "sent":
                table.sent(room, event_id)
                out = []
            else:
                out = table.tick(now)
        else:
            out = table.handle(item, now)
        for event in out:
            if isinstance(event, RingStarted):
                assert event.ring not in live
                assert event.ring.sender != ME
                assert now < event.ring.ring_until <= now + 90_000
                live.add(event.ring)
            elif isinstance(event, RingEnded):
                live.remove(event.ring)  # only a ring that started ends, once
        rings = table.ringing()
        assert set(rings) == live
        assert len(rings) <= 3
        assert all(sum(r.room_id == room for r in rings) <= 2 for room in (ROOM, "!b:x"))
        assert all(r.ring_until > now for r in rings)

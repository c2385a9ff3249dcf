"""The SFU's admission core (sans-I/O), table by table: the verdict for each kind of join, the
disconnect for each way a membership ends, join tokens, and the room's focus selection."""

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from sealcall.group.focus import (
    ACTIVE_SFU_FOCUS,
    SFU_FOCUS_TYPE,
    SfuFocus,
    parse_sfu_focus,
    preferred_sfu,
    select_sfu,
    sfu_member,
)
from sealcall.group.member_event import member_state_key, mesh_member
from sealcall.group.membership import MembershipTable, MemberStateEvent
from sealcall.sfu.admission import (
    Admission,
    AdmissionStateError,
    Admitted,
    CheckToken,
    Disconnect,
    JoinRequest,
    JoinRequested,
    LoadRoom,
    MemberStateChanged,
    Participant,
    Refusal,
    Refused,
    RoomLoaded,
    RoomUserChanged,
    Tick,
    TokenChecked,
)
from sealcall.sfu.join_token import JoinTokenError, JoinTokenRefusal, JoinTokens
from sealcall.transport.matrix import OpenIdToken

URL = "https://sfu.test"
NOW = 1_700_000_000_000
ROOM = "!room:localhost"
ALICE, BOB, SFU = "@alice:localhost", "@bob:localhost", "@sfu:localhost"
HOUR = 3_600_000
TOKEN = OpenIdToken("secret-openid", "Bearer", "localhost", 3600)


def sfu_content(
    device: str = "A", membership: str = "m1", created: int = NOW - 1000, url: str = URL, **kw: Any
) -> dict[str, Any]:
    member = sfu_member(
        device_id=device, membership_id=membership, created_ts=created, expires=HOUR, sfu_url=url
    )
    return {**member.to_json(), **kw}


def event(
    content: Any, user: str = ALICE, device: str = "A", sender: str | None = None, ts: int = NOW
) -> MemberStateEvent:
    return MemberStateEvent(sender or user, member_state_key(user, device), content, ts)


def request(**changes: Any) -> JoinRequest:
    return replace(JoinRequest(ALICE, "A", ROOM, TOKEN), **changes)


@dataclass
class Case:
    name: str
    events: list[MemberStateEvent] = field(default_factory=lambda: [event(sfu_content())])
    joined: tuple[str, ...] = (ALICE, BOB)
    request: JoinRequest = field(default_factory=request)
    token_user: str | None = ALICE
    failed: bool = False
    readable: bool = True
    verdict: Refusal | None = None  # None: admitted


CASES = [
    Case("a current member with our SFU as focus"),
    Case("the token is someone else's", token_user=BOB, verdict=Refusal.BAD_TOKEN),
    Case("the token is unknown or expired", token_user=None, verdict=Refusal.BAD_TOKEN),
    Case("the homeserver cannot be asked", failed=True, verdict=Refusal.UNAVAILABLE),
    Case(
        "the token names another server than the user's",
        request=request(openid_token=replace(TOKEN, matrix_server_name="evil.test")),
        verdict=Refusal.BAD_TOKEN,
    ),
    Case(
        "a user of a server this SFU does not trust",
        request=request(
            user_id="@eve:evil.test", openid_token=replace(TOKEN, matrix_server_name="evil.test")
        ),
        verdict=Refusal.BAD_TOKEN,
    ),
    Case("no membership", events=[], verdict=Refusal.NOT_MEMBER),
    Case("another device's membership", request=request(device_id="B"), verdict=Refusal.NOT_MEMBER),
    Case(
        "an expired membership",
        events=[event(sfu_content(created=NOW - 2 * HOUR))],
        verdict=Refusal.NOT_MEMBER,
    ),
    Case("left the room", joined=(BOB,), verdict=Refusal.NOT_MEMBER),
    Case("a leave", events=[event(sfu_content()), event({})], verdict=Refusal.NOT_MEMBER),
    Case(
        "a membership written by someone else",
        events=[event(sfu_content(), sender=BOB)],
        verdict=Refusal.NOT_MEMBER,
    ),
    Case(
        "a membership of another call",
        events=[event(sfu_content(call_id="other"))],
        verdict=Refusal.NOT_MEMBER,
    ),
    Case(
        "a stale membership id",
        request=request(membership_id="m0"),
        verdict=Refusal.NOT_MEMBER,
    ),
    Case("the matching membership id", request=request(membership_id="m1")),
    Case(
        "a mesh membership",
        events=[
            event(
                mesh_member(
                    device_id="A", membership_id="m1", created_ts=NOW, expires=HOUR
                ).to_json()
            )
        ],
        verdict=Refusal.WRONG_FOCUS,
    ),
    Case(
        "the oldest membership chose another SFU",
        events=[
            event(sfu_content()),
            event(sfu_content("B", created=NOW - 5000, url="https://other.test"), BOB, "B"),
        ],
        verdict=Refusal.WRONG_FOCUS,
    ),
    Case(
        "a newer membership prefers another SFU: the oldest one's counts",
        events=[
            event(sfu_content()),
            event(sfu_content("B", created=NOW, url="https://other.test"), BOB, "B"),
        ],
    ),
    Case("the SFU cannot read the room", readable=False, verdict=Refusal.UNKNOWN_ROOM),
]


def admission() -> Admission:
    return Admission(sfu_url=URL, server_names=frozenset({"localhost"}), own_user=SFU)


def run(core: Admission, case: Case, attempt: int = 1) -> list[Any]:
    """Drive one join through the steps the core asks for; the final actions."""
    actions = core.handle(JoinRequested(attempt, case.request), NOW)
    if actions and isinstance(actions[0], Refused):
        return actions
    assert actions == [CheckToken(attempt, "localhost", case.request.openid_token.access_token)]
    actions = core.handle(TokenChecked(attempt, case.token_user, case.failed), NOW)
    if actions == [LoadRoom(ROOM)]:
        loaded = RoomLoaded(ROOM, tuple(case.events), case.joined, case.readable)
        actions = core.handle(loaded, NOW)
    return actions


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_verdicts(case: Case) -> None:
    core = admission()
    actions = run(core, case)
    assert len(actions) == 1
    if case.verdict is None:
        assert isinstance(actions[0], Admitted)
        participant = Participant(ROOM, ALICE, "A", "m1")
        assert actions[0].participant == participant
        assert core.verify(actions[0].join_token, NOW) == participant
        assert core.participants() == [participant]
    else:
        assert actions == [Refused(1, case.verdict)]
        assert core.participants() == []


def admitted() -> tuple[Admission, Participant]:
    core = admission()
    actions = run(
        core, Case("admitted", events=[event(sfu_content()), event(sfu_content("B"), BOB, "B")])
    )
    assert isinstance(actions[0], Admitted)
    return core, actions[0].participant


ENDINGS: list[tuple[str, Any, int, bool]] = [
    ("a leave", MemberStateChanged(ROOM, event({})), NOW, True),
    ("a leave with a reason", MemberStateChanged(ROOM, event({"leave_reason": "x"})), NOW, True),
    ("expiry", Tick(), NOW - 1000 + HOUR, True),
    ("not yet expired", Tick(), NOW - 1001 + HOUR, False),
    ("a rejoin", MemberStateChanged(ROOM, event(sfu_content(membership="m2"), ts=NOW)), NOW, True),
    ("left the room", RoomUserChanged(ROOM, ALICE, False), NOW, True),
    ("the SFU's account left the room", RoomUserChanged(ROOM, SFU, False), NOW, True),
    ("another user left the room", RoomUserChanged(ROOM, BOB, False), NOW, False),
    ("a refresh", MemberStateChanged(ROOM, event(sfu_content(expires=2 * HOUR))), NOW, False),
    ("another device leaves", MemberStateChanged(ROOM, event({}, BOB, "B")), NOW, False),
    ("another room", MemberStateChanged("!other:localhost", event({})), NOW, False),
    ("a spoofed leave", MemberStateChanged(ROOM, event({}, sender=BOB)), NOW, False),
    ("malformed content", MemberStateChanged(ROOM, event({"application": 5})), NOW, True),
]


@pytest.mark.parametrize(("name", "item", "now", "ends"), ENDINGS, ids=[e[0] for e in ENDINGS])
def test_a_membership_that_ends_disconnects_whoever_was_admitted_under_it(
    name: str, item: Any, now: int, ends: bool
) -> None:
    core, participant = admitted()
    assert core.next_deadline() == NOW - 1000 + HOUR
    actions = core.handle(item, now)
    assert actions == ([Disconnect(participant)] if ends else [])
    assert core.participants() == ([] if ends else [participant])


def test_a_followed_room_is_not_loaded_again_and_one_load_serves_every_waiting_join() -> None:
    core = admission()
    for attempt in (1, 2):
        core.handle(JoinRequested(attempt, request()), NOW)
    assert core.handle(TokenChecked(1, ALICE), NOW) == [LoadRoom(ROOM)]
    assert core.handle(TokenChecked(2, ALICE), NOW) == []  # waits for the same load
    actions = core.handle(RoomLoaded(ROOM, (event(sfu_content()),), (ALICE,)), NOW)
    assert [type(a) for a in actions] == [Admitted, Admitted]
    assert core.follows(ROOM)
    core.handle(JoinRequested(3, request()), NOW)
    assert isinstance(core.handle(TokenChecked(3, ALICE), NOW)[0], Admitted)


def test_an_input_out_of_step_names_the_step_and_the_input() -> None:
    core = admission()
    core.handle(JoinRequested(1, request()), NOW)
    core.handle(TokenChecked(1, ALICE), NOW)
    with pytest.raises(AdmissionStateError, match="TokenChecked in step loading_room"):
        core.handle(TokenChecked(1, ALICE), NOW)
    with pytest.raises(AdmissionStateError, match="JoinRequested in step loading_room"):
        core.handle(JoinRequested(1, request()), NOW)
    assert core.handle(TokenChecked(99, ALICE), NOW) == []  # already decided: nothing


def test_a_token_of_an_ended_membership_admits_nobody() -> None:
    core, participant = admitted()
    token, _ = core.tokens.issue(
        user_id=ALICE, device_id="A", room_id=ROOM, membership_id="m1", now_ms=NOW
    )
    assert core.verify(token, NOW) == participant
    core.handle(MemberStateChanged(ROOM, event({})), NOW)
    assert core.verify(token, NOW) is None


def test_join_tokens_forged_expired_or_malformed_are_refused_with_their_reason() -> None:
    tokens = JoinTokens()
    token, claims = tokens.issue(
        user_id=ALICE, device_id="A", room_id=ROOM, membership_id="m", now_ms=NOW
    )
    assert tokens.verify(token, NOW + 59_999) == claims
    body, _, mac = token.partition(".")
    other, _ = JoinTokens().issue(
        user_id=ALICE, device_id="A", room_id=ROOM, membership_id="m", now_ms=NOW
    )
    evil_body = (
        JoinTokens(b"x" * 32)
        .issue(user_id=BOB, device_id="A", room_id=ROOM, membership_id="m", now_ms=NOW)[0]
        .partition(".")[0]
    )
    cases = [
        (other, JoinTokenRefusal.FORGED),  # another process's secret
        (f"{evil_body}.{mac}", JoinTokenRefusal.FORGED),  # claims changed, MAC kept
        (token, JoinTokenRefusal.EXPIRED),
        ("no-dot", JoinTokenRefusal.MALFORMED),
        (f"{body}.!!!", JoinTokenRefusal.MALFORMED),
        ("é.é", JoinTokenRefusal.MALFORMED),
        (42, JoinTokenRefusal.MALFORMED),
        ("a." * 3000, JoinTokenRefusal.MALFORMED),
    ]
    for bad, reason in cases:
        with pytest.raises(JoinTokenError) as refused:
            tokens.verify(bad, NOW + 60_000)
        assert refused.value.reason is reason, bad
    with pytest.raises(ValueError, match="16 bytes"):
        JoinTokens(b"short")


def test_the_room_uses_the_sfu_of_its_oldest_sfu_membership() -> None:
    table = MembershipTable()
    table.set_joined_users([ALICE, BOB, "@carol:localhost"], NOW)
    table.handle(event(sfu_content("A", created=NOW - 10, url="https://a.test")), NOW)
    table.handle(event(sfu_content("B", created=NOW - 20, url="https://b.test"), BOB, "B"), NOW)
    # Older still, but through the mesh: not a candidate.
    mesh = mesh_member(device_id="C", membership_id="c", created_ts=NOW - 30, expires=HOUR)
    table.handle(event(mesh.to_json(), "@carol:localhost", "C"), NOW)
    assert select_sfu(table.members()) == SfuFocus("https://b.test")
    table.handle(event({}, BOB, "B"), NOW)
    assert select_sfu(table.members()) == SfuFocus("https://a.test")
    table.handle(event({}), NOW)
    assert select_sfu(table.members()) is None


def test_sfu_foci_of_other_types_or_with_bad_urls_are_skipped() -> None:
    assert parse_sfu_focus({"type": SFU_FOCUS_TYPE, "url": URL}) == SfuFocus(URL)
    for bad in (
        {"type": "livekit", "url": URL},
        {"type": SFU_FOCUS_TYPE},
        {"type": SFU_FOCUS_TYPE, "url": "ftp://x"},
        {"type": SFU_FOCUS_TYPE, "url": "https://"},
        {"type": SFU_FOCUS_TYPE, "url": "https://[::1"},
        {"type": SFU_FOCUS_TYPE, "url": "https://x/" + "a" * 2048},
        [SFU_FOCUS_TYPE],
    ):
        assert parse_sfu_focus(bad) is None, bad
    member = sfu_member(device_id="A", membership_id="m", created_ts=NOW, expires=HOUR, sfu_url=URL)
    assert member.to_json()["focus_active"] == ACTIVE_SFU_FOCUS
    skipped = replace(
        member, foci_preferred=({"type": "livekit"}, {"type": SFU_FOCUS_TYPE, "url": URL})
    )
    assert preferred_sfu(skipped) == SfuFocus(URL)
    with pytest.raises(ValueError, match="absolute"):
        sfu_member(device_id="A", membership_id="m", created_ts=NOW, expires=HOUR, sfu_url="x")


def test_a_leave_that_arrives_while_the_room_is_being_read_is_applied_after_it() -> None:
    core = admission()
    core.handle(JoinRequested(1, request()), NOW)
    assert core.handle(TokenChecked(1, ALICE), NOW) == [LoadRoom(ROOM)]
    # The snapshot was read before the leave; the leave came by sync before the snapshot did.
    assert core.handle(MemberStateChanged(ROOM, event({})), NOW) == []
    loaded = RoomLoaded(ROOM, (event(sfu_content()),), (ALICE,))
    assert core.handle(loaded, NOW) == [Refused(1, Refusal.NOT_MEMBER)]

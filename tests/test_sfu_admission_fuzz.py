"""Hypothesis over every input the SFU's admission parses: userinfo answers, join requests,
OpenID tokens, join tokens, member event contents and foci. Each ends in a value or its own
specific error, never anything else; and the admission core never crashes on hostile state."""

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealcall.group.focus import SFU_FOCUS_TYPE, parse_sfu_focus, preferred_sfu, uses_sfu
from sealcall.group.member_event import CallMember, member_state_key, parse_member_content
from sealcall.group.membership import MemberStateEvent
from sealcall.sfu.admission import (
    Admission,
    Admitted,
    JoinRequest,
    JoinRequested,
    JoinRequestError,
    MemberStateChanged,
    Refused,
    RoomLoaded,
    Tick,
    TokenChecked,
    UserinfoError,
    parse_userinfo,
)
from sealcall.sfu.join_token import JoinTokenError, JoinTokens
from sealcall.signaling import SignalingError
from sealcall.transport.matrix import OpenIdToken, OpenIdTokenError

from fuzz_helpers import json_values

NOW = 1_700_000_000_000
ROOM = "!room:localhost"
ALICE = "@alice:localhost"
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ids = st.one_of(
    st.text(max_size=12),
    st.sampled_from([ALICE, ROOM, "A", "@x:y", "!r:s", "", "@", "@:", "x" * 300]),
)


def join_requests() -> st.SearchStrategy[Any]:
    """Join requests near the real shape, plus any JSON at all."""
    token = st.fixed_dictionaries(
        {},
        optional={
            "access_token": ids,
            "token_type": st.sampled_from(["Bearer", "bearer", "", 1]),
            "matrix_server_name": ids,
            "expires_in": st.one_of(st.integers(), st.booleans(), st.floats()),
        },
    )
    shaped = st.fixed_dictionaries(
        {},
        optional={
            "user_id": ids | json_values(),
            "device_id": ids | json_values(),
            "room_id": ids | json_values(),
            "membership_id": ids | json_values(),
            "openid_token": token | json_values(),
        },
    )
    return shaped | json_values()


@FUZZ
@given(json_values() | st.fixed_dictionaries({"sub": ids | json_values()}))
def test_userinfo_answers(answer: Any) -> None:
    try:
        user = parse_userinfo(answer)
    except UserinfoError:
        return
    assert user.startswith("@")
    assert ":" in user
    assert len(user) <= 255


@FUZZ
@given(join_requests())
def test_join_requests(obj: Any) -> None:
    try:
        request = JoinRequest.parse(obj)
    except JoinRequestError:
        return
    assert JoinRequest.parse(request.to_json()) == request


def test_a_room_id_without_a_server_is_accepted() -> None:
    # Room version 12: "!" and a hash, no server name (Synapse's default for new rooms here).
    token = {
        "access_token": "t",
        "token_type": "Bearer",
        "matrix_server_name": "example.org",
        "expires_in": 60,
    }
    obj = {
        "user_id": "@a:example.org",
        "device_id": "D",
        "room_id": "!AbC1_x",
        "openid_token": token,
    }
    assert JoinRequest.parse(obj).room_id == "!AbC1_x"
    with pytest.raises(JoinRequestError):
        JoinRequest.parse({**obj, "user_id": "@nobody"})


@FUZZ
@given(json_values())
def test_openid_tokens(obj: Any) -> None:
    try:
        token = OpenIdToken.parse(obj)
    except OpenIdTokenError:
        return
    assert OpenIdToken.parse(token.to_json()) == token


@FUZZ
@given(st.one_of(st.text(max_size=200), st.binary(max_size=50), json_values()))
def test_join_tokens(token: Any) -> None:
    tokens = JoinTokens(b"k" * 32)
    try:
        tokens.verify(token, NOW)
    except JoinTokenError:
        return
    raise AssertionError("a token this process never issued was accepted")


foci = st.one_of(
    json_values(),
    st.fixed_dictionaries(
        {"type": st.just(SFU_FOCUS_TYPE)},
        optional={"url": st.text(max_size=30) | json_values(), "focus_selection": json_values()},
    ),
)
contents = st.one_of(
    json_values(),
    st.fixed_dictionaries(
        {
            "application": st.just("m.call"),
            "call_id": st.just(""),
            "device_id": st.just("A"),
            "focus_active": foci,
        },
        optional={
            "foci_preferred": st.lists(foci, max_size=3) | json_values(),
            "membershipID": ids | json_values(),
            "created_ts": st.integers() | json_values(),
            "expires": st.integers() | json_values(),
        },
    ),
)


@FUZZ
@given(contents)
def test_member_contents_and_their_foci(content: Any) -> None:
    parse_sfu_focus(content)  # never raises
    try:
        member = parse_member_content(content)
    except SignalingError:
        return
    if isinstance(member, CallMember):
        uses_sfu(member)
        preferred_sfu(member)


@FUZZ
@given(st.lists(st.tuples(contents, st.integers(0, 2 * NOW)), max_size=4), contents)
def test_the_core_never_crashes_on_hostile_member_state(
    loaded: list[tuple[Any, int]], later: Any
) -> None:
    core = Admission(sfu_url="https://sfu.test", server_names=frozenset({"localhost"}))
    key = member_state_key(ALICE, "A")
    events = tuple(MemberStateEvent(ALICE, key, c, ts) for c, ts in loaded)
    token = OpenIdToken("t", "Bearer", "localhost", 60)
    core.handle(JoinRequested(1, JoinRequest(ALICE, "A", ROOM, token)), NOW)
    core.handle(TokenChecked(1, ALICE), NOW)
    verdict = core.handle(RoomLoaded(ROOM, events, (ALICE,)), NOW)
    assert len(verdict) == 1
    assert isinstance(verdict[0], Admitted | Refused)
    core.handle(MemberStateChanged(ROOM, MemberStateEvent(ALICE, key, later, NOW)), NOW)
    core.handle(Tick(), 3 * NOW)
    assert core.participants() == []

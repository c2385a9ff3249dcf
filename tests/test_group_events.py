"""Group call events: member state contents, ring notifications and declines, read and written
as matrix-js-sdk writes them, byte for byte; malformed ones refused by a typed error."""

import json
from typing import Any

import pytest

from sealcall.group import (
    DEFAULT_EXPIRES_MS,
    MAX_RING_LIFETIME_MS,
    CallMember,
    LegacyMembershipError,
    MemberLeave,
    RtcNotification,
    StateKeyError,
    decline,
    member_state_key,
    mesh_member,
    parse_decline,
    parse_member_content,
    parse_notification,
    ring_notification,
    state_key_user,
)
from sealcall.signaling import FieldTypeError, InvalidEventError, MissingFieldError

# matrix-js-sdk 37 (the version tests/interop runs): no membershipID, no created_ts.
JSSDK_37 = (
    '{"call_id":"","scope":"m.room","application":"m.call","device_id":"ABCDEFGH",'
    '"expires":14400000,"focus_active":{"type":"livekit","focus_selection":"oldest_membership"},'
    '"foci_preferred":[{"type":"livekit","livekit_service_url":"https://lk.example.org",'
    '"livekit_alias":"!room:example.org"}]}'
)
# matrix-js-sdk today, a refresh: membershipID "@user:server:DEVICE", m.call.intent, created_ts
# last (absent on the first join), expires grown by another four hours.
JSSDK_REFRESH = (
    '{"application":"m.call","call_id":"","scope":"m.room","device_id":"ABCDEFGH",'
    '"membershipID":"@alice:example.org:ABCDEFGH","expires":28800000,"m.call.intent":"video",'
    '"focus_active":{"type":"livekit","focus_selection":"multi_sfu"},'
    '"foci_preferred":[{"type":"livekit","livekit_service_url":"https://lk.example.org"}],'
    '"created_ts":1763856000000}'
)
# Element Call with fields this library does not read, in an unusual order.
WITH_EXTRAS = (
    '{"device_id":"D","application":"m.call","call_id":"","focus_active":{"type":"mesh"},'
    '"io.element.call.extra":{"nested":[1,2,{"x":null}]},"capabilities":["audio","video"],'
    '"foci_preferred":[]}'
)
SAMPLES = [JSSDK_37, JSSDK_REFRESH, WITH_EXTRAS, "{}", '{"leave_reason":"delayed"}']


@pytest.mark.parametrize("text", SAMPLES)
def test_member_contents_round_trip_byte_for_byte(text: str) -> None:
    parsed = parse_member_content(json.loads(text))
    assert json.dumps(parsed.to_json(), separators=(",", ":")) == text


def test_jssdk_content_is_read_with_its_defaults() -> None:
    member = parse_member_content(json.loads(JSSDK_37))
    assert isinstance(member, CallMember)
    assert member.is_room_call
    assert member.device_id == "ABCDEFGH"
    assert member.focus_type == "livekit"
    # No created_ts: the event's timestamp; no membershipID: js-sdk's "@user:server:DEVICE".
    assert member.created(origin_server_ts=1000) == 1000
    assert member.expires_at(origin_server_ts=1000) == 1000 + 14_400_000
    assert member.member_id("@alice:example.org") == "@alice:example.org:ABCDEFGH"

    refresh = parse_member_content(json.loads(JSSDK_REFRESH))
    assert isinstance(refresh, CallMember)
    assert refresh.created(origin_server_ts=99) == 1_763_856_000_000
    assert refresh.expires_at(origin_server_ts=99) == 1_763_856_000_000 + 28_800_000
    assert refresh.intent == "video"


def test_absent_expires_is_four_hours() -> None:
    content = json.loads(JSSDK_37)
    del content["expires"]
    member = parse_member_content(content)
    assert isinstance(member, CallMember)
    assert member.expires_at(origin_server_ts=5) == 5 + DEFAULT_EXPIRES_MS


def test_our_join_content_has_jssdk_shape_and_order() -> None:
    member = mesh_member(device_id="DEV", membership_id="m1", created_ts=1000, expires=3600)
    assert list(member.to_json().items()) == [
        ("application", "m.call"),
        ("call_id", ""),
        ("scope", "m.room"),
        ("device_id", "DEV"),
        ("membershipID", "m1"),
        ("expires", 3600),
        ("focus_active", {"type": "mesh"}),
        ("foci_preferred", [{"type": "mesh"}]),
        ("created_ts", 1000),
    ]
    assert parse_member_content(member.to_json()) == member


@pytest.mark.parametrize("text", ["{}", '{"leave_reason":"delayed","x":1}'])
def test_leave_contents(text: str) -> None:
    assert isinstance(parse_member_content(json.loads(text)), MemberLeave)


def test_legacy_memberships_form_is_refused() -> None:
    legacy = {
        "memberships": [
            {
                "application": "m.call",
                "call_id": "",
                "scope": "m.room",
                "device_id": "D",
                "membershipID": "x",
                "expires": 3600000,
                "foci_active": [{"type": "livekit"}],
            }
        ]
    }
    with pytest.raises(LegacyMembershipError):
        parse_member_content(legacy)


def _content(**changes: Any) -> dict[str, Any]:
    content: dict[str, Any] = json.loads(JSSDK_REFRESH)
    for key, value in changes.items():
        if value is ...:
            del content[key]
        else:
            content[key] = value
    return content


@pytest.mark.parametrize(
    ("changes", "error", "field"),
    [
        ({"device_id": ...}, MissingFieldError, "content.device_id"),
        ({"device_id": ""}, FieldTypeError, "content.device_id"),
        ({"device_id": "x" * 256}, FieldTypeError, "content.device_id"),
        ({"device_id": "\ud800"}, FieldTypeError, "content.device_id"),
        ({"application": 7}, FieldTypeError, "content.application"),
        ({"call_id": None}, FieldTypeError, "content.call_id"),
        ({"focus_active": ...}, MissingFieldError, "content.focus_active"),
        ({"focus_active": []}, FieldTypeError, "content.focus_active"),
        ({"focus_active": {"type": 1}}, FieldTypeError, "content.focus_active.type"),
        ({"foci_preferred": {}}, FieldTypeError, "content.foci_preferred"),
        ({"foci_preferred": [{"t": 1}]}, FieldTypeError, "content.foci_preferred.0.type"),
        ({"created_ts": "1"}, FieldTypeError, "content.created_ts"),
        ({"created_ts": -1}, FieldTypeError, "content.created_ts"),
        ({"expires": 2**53}, FieldTypeError, "content.expires"),
        ({"expires": True}, FieldTypeError, "content.expires"),
        ({"membershipID": 5}, FieldTypeError, "content.membershipID"),
        ({"m.call.intent": []}, FieldTypeError, "content.m.call.intent"),
        ({"scope": None}, FieldTypeError, "content.scope"),
    ],
)
def test_malformed_member_content_is_refused_by_name(
    changes: dict[str, Any], error: type[InvalidEventError], field: str
) -> None:
    with pytest.raises(error) as info:
        parse_member_content(_content(**changes))
    assert info.value.field == field


@pytest.mark.parametrize("content", [None, [], "x", 5, {"leave_reason": 5}])
def test_non_object_content_is_refused(content: object) -> None:
    with pytest.raises(InvalidEventError):
        parse_member_content(content)


@pytest.mark.parametrize(
    ("key", "user", "device"),
    [
        ("_@alice:example.org_DEV_m.call", "@alice:example.org", True),
        ("@alice:example.org_DEV_m.call", "@alice:example.org", True),  # MSC3757 rooms
        ("_@alice:example.org_DEV", "@alice:example.org", True),  # js-sdk 37
        ("_@a_b:example.org:8448_DEV_m.call", "@a_b:example.org:8448", True),
        ("_@x:[::1]:8448_DEV", "@x:[::1]:8448", True),
        ("@alice:example.org", "@alice:example.org", False),  # legacy per-user key
    ],
)
def test_state_key_user(key: str, user: str, device: bool) -> None:
    assert state_key_user(key) == (user, device)


@pytest.mark.parametrize("key", ["", "_", "alice", "_@alice", "@:x_D", "_@a:x_", "_@a:_D"])
def test_bad_state_keys(key: str) -> None:
    with pytest.raises(StateKeyError):
        state_key_user(key)


def test_member_state_key() -> None:
    assert member_state_key("@a:x", "DEV") == "_@a:x_DEV_m.call"
    assert state_key_user(member_state_key("@a_b:x", "D_E")) == ("@a_b:x", True)


# What js-sdk sends to ring (MatrixRTCSession.sendCallNotify), and a decline of it.
NOTIFICATION = (
    '{"m.mentions":{"user_ids":[],"room":true},"notification_type":"ring",'
    '"m.relates_to":{"event_id":"$member:example.org","rel_type":"m.reference"},'
    '"sender_ts":1763856000000,"lifetime":30000}'
)
DECLINE = '{"m.relates_to":{"rel_type":"m.reference","event_id":"$ring:example.org"}}'


def test_notification_and_decline_round_trip_byte_for_byte() -> None:
    ring = parse_notification(json.loads(NOTIFICATION))
    assert ring.rings
    assert ring.relates_to is not None
    assert ring.relates_to.event_id == "$member:example.org"
    assert json.dumps(ring.to_json(), separators=(",", ":")) == NOTIFICATION
    declined = parse_decline(json.loads(DECLINE))
    assert declined.relates_to.event_id == "$ring:example.org"
    assert json.dumps(declined.to_json(), separators=(",", ":")) == DECLINE


def test_built_ring_and_decline_match_jssdk() -> None:
    ring = ring_notification("$member:example.org", now_ms=1_763_856_000_000)
    assert json.dumps(ring.to_json(), separators=(",", ":")) == NOTIFICATION
    assert parse_notification(ring.to_json()) == ring
    assert decline("$ring:example.org").to_json() == {
        "m.relates_to": {"event_id": "$ring:example.org", "rel_type": "m.reference"}
    }


def test_ring_lifetime_is_capped_at_90_seconds() -> None:
    content = json.loads(NOTIFICATION)
    content["lifetime"] = 10**9
    ring = parse_notification(content)
    assert ring.capped_lifetime == MAX_RING_LIFETIME_MS == 90_000
    assert ring.ring_until(origin_server_ts=1_763_856_000_500) == 1_763_856_090_000
    assert ring.to_json()["lifetime"] == 10**9  # written back as received


def test_ring_starts_at_server_time_when_sender_clock_is_off() -> None:
    ring = RtcNotification(sender_ts=1_000_000, lifetime=30_000)
    assert ring.ring_until(origin_server_ts=1_015_000) == 1_030_000  # 15 s off: sender's
    assert ring.ring_until(origin_server_ts=1_025_000) == 1_055_000  # 25 s off: server's


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"notification_type": "shout"}, "content.notification_type"),
        ({"notification_type": None}, "content.notification_type"),
        ({"lifetime": -5}, "content.lifetime"),
        ({"lifetime": 1.5}, "content.lifetime"),
        ({"sender_ts": "now"}, "content.sender_ts"),
        (
            {"m.relates_to": {"event_id": "$x", "rel_type": "m.thread"}},
            "content.m.relates_to.rel_type",
        ),
        ({"m.relates_to": {"rel_type": "m.reference"}}, "content.m.relates_to.event_id"),
        (
            {"m.relates_to": {"rel_type": "m.reference", "event_id": ""}},
            "content.m.relates_to.event_id",
        ),
        ({"m.mentions": "all"}, "content.m.mentions"),
        ({"m.mentions": {"user_ids": [1]}}, "content.m.mentions.user_ids"),
        ({"m.call.intent": 3}, "content.m.call.intent"),
    ],
)
def test_malformed_notification_is_refused_by_name(changes: dict[str, Any], field: str) -> None:
    content = json.loads(NOTIFICATION)
    content.update(changes)
    with pytest.raises(InvalidEventError) as info:
        parse_notification(content)
    assert info.value.field == field


@pytest.mark.parametrize("content", [{}, {"m.relates_to": None}, [], {"m.relates_to": {}}])
def test_malformed_decline_is_refused(content: object) -> None:
    with pytest.raises(InvalidEventError):
        parse_decline(content)

"""The SFU's control-channel messages (strict parsing, fuzzed) and its floor (sans-I/O)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealcall.sfu.control import (
    MAX_CONTROL_MESSAGE,
    ControlError,
    Floor,
    Mute,
    Subscribe,
    parse_control_message,
)
from sealcall.sfu.floor import FloorChange, FloorState
from sealcall.sfu.mute import MuteChange, MuteStates

from fuzz_helpers import json_values


def test_each_message_parses_into_its_dataclass() -> None:
    text = '{"type":"subscribe","publisher":"@a:x|D","quality":"full"}'
    assert parse_control_message(text) == Subscribe("@a:x|D", "full")
    assert parse_control_message('{"type":"floor","action":"request"}') == Floor("request")
    assert parse_control_message('{"action":"release","type":"floor"}') == Floor("release")
    text = '{"type":"mute","audio":true,"video":false}'
    assert parse_control_message(text) == Mute(audio=True, video=False)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("nope", "not JSON"),
        ("[1]", "a message must be a JSON object"),
        ('{"type":"join"}', "unknown message type"),
        ('{"type":"speaking","members":[]}', "unknown message type"),  # SFU to client only
        ('{"type":"floor"}', "missing or unexpected fields in floor"),
        ('{"type":"floor","action":"request","x":1}', "missing or unexpected fields in floor"),
        ('{"type":"floor","action":"grab"}', "action must be one of"),
        ('{"type":"subscribe","publisher":"p","quality":"4k"}', "quality must be one of"),
        ('{"type":"subscribe","publisher":"","quality":"full"}', "publisher must be"),
        ('{"type":"subscribe","publisher":7,"quality":"full"}', "publisher must be"),
        ('{"type":"subscribe","publisher":"' + "p" * 2000 + '","quality":"none"}', "publisher"),
        ('{"type":"mute","audio":1,"video":false}', "audio and video must be booleans"),
        ('{"type":"mute","audio":false,"video":"true"}', "audio and video must be booleans"),
        ('{"type":"mute","audio":null,"video":false}', "audio and video must be booleans"),
        ('{"type":"mute","audio":true}', "missing or unexpected fields in mute"),
        ('{"type":"mute","audio":true,"video":true,"member":"m"}', "missing or unexpected"),
        ('{"type":"muted","member":"m","audio":true,"video":true}', "unknown message type"),
        ("[" * 10_000, "message too large"),
        (b'{"type":"floor","action":"request"}', "messages must be text"),
    ],
)
def test_bad_messages_raise_a_specific_error(data: str | bytes, reason: str) -> None:
    with pytest.raises(ControlError) as caught:
        parse_control_message(data)
    assert caught.value.reason.startswith(reason)


JSON = json_values(text_size=20)
MUTE_KEYS = {"type", "audio", "video"}
KEYS = st.sampled_from(["type", "publisher", "quality", "action", "audio", "video", "x"])
VALUES = JSON | st.sampled_from(
    ["subscribe", "floor", "mute", "request", "release", "full", "none", True, False]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=50), JSON.map(json.dumps)))
def test_fuzzed_text_parses_or_raises_control_error(data: str | bytes) -> None:
    try:
        parsed = parse_control_message(data)
    except ControlError:
        return
    assert isinstance(parsed, (Subscribe, Floor, Mute))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=4))
def test_fuzzed_messages_parse_or_raise_control_error(fields: dict[str, object]) -> None:
    text = json.dumps(fields)
    assert len(text) < MAX_CONTROL_MESSAGE
    try:
        parsed = parse_control_message(text)
    except ControlError:
        return
    assert isinstance(parsed, (Subscribe, Floor, Mute))
    assert set(fields) in ({"type", "action"}, {"type", "publisher", "quality"}, MUTE_KEYS)
    if isinstance(parsed, Mute):
        assert (parsed.audio, parsed.video) == (fields["audio"], fields["video"])
        assert all(type(fields[k]) is bool for k in ("audio", "video"))


# (events in order, the change each one reports, the holder after all of them)
FLOOR_CASES = [
    ([("request", "a")], [FloorChange("a")], "a"),
    ([("request", "a"), ("request", "b")], [FloorChange("a"), None], "a"),  # first come
    ([("request", "a"), ("request", "a")], [FloorChange("a"), None], "a"),
    ([("request", "a"), ("release", "b")], [FloorChange("a"), None], "a"),  # not b's to give
    ([("request", "a"), ("release", "a")], [FloorChange("a"), FloorChange(None)], None),
    ([("request", "a"), ("leave", "a")], [FloorChange("a"), FloorChange(None)], None),
    ([("request", "a"), ("leave", "b")], [FloorChange("a"), None], "a"),
    ([("release", "a"), ("leave", "a")], [None, None], None),
    (
        [("request", "a"), ("release", "a"), ("request", "b")],
        [FloorChange("a"), FloorChange(None), FloorChange("b")],
        "b",
    ),
]


@pytest.mark.parametrize(("events", "changes", "holder"), FLOOR_CASES)
def test_floor_one_holder_first_come_until_release_or_leave(
    events: list[tuple[str, str]], changes: list[FloorChange | None], holder: str | None
) -> None:
    floor = FloorState()
    assert [getattr(floor, event)(member) for event, member in events] == changes
    assert floor.holder == holder


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["request", "release", "leave"]), st.sampled_from("abc")))
)
def test_floor_changes_report_exactly_the_new_holder(events: list[tuple[str, str]]) -> None:
    floor = FloorState()
    for event, member in events:
        before = floor.holder
        change = getattr(floor, event)(member)
        assert (change is not None) == (floor.holder != before)
        if change is not None:
            assert change.holder == floor.holder


def test_mute_states_report_changes_and_forget_leavers() -> None:
    mutes = MuteStates()
    assert mutes.set("a", audio=True, video=False) == MuteChange("a", True, False)
    assert mutes.set("a", audio=True, video=False) is None  # unchanged: nothing to broadcast
    assert mutes.set("b", audio=False, video=False) == MuteChange("b", False, False)
    assert mutes.set("a", audio=False, video=True) == MuteChange("a", False, True)
    assert mutes.current(excluding="b") == [MuteChange("a", False, True)]
    mutes.leave("a")
    mutes.leave("a")  # twice is harmless
    assert mutes.current() == [MuteChange("b", False, False)]
    assert mutes.set("a", audio=False, video=True) == MuteChange("a", False, True)  # told again

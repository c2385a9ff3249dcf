"""The SFU's signaling messages: strict parsing, specific errors, fuzzed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealcall.sfu.signaling import (
    MAX_MESSAGE,
    Answer,
    Candidate,
    Join,
    Leave,
    SignalingError,
    message,
    parse_client_message,
)


def test_each_message_parses_into_its_dataclass() -> None:
    assert parse_client_message('{"type":"join","token":"t","offer":"v=0"}') == Join("t", "v=0")
    token = {"room_id": "!r:x", "user_id": "@a:x", "device_id": "D"}
    join = parse_client_message(json.dumps({"type": "join", "token": token, "offer": "v=0"}))
    assert join == Join(token, "v=0")
    assert parse_client_message('{"type":"answer","sdp":"v=0"}') == Answer("v=0")
    assert parse_client_message('{"type":"candidate","candidate":null}') == Candidate(None)
    assert parse_client_message('{"type":"candidate","candidate":"candidate:1 1 udp"}') == (
        Candidate("candidate:1 1 udp")
    )
    assert parse_client_message('{"type":"leave"}') == Leave()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("nope", "not JSON"),
        ("[1]", "a message must be a JSON object"),
        ('{"type":"dance"}', "unknown message type"),
        ('{"type":"leave","extra":1}', "unexpected fields in leave"),
        ('{"type":"answer"}', "sdp must be a non-empty string"),
        ('{"type":"answer","sdp":""}', "sdp must be a non-empty string"),
        ('{"type":"candidate"}', "candidate is missing"),
        # Subscriptions moved to the control data channel.
        ('{"type":"subscribe","publisher":"p","quality":"full"}', "unknown message type"),
        ('{"type":"join","token":[],"offer":"v=0"}', "token must be"),
        ('{"type":"join","token":{"a":1},"offer":"v=0"}', "token must be"),
        ("[" * 100_000, "message too large"),
        ('{"type":"answer","sdp":"' + "v" * 40_000 + '"}', "sdp is too long"),
    ],
)
def test_bad_messages_raise_a_specific_error(text: str, reason: str) -> None:
    with pytest.raises(SignalingError) as caught:
        parse_client_message(text)
    assert caught.value.reason.startswith(reason)


def test_binary_is_refused() -> None:
    with pytest.raises(SignalingError, match="text"):
        parse_client_message(b'{"type":"leave"}')


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
KEYS = st.sampled_from(["type", "token", "offer", "sdp", "candidate", "publisher", "quality"])
TYPES = st.sampled_from(["join", "answer", "candidate", "subscribe", "leave", "x"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), JSON.map(json.dumps)))
def test_fuzzed_text_parses_or_raises_signaling_error(text: str) -> None:
    try:
        parsed = parse_client_message(text)
    except SignalingError:
        return
    assert isinstance(parsed, (Join, Answer, Candidate, Leave))


@settings(max_examples=300, deadline=None)
@given(TYPES, st.dictionaries(KEYS, JSON, max_size=4))
def test_fuzzed_messages_parse_or_raise_signaling_error(
    kind: str, fields: dict[str, object]
) -> None:
    text = json.dumps({**fields, "type": kind})
    assert len(text) < MAX_MESSAGE
    try:
        parsed = parse_client_message(text)
    except SignalingError:
        return
    assert isinstance(parsed, (Join, Answer, Candidate, Leave))


def test_outgoing_messages_are_compact_json() -> None:
    assert json.loads(message("left", member="@a:x|D")) == {"type": "left", "member": "@a:x|D"}

"""The page socket's parser on the contract's limits, one case each (docs/web-protocol.md)."""

import json
from typing import Any

import pytest

from sealcall.web.protocol import (
    MAX_CANDIDATES,
    MAX_ID_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_REQUEST_ID_CHARS,
    MAX_REQUEST_ID_INT,
    MAX_SDP_CHARS,
    MAX_STREAMS,
    Answer,
    ConnectionState,
    Hello,
    LocalCandidates,
    LocalDescription,
    MediaFailed,
    Mute,
    OpenDm,
    ProtocolError,
    SetRelayOnly,
    encode,
    error,
    parse_message,
    result,
)


def refused(message: Any) -> ProtocolError:
    text = message if isinstance(message, str) else json.dumps(message)
    with pytest.raises(ProtocolError) as caught:
        parse_message(text)
    assert caught.value.code == "bad_request"
    return caught.value


def description(**fields: Any) -> dict[str, Any]:
    return {"type": "local_description", "call_id": "c", "sdp": "v=0", "streams": {}, **fields}


def test_requests_parse_with_their_optional_fields() -> None:
    assert parse_message('{"type":"hello","id":"a","e2ee":false}') == Hello(id="a", e2ee=False)
    assert parse_message(
        '{"type":"answer","id":7,"call_id":"c","video":null,"allow_unencrypted":false}'
    ) == Answer(id=7, call_id="c", video=None, allow_unencrypted=False)
    assert parse_message('{"type":"mute","id":0,"call_id":"c","video":true}') == Mute(
        id=0, call_id="c", audio=None, video=True
    )
    state = parse_message('{"type":"connection_state","pair_id":"p","state":"failed"}')
    assert state == ConnectionState(call_id=None, pair_id="p", state="failed")


@pytest.mark.parametrize(
    ("message", "request_id"),
    [
        ({"type": "hello", "id": 1, "e2ee": 1}, 1),  # a number is not a boolean
        ({"type": "hello", "id": 1, "e2ee": "true"}, 1),
        ({"type": "hello", "id": 1}, 1),
        ({"type": "hello", "id": 1, "e2ee": True, "extra": 1}, 1),
        ({"type": "hello", "id": True, "e2ee": True}, None),
        ({"type": "hello", "id": 1.0, "e2ee": True}, None),
        ({"type": "hello", "id": -1, "e2ee": True}, None),
        ({"type": "hello", "id": MAX_REQUEST_ID_INT + 1, "e2ee": True}, None),
        ({"type": "hello", "id": "x" * (MAX_REQUEST_ID_CHARS + 1), "e2ee": True}, None),
        ({"type": "hello", "e2ee": True}, None),
        ({"type": "no_such_type", "id": "q"}, "q"),
        ({"id": "q"}, "q"),
        ({"type": 3, "id": "q"}, "q"),
        ({"type": "reject", "id": 2, "call_id": ""}, 2),
        ({"type": "reject", "id": 2, "call_id": "c" * (MAX_ID_CHARS + 1)}, 2),
        ({"type": "reject", "id": 2, "call_id": ["c"]}, 2),
        ({"type": "get_history", "id": 2, "room_id": {"nested": {"deeper": 1}}}, 2),
        ({"type": "answer", "id": 2, "call_id": "c", "video": None}, 2),
        ({"type": "mute", "id": 2, "call_id": "c", "audio": None}, 2),
        (description(id=5), 5),  # media results take no id
        ({"type": "open_dm", "id": 3, "user_id": "bob"}, 3),  # not a user id
        ({"type": "open_dm", "id": 3, "user_id": "@bob:"}, 3),
        ({"type": "open_dm", "id": 3, "user_id": "@b ob:localhost"}, 3),
        ({"type": "set_relay_only", "id": 4}, 4),
        ({"type": "set_relay_only", "id": 4, "on": 1}, 4),  # 0/1 are not booleans
        ({"type": "set_relay_only", "id": 4, "on": "true"}, 4),
        ({"type": "set_relay_only", "id": 4, "on": None}, 4),
        ({"type": "set_relay_only", "id": 4, "on": True, "ice_servers": []}, 4),
        ({"type": "set_relay_only", "on": True}, None),
    ],
)
def test_malformed_requests_are_refused_with_the_id_when_usable(
    message: dict[str, Any], request_id: Any
) -> None:
    assert refused(message).request_id == request_id


def test_open_dm_takes_a_user_id() -> None:
    request = parse_message('{"type": "open_dm", "id": 1, "user_id": "@bob:localhost"}')
    assert isinstance(request, OpenDm)
    assert request.user_id == "@bob:localhost"


def test_set_relay_only_takes_a_boolean() -> None:
    assert parse_message('{"type":"set_relay_only","id":"s","on":true}') == SetRelayOnly(
        id="s", on=True
    )
    assert parse_message('{"type":"set_relay_only","id":0,"on":false}') == SetRelayOnly(
        id=0, on=False
    )


def test_the_largest_request_id_and_longest_ids_are_accepted() -> None:
    hello = parse_message(json.dumps({"type": "hello", "id": MAX_REQUEST_ID_INT, "e2ee": True}))
    assert hello.id == MAX_REQUEST_ID_INT
    long_id = "r" * MAX_REQUEST_ID_CHARS
    assert parse_message(json.dumps({"type": "hello", "id": long_id, "e2ee": True})).id == long_id
    call_id = "c" * MAX_ID_CHARS
    parsed = parse_message(json.dumps({"type": "hangup", "id": 1, "call_id": call_id}))
    assert parsed.call_id == call_id  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "message",
    [
        description(pair_id="p"),  # both addresses
        {"type": "media_failed", "detail": "NotAllowedError"},  # neither
        description(sdp="v" * (MAX_SDP_CHARS + 1)),
        description(sdp=""),
        description(streams={f"s{n}": "m.usermedia" for n in range(MAX_STREAMS + 1)}),
        description(streams={"s": "m.other"}),
        description(streams={"s": None}),
        description(streams={"": "m.usermedia"}),
        description(streams=[]),
        {"type": "local_candidates", "call_id": "c", "candidates": {}},
        {
            "type": "local_candidates",
            "call_id": "c",
            "candidates": [{"candidate": ""}] * (MAX_CANDIDATES + 1),
        },
        {"type": "local_candidates", "call_id": "c", "candidates": [{"sdpMid": "0"}]},
        {"type": "local_candidates", "call_id": "c", "candidates": [{"candidate": 1}]},
        {"type": "local_candidates", "call_id": "c", "candidates": [{"candidate": "", "x": 1}]},
        {
            "type": "local_candidates",
            "call_id": "c",
            "candidates": [{"candidate": "", "sdpMLineIndex": True}],
        },
        {"type": "connection_state", "call_id": "c", "state": "checking"},
        {"type": "media_failed", "call_id": "c", "detail": "x" * 201},
    ],
)
def test_malformed_media_results_are_refused(message: dict[str, Any]) -> None:
    assert refused(message).request_id is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "null",
        "[]",
        '"hello"',
        "{",
        '{"type":"hello","id":1,"e2ee":true,"e2ee":false}',  # duplicate keys
        '{"type":"hello","id":NaN,"e2ee":true}',
        '{"type":"hello","id":Infinity,"e2ee":true}',
        '{"type":"hello","id":' + "9" * 5000 + ',"e2ee":true}',
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 50_000 + "1" + "}" * 50_000,
        '{"type":"reject","id":1,"call_id":"\\ud800"}',  # a lone surrogate cannot go to Matrix
        " " * (MAX_MESSAGE_CHARS + 1),
    ],
)
def test_texts_that_are_not_one_json_object_are_refused(text: str) -> None:
    refused(text)


def test_candidates_and_the_limits_they_may_reach() -> None:
    candidates = [{"candidate": "candidate:1", "sdpMid": "0", "sdpMLineIndex": 0}] * MAX_CANDIDATES
    candidates.append({"candidate": ""})
    parsed = parse_message(
        json.dumps({"type": "local_candidates", "call_id": "c", "candidates": candidates[1:]})
    )
    assert isinstance(parsed, LocalCandidates)
    assert len(parsed.candidates) == MAX_CANDIDATES
    assert parsed.candidates[-1].candidate == ""
    assert parsed.candidates[-1].sdp_mid is None
    failed = parse_message('{"type":"media_failed","pair_id":"p","detail":"NotAllowedError"}')
    assert failed == MediaFailed(call_id=None, pair_id="p", detail="NotAllowedError")


def test_no_error_or_repr_quotes_the_sdp() -> None:
    sdp = "v=0\r\na=ice-pwd:hunter2hunter2hunter2\r\n"
    parsed = parse_message(json.dumps(description(sdp=sdp)))
    assert isinstance(parsed, LocalDescription)
    assert "hunter2" not in repr(parsed)
    for bad in (
        description(sdp=sdp, streams={"s": "hunter2"}),
        description(sdp=sdp + "x" * MAX_SDP_CHARS),
        description(sdp=sdp, extra=sdp),
        {**description(sdp=sdp), "type": sdp},
    ):
        assert "hunter2" not in refused(bad).message


def test_replies_are_compact_json() -> None:
    assert encode(result(3, call_id="c")) == '{"type":"result","id":3,"call_id":"c"}'
    assert json.loads(encode(error("x", "not_found", "no such call"))) == {
        "type": "error",
        "id": "x",
        "code": "not_found",
        "message": "no such call",
    }
    with pytest.raises(ValueError, match="JSON"):
        encode({"bad": float("nan")})

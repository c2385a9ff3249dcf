"""The lab peer's command lines: a malformed one is a counted drop, never the peer's end."""

import json
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealcall.bench.net_peer import CommandError, NetPeer, parse_command

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
COMMAND = st.dictionaries(
    st.sampled_from(["open_dm", "join_dm", "call", "sample", "hangup", "stop"]), JSON, max_size=2
)


def peer() -> NetPeer:
    transport: Any = SimpleNamespace(add_listener=lambda listener: None)
    voip: Any = SimpleNamespace(on=lambda event, handler: None)
    return NetPeer(transport, voip, [])


@pytest.mark.parametrize(
    "line",
    [
        b"not json\n",
        b"\xff\xfe\n",
        b"[1, 2]\n",
        b'"call"\n',
        b'{"call": "room"}\n',
        b'{"call": {"room": "!r:hs"}}\n',
        b'{"open_dm": 5}\n',
        b'{"sample": {"since": "yesterday"}}\n',
        b'{"sample": false}\n',
        b"[" * 100_000 + b"\n",
    ],
)
def test_a_malformed_command_is_dropped_and_counted(line: bytes) -> None:
    net_peer = peer()
    assert net_peer.command(line) is None
    assert net_peer.dropped_commands == 1
    assert net_peer.sample()["dropped_commands"] == 1


def test_well_formed_commands_pass() -> None:
    net_peer = peer()
    for message in (
        {"open_dm": "@b:hs"},
        {"call": {"room": "!r:hs", "peer": "@b:hs"}},
        {"sample": True},
        {"sample": {"since": 1.5}},
        {"hangup": True},
        {"stop": True},
    ):
        assert net_peer.command(json.dumps(message).encode() + b"\n") == message
    assert net_peer.dropped_commands == 0


@given(st.one_of(st.binary(max_size=64), COMMAND.map(lambda m: json.dumps(m).encode())))
def test_parsing_any_line_returns_a_command_or_raises_command_error(line: bytes) -> None:
    try:
        message = parse_command(line)
    except CommandError:
        return
    assert isinstance(message, dict)
    if "call" in message:
        assert isinstance(message["call"]["room"], str)
        assert isinstance(message["call"]["peer"], str)
    if "sample" in message and message["sample"] is not True:
        assert isinstance(message["sample"]["since"], int | float)

"""Fuzzing the page socket: :func:`parse_message` over the contract's shapes with mutations and over
arbitrary text; and hostile frames over a live socket, after which the real page's socket works."""

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealcall.web.protocol import (
    MAX_ID_CHARS,
    MAX_REQUEST_ID_INT,
    MAX_STREAMS,
    MEDIA_RESULTS,
    REQUESTS,
    IceCandidate,
    ProtocolError,
    parse_message,
)
from sealcall.web.server import PageServer
from web_helpers import FakeApp, hello_works, make_static, open_page

from fuzz_helpers import json_values

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Free text carries a mark that our error messages never contain: none may quote the page.
MARK = "\u00a7"


def marked(max_size: int) -> st.SearchStrategy[str]:
    return st.text(max_size=max_size - 1).map(lambda text: MARK + text)


IDS = marked(MAX_ID_CHARS)
REQUEST_IDS = st.integers(0, MAX_REQUEST_ID_INT) | marked(64)
BOOLS = st.booleans()
CANDIDATE = st.fixed_dictionaries(
    {"candidate": st.text(max_size=60).map(lambda t: MARK + t if t else t)},
    optional={
        "sdpMid": st.none() | st.text(max_size=8),
        "sdpMLineIndex": st.none() | st.integers(0, 65535),
    },
)

# The contract's fields, stated here independently of the parser's table.
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "e2ee": BOOLS,
    "room_id": IDS,
    "call_id": IDS,
    "video": BOOLS,
    "on_hold": BOOLS,
    "on": BOOLS,
    "allow_unencrypted": BOOLS,
    "audio": BOOLS,
    "sdp": marked(2000),
    "streams": st.dictionaries(
        IDS, st.sampled_from(["m.usermedia", "m.screenshare"]), max_size=MAX_STREAMS
    ),
    "candidates": st.lists(CANDIDATE, max_size=6),
    "state": st.sampled_from(["connected", "failed", "closed"]),
    "detail": marked(200),
    "user_id": st.from_regex(r"@[a-z0-9]{1,20}:[a-z0-9.]{1,30}", fullmatch=True),
}
SHAPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "hello": (("e2ee",), ()),
    "list_rooms": ((), ()),
    "get_history": (("room_id",), ()),
    "place_call": (("room_id", "video"), ()),
    "answer": (("call_id", "video", "allow_unencrypted"), ()),
    "reject": (("call_id",), ()),
    "hangup": (("call_id",), ()),
    "hold": (("call_id", "on_hold"), ()),
    "mute": (("call_id",), ("audio", "video")),
    "screen_share": (("call_id", "on"), ()),
    "upgrade_video": (("call_id",), ()),
    "group_join": (("room_id", "video"), ()),
    "group_leave": (("room_id",), ()),
    "group_mute": (("room_id",), ("audio", "video")),
    "group_screen_share": (("room_id", "on"), ()),
    "group_decline": (("room_id",), ()),
    "open_dm": (("user_id",), ()),
    "set_relay_only": (("on",), ()),
    "local_description": (("sdp", "streams"), ()),
    "local_candidates": (("candidates",), ()),
    "connection_state": (("state",), ()),
    "media_failed": (("detail",), ()),
}


def test_the_fuzz_shapes_cover_every_message_type() -> None:
    assert set(SHAPES) == set(REQUESTS) | set(MEDIA_RESULTS)


@st.composite
def valid_messages(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(SHAPES)))
    required, optional = SHAPES[kind]
    message: dict[str, Any] = {"type": kind}
    if kind in REQUESTS:
        message["id"] = draw(REQUEST_IDS)
    else:
        message[draw(st.sampled_from(["call_id", "pair_id"]))] = draw(IDS)
    for name in required:
        message[name] = draw(FIELDS[name])
    if kind == "answer":
        message["video"] = draw(st.none() | BOOLS)
    for name in optional:
        if draw(st.booleans()):
            message[name] = draw(FIELDS[name])
    return message


ANY_JSON = json_values(text_size=12, size=4)


@st.composite
def mutated_messages(draw: st.DrawFn) -> dict[str, Any] | list[Any]:
    message = draw(valid_messages())
    for _ in range(draw(st.integers(1, 3))):
        keys = sorted(message)
        mutation = draw(st.sampled_from(["drop", "retype", "add", "type", "nest"]))
        if mutation == "drop" and keys:
            del message[draw(st.sampled_from(keys))]
        elif mutation == "retype" and keys:
            message[draw(st.sampled_from(keys))] = draw(ANY_JSON)
        elif mutation == "add":
            key = draw(st.sampled_from(["id", "call_id", "pair_id", "extra", "video", "sdp"]))
            message[key] = draw(ANY_JSON)
        elif mutation == "type":
            message["type"] = draw(st.sampled_from(sorted(SHAPES)) | marked(20))
        elif keys:
            key = draw(st.sampled_from(keys))
            message[key] = {"inner": [message[key]]}
    if draw(st.integers(0, 9)) == 0:
        return [message]
    return message


def check_parse(text: str) -> None:
    """The property: a known dataclass, or ProtocolError that quotes nothing of the page's."""
    try:
        parsed = parse_message(text)
    except ProtocolError as exc:
        failure: ProtocolError | None = exc
    else:
        failure = None
    if failure is not None:
        assert failure.code == "bad_request"
        assert MARK not in failure.message
        assert failure.request_id is None or isinstance(failure.request_id, str | int)
        return
    known = {shape.cls for shape in (*REQUESTS.values(), *MEDIA_RESULTS.values())}
    assert type(parsed) in known


@SETTINGS
@given(valid_messages())
def test_every_contract_message_parses_to_its_dataclass(message: dict[str, Any]) -> None:
    parsed = parse_message(json.dumps(message))
    shape = {**REQUESTS, **MEDIA_RESULTS}[message["type"]]
    assert type(parsed) is shape.cls
    for name, value in message.items():
        if name == "type":
            continue
        got = getattr(parsed, name)
        if name == "streams":
            assert dict(got) == value
        elif name == "candidates":
            assert got == tuple(
                IceCandidate(c["candidate"], c.get("sdpMid"), c.get("sdpMLineIndex")) for c in value
            )
        else:
            assert got == value
    # Neither SDP nor candidates show in a repr (they carry ICE credentials and addresses).
    assert "sdp=" not in repr(parsed)
    assert "candidates=" not in repr(parsed)


@SETTINGS
@given(mutated_messages())
def test_mutated_messages_parse_or_raise_protocol_error(message: Any) -> None:
    check_parse(json.dumps(message))


@SETTINGS
@given(st.text(max_size=200) | ANY_JSON.map(json.dumps))
def test_arbitrary_text_parses_or_raises_protocol_error(text: str) -> None:
    check_parse(text)


@SETTINGS
@given(mutated_messages(), st.integers(0, 400))
def test_cut_messages_parse_or_raise_protocol_error(message: Any, cut: int) -> None:
    text = json.dumps(message)
    check_parse(text[: len(text) * cut // 400])


# --- over a live socket ---------------------------------------------------------------------


class Live:
    """A page server on its own event loop for a sync hypothesis test, with the real page open."""

    def __init__(self, root: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.app = FakeApp()
        self.app.release_place_call.set()
        self.server = PageServer(self.app, static_dir=make_static(root))
        self.run(self.server.start())
        self.session = self.run(self._session())
        self.page = self.run(open_page(self.session, self.server))

    async def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        self.run(self.page.close())
        self.run(self.session.close())
        self.run(self.server.stop())
        self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    served = Live(tmp_path_factory.mktemp("web-fuzz"))
    yield served
    served.close()


FRAMES = st.lists(
    mutated_messages().map(json.dumps)
    | valid_messages().map(json.dumps)
    | st.text(max_size=100)
    | st.binary(max_size=20),
    min_size=1,
    max_size=12,
)


async def hostile_session(live: Live, frames: list[str | bytes]) -> None:
    ws = await open_page(live.session, live.server)
    for frame in frames:
        if ws.closed:
            break
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        else:
            await ws.send_str(frame)
    if not ws.closed:
        # Everything sent before it has been handled once its reply comes (or the socket closes).
        await ws.send_str(json.dumps({"type": "hello", "id": "sentinel", "e2ee": True}))
        while True:
            message = await ws.receive(timeout=10)
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            reply = json.loads(message.data)
            assert reply["type"] in ("result", "error")
            if reply["id"] == "sentinel":
                break
    await ws.close()
    await hello_works(live.page, "page")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(FRAMES)
def test_hostile_frames_over_a_live_socket_leave_the_page_working(
    live: Live, frames: list[str | bytes]
) -> None:
    live.run(hostile_session(live, frames))
    assert not live.page.closed
    assert live.server.sockets[0].number == 1

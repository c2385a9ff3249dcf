"""The web client's SFU link, without a browser: the page's ``sfu_*`` results parsed (and
fuzzed), :class:`PageSfuLink` turning them into the session's link events, the SFU socket the
page may open, and the page's Content-Security-Policy naming that socket and no other."""

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealcall.group import MemberDevice
from sealcall.session import GroupSending
from sealcall.session.local_media import LocalMedia
from sealcall.session.sfu_link import ForwardedTrack, SfuLinkError, SfuLinkSetup
from sealcall.web.page_sfu import PageSfuLink, sfu_socket_url
from sealcall.web.protocol import ProtocolError, parse_message
from sealcall.web.server import PageServer
from sealcall.web.sfu_results import (
    SFU_RESULT_TYPES,
    SfuFloor,
    SfuJoined,
    SfuLayer,
    SfuMuted,
    SfuSpeaking,
    SfuState,
    SfuTracks,
)
from web_helpers import FakeApp, make_static

from fuzz_helpers import json_values

ROOM = "!room:hs"
ANN = MemberDevice("@ann:hs", "ANN")
BOB = MemberDevice("@bob:hs", "BOB")
URL = "http://127.0.0.1:8443"
SOCKET = "ws://127.0.0.1:8443/ws"
MARK = "\u00a7"  # never in our error messages: none may quote the page


def parse(**fields: Any) -> Any:
    return parse_message(json.dumps(fields))


def test_sfu_results_parse_into_their_dataclasses() -> None:
    assert parse(type="sfu_joined", room_id=ROOM, member="@ann:hs|ANN") == SfuJoined(
        room_id=ROOM, member=ANN
    )
    tracks = parse(
        type="sfu_tracks",
        room_id=ROOM,
        tracks=[{"mid": "f4", "ssrc": 7, "kind": "video", "member": "@bob:hs|BOB"}],
    )
    assert isinstance(tracks, SfuTracks)
    assert [(t.mid, t.ssrc, t.kind, t.member) for t in tracks.tracks] == [("f4", 7, "video", BOB)]
    assert parse(type="sfu_state", room_id=ROOM, state="failed", detail="NetworkError") == (
        SfuState(room_id=ROOM, state="failed", detail="NetworkError")
    )
    assert parse(type="sfu_floor", room_id=ROOM, holder=None) == SfuFloor(room_id=ROOM, holder=None)
    assert parse(type="sfu_speaking", room_id=ROOM, members=["@bob:hs|BOB"]) == SfuSpeaking(
        room_id=ROOM, members=(BOB,)
    )
    assert parse(type="sfu_muted", room_id=ROOM, member="@bob:hs|BOB", audio=True, video=False) == (
        SfuMuted(room_id=ROOM, member=BOB, audio=True, video=False)
    )
    assert parse(type="sfu_layer", room_id=ROOM, publisher="@bob:hs|B|2", quality="full") == (
        SfuLayer(room_id=ROOM, publisher=MemberDevice("@bob:hs", "B|2"), quality="full")
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "sfu_joined", "member": "@ann:hs|ANN"},  # no room
        {"type": "sfu_joined", "room_id": ROOM, "member": "ann|ANN"},  # not a user id
        {"type": "sfu_joined", "room_id": ROOM, "member": "@ann:hs"},  # no device
        {"type": "sfu_joined", "room_id": ROOM, "member": "@ann:hs|ANN", "extra": 1},
        {"type": "sfu_state", "room_id": ROOM, "state": "weird"},
        {"type": "sfu_state", "room_id": ROOM, "state": "failed", "detail": "x" * 201},
        {"type": "sfu_tracks", "room_id": ROOM, "tracks": {}},
        {"type": "sfu_tracks", "room_id": ROOM, "tracks": [{"mid": "1", "kind": "video"}]},
        {
            "type": "sfu_tracks",
            "room_id": ROOM,
            "tracks": [{"mid": "1", "ssrc": 2**32, "kind": "video", "member": "@b:hs|B"}],
        },
        {
            "type": "sfu_tracks",
            "room_id": ROOM,
            "tracks": [{"mid": "1", "ssrc": True, "kind": "video", "member": "@b:hs|B"}],
        },
        {
            "type": "sfu_tracks",
            "room_id": ROOM,
            "tracks": [{"mid": "1", "ssrc": 1, "kind": "data", "member": "@b:hs|B"}],
        },
        {"type": "sfu_speaking", "room_id": ROOM, "members": ["@b:hs|B"] * 513},
        {"type": "sfu_layer", "room_id": ROOM, "publisher": "@b:hs|B", "quality": "none"},
        {"type": "sfu_floor", "room_id": ROOM},
        {"type": "sfu_muted", "room_id": ROOM, "member": "@b:hs|B", "audio": 1, "video": False},
        {"type": "sfu_muted", "room_id": ROOM, "member": "@b:hs|B", "audio": True},
        {"type": "sfu_muted", "room_id": ROOM, "member": "b", "audio": True, "video": True},
    ],
)
def test_malformed_sfu_results_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse(**fields)
    assert refused.value.message.startswith(fields["type"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(sorted(SFU_RESULT_TYPES)),
    body=st.dictionaries(
        st.sampled_from(
            [
                *("room_id", "member", "tracks", "state", "detail", "members", "publisher"),
                *("quality", "holder", "mid", "x"),
            ]
        ),
        json_values() | st.text(max_size=20).map(lambda t: MARK + t),
        max_size=5,
    ),
)
def test_fuzzed_sfu_results_parse_or_are_refused_without_quoting(
    kind: str, body: dict[str, Any]
) -> None:
    refusal = ""
    try:
        parse(type=kind, **body)
    except ProtocolError as error:
        refusal = error.message
    assert MARK not in refusal


def test_the_sfu_socket_the_page_opens() -> None:
    assert sfu_socket_url(URL) == SOCKET
    assert sfu_socket_url("https://sfu.example/a/") == "wss://sfu.example/a/ws"
    for bad in ("ftp://x", "http://u:p@x", "http://x/?q=1", "http://x/#f", "x", "http://x:99999"):
        assert sfu_socket_url(bad) is None, bad


class Events:
    """What a link told its session."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.seen.append((name, args))


def link_setup() -> SfuLinkSetup:
    return SfuLinkSetup(
        own=ANN, room_id=ROOM, sending=GroupSending(LocalMedia(), video=True), opener=Any
    )


async def test_the_link_hands_the_page_the_join_and_relays_what_the_page_reports() -> None:
    events, sent = Events(), []
    link = PageSfuLink(events, link_setup(), sent.append, allowed=frozenset({SOCKET}))
    opening = asyncio.ensure_future(link.open(URL, "join-token"))
    await asyncio.sleep(0)
    assert sent == [
        {
            "type": "sfu_join",
            "room_id": ROOM,
            "url": URL,
            "token": "join-token",
            "video": True,
            "speaking": True,
        }
    ]
    link.feed(SfuSpeaking(room_id=ROOM, members=(BOB,)))  # before the join: not relayed
    assert link.dropped_results == 1
    link.feed(SfuJoined(room_id=ROOM, member=ANN))
    await opening
    assert link.member == ANN
    tracks = (("f4", 5, "audio", BOB), ("f5", 6, "video", BOB))
    link.feed(parse(type="sfu_tracks", room_id=ROOM, tracks=[
        {"mid": m, "ssrc": s, "kind": k, "member": f"{d.user_id}|{d.device_id}"}
        for m, s, k, d in tracks
    ]))  # fmt: skip
    assert link.forwarded == {BOB}
    link.feed(SfuSpeaking(room_id=ROOM, members=(BOB,)))
    link.feed(SfuLayer(room_id=ROOM, publisher=BOB, quality="full"))
    link.feed(SfuFloor(room_id=ROOM, holder=BOB))
    link.feed(SfuMuted(room_id=ROOM, member=BOB, audio=False, video=True))
    assert events.seen == [
        ("sfu_tracks", ([ForwardedTrack(*t) for t in tracks],)),
        ("sfu_speaking", ([BOB],)),
        ("sfu_layer", (BOB, "full")),
        ("sfu_floor", (BOB,)),
        ("sfu_muted", (BOB, False, True)),
    ]
    await link.subscribe(BOB, "full")
    await link.floor(True)
    link.mute(True, False)
    assert sent[1:] == [
        {"type": "sfu_subscribe", "room_id": ROOM, "publisher": "@bob:hs BOB", "quality": "full"},
        {"type": "sfu_floor", "room_id": ROOM, "request": True},
        {"type": "sfu_mute", "room_id": ROOM, "audio": True, "video": False},
    ]
    # The page's connection fails: the session hears it once, nothing after.
    link.feed(SfuState(room_id=ROOM, state="failed", detail="NetworkError"))
    link.feed(SfuState(room_id=ROOM, state="closed"))
    assert events.seen[-1] == ("sfu_closed", ("NetworkError",))
    assert [name for name, _ in events.seen].count("sfu_closed") == 1
    await link.close()
    assert sent[-1] == {"type": "sfu_leave", "room_id": ROOM}


async def test_the_link_refuses_an_sfu_the_page_may_not_open_and_a_failed_join() -> None:
    sent: list[dict[str, Any]] = []
    elsewhere = PageSfuLink(Events(), link_setup(), sent.append, allowed=frozenset({SOCKET}))
    with pytest.raises(SfuLinkError) as refused:
        await elsewhere.open("http://10.0.0.9:8443", "t")
    assert refused.value.reason == "sfu_not_allowed"
    assert sent == []  # the page was never sent where its CSP does not let it go

    link = PageSfuLink(Events(), link_setup(), sent.append, allowed=frozenset({SOCKET}))
    opening = asyncio.ensure_future(link.open(URL, "t"))
    await asyncio.sleep(0)
    link.feed(SfuState(room_id=ROOM, state="failed", detail="admission_ended"))
    with pytest.raises(SfuLinkError) as failed:
        await opening
    assert failed.value.reason == "admission_ended"
    assert sent[-1] == {"type": "sfu_leave", "room_id": ROOM}

    slow = PageSfuLink(
        Events(), link_setup(), sent.append, allowed=frozenset({SOCKET}), join_timeout=0.05
    )
    with pytest.raises(SfuLinkError) as late:
        await slow.open(URL, "t")
    assert late.value.reason == "join_timeout"


async def test_the_page_may_connect_to_the_configured_sfu_socket_and_no_other(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="connect sources"):
        PageServer(FakeApp(), connect=("ws://x; script-src *",))
    with pytest.raises(ValueError, match="connect sources"):
        PageServer(FakeApp(), connect=("*",))
    server = PageServer(FakeApp(), static_dir=make_static(tmp_path), connect=(SOCKET,))
    await server.start()
    try:
        async with aiohttp.ClientSession() as session, session.get(server.url) as page:
            csp = page.headers["Content-Security-Policy"]
    finally:
        await server.stop()
    port = server.port
    assert f"connect-src ws://127.0.0.1:{port} ws://localhost:{port} {SOCKET};" in csp
    assert "*" not in csp


async def test_a_member_who_keeps_speaking_private_tells_the_page_to_send_no_levels() -> None:
    """``sealcall app --no-speaking`` (group option ``audio_level=False``): the page's join says
    ``speaking: false``, so it offers no RFC 6464 extension."""
    sent: list[dict[str, Any]] = []
    setup = dataclasses.replace(link_setup(), audio_level=False)
    link = PageSfuLink(Events(), setup, sent.append, allowed=frozenset({SOCKET}))
    opening = asyncio.ensure_future(link.open(URL, "join-token"))
    await asyncio.sleep(0)
    assert sent[0]["type"] == "sfu_join"
    assert sent[0]["speaking"] is False
    opening.cancel()

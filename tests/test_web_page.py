"""The calling page in Debian's Chromium, against a stub page server (tests/web_page_stub.py).

These check the page on its own: it renders rooms and call items, rings, asks before an
unencrypted call, shows call waiting, refuses to call without RTCRtpScriptTransform, and its
peer connection follows the `media` commands (two pages joined through the stub, frames through
every transform). The real server and worker are tested with the page elsewhere.
"""

import asyncio
import base64
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from interop_jssdk import CHROMIUM, CHROMIUM_ARGS
from web_page_stub import StubPageServer

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]

ALICE = {"user_id": "@alice:localhost", "device_id": "ALICEDEV", "display_name": "Alice"}
ROOMS = [
    {"room_id": "!dm:localhost", "name": "", "kind": "dm", "peer": "@bob:localhost", "members": 2},
    {"room_id": "!team:localhost", "name": "Team", "kind": "group", "peer": None, "members": 4},
]
HISTORY = {
    "!dm:localhost": [
        {
            "call_id": "c1",
            "caller": "@alice:localhost",
            "callee": "@bob:localhost",
            "direction": "outgoing",
            "video": True,
            "outcome": "answered",
            "started_at": 1_700_000_000.0,
            "duration": 125.0,
            "end_reason": "user_hangup",
            "group": False,
        },
        {
            "call_id": "c2",
            "caller": "@bob:localhost",
            "callee": "@alice:localhost",
            "direction": "incoming",
            "video": False,
            "outcome": "missed",
            "started_at": 1_700_000_600.0,
            "duration": 0.0,
            "end_reason": "invite_timeout",
            "group": False,
        },
    ]
}
SHOTS = Path(os.environ.get("SEALCALL_SCREENSHOTS", "/tmp/sealcall-page-shots"))


def call_event(call_id: str, **fields: Any) -> dict[str, Any]:
    event = {
        "type": "call",
        "call_id": call_id,
        "room_id": "!dm:localhost",
        "peer": "@bob:localhost",
        "direction": "incoming",
        "video": True,
        "state": "ringing",
        "encrypted": True,
        "owner": False,
    }
    event.update(fields)
    return event


class Page:
    """One page of the browser, its stub server and its console errors."""

    def __init__(self, page: Any, server: StubPageServer) -> None:
        self.page = page
        self.server = server
        self.errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def testid(self, name: str) -> Any:
        return self.page.get_by_test_id(name)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[*CHROMIUM_ARGS, "--autoplay-policy=no-user-gesture-required"],
        )
        try:
            yield b
        finally:
            await b.close()


@pytest_asyncio.fixture(loop_scope="module")
async def open_page(browser: Any) -> AsyncIterator[Any]:
    opened: list[tuple[Any, StubPageServer]] = []

    async def open_(init_script: str | None = None, me: dict[str, Any] = ALICE) -> Page:
        server = StubPageServer(me, ROOMS, HISTORY)
        await server.start()
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        opened.append((context, server))
        if init_script:
            await context.add_init_script(init_script)
        page = Page(await context.new_page(), server)
        await page.page.goto(server.url)
        return page

    yield open_
    for context, server in opened:
        await context.close()
        await server.close()


async def test_rooms_and_call_items_render_without_errors(open_page: Any) -> None:
    p = await open_page()
    hello = await p.server.wait_sent(lambda m: m["type"] == "hello")
    assert hello["e2ee"] is True
    rooms = p.testid("room")
    await rooms.nth(1).wait_for()
    assert await rooms.count() == 2
    assert await rooms.nth(0).inner_text() == "B\nbob"
    items = p.testid("history-item")
    await items.nth(1).wait_for()
    first, second = items.nth(0), items.nth(1)
    assert await first.get_attribute("data-outcome") == "answered"
    assert await first.get_attribute("data-direction") == "outgoing"
    assert await first.get_attribute("data-video") == "true"
    assert "Answered · 2:05" in await first.inner_text()
    assert await second.get_attribute("data-outcome") == "missed"
    assert await second.get_attribute("data-direction") == "incoming"
    assert await p.testid("call-audio").is_enabled()
    # A live item for a known call replaces it; a new call adds one.
    item = dict(HISTORY["!dm:localhost"][1], outcome="rejected")
    await p.server.push({"type": "history_item", "room_id": "!dm:localhost", "item": item})
    await p.page.locator('[data-testid=history-item][data-outcome="rejected"]').wait_for()
    assert await items.count() == 2
    new = dict(item, call_id="c3", started_at=1_700_001_000.0, outcome="busy")
    await p.server.push({"type": "history_item", "room_id": "!dm:localhost", "item": new})
    await items.nth(2).wait_for()
    assert await items.nth(2).get_attribute("data-outcome") == "busy"
    # The group room offers to join its call.
    await rooms.nth(1).click()
    await p.testid("join-call").wait_for()
    assert await p.testid("call-audio").count() == 0
    SHOTS.mkdir(parents=True, exist_ok=True)
    await rooms.nth(0).click()
    await p.page.screenshot(path=str(SHOTS / "page-history.png"))
    assert p.errors == []


async def test_incoming_call_rings_and_is_answered_with_video(open_page: Any) -> None:
    p = await open_page()
    await p.testid("room").nth(1).wait_for()
    await p.server.push(call_event("in1"))
    await p.server.push({"type": "incoming_call", "call_id": "in1"})
    banner = p.testid("ring-banner")
    await banner.wait_for()
    assert "bob is calling" in await banner.inner_text()
    assert await p.testid("e2ee-warning").count() == 0
    assert await p.page.evaluate("window.sealcall.ringing()")
    await p.page.screenshot(path=str(SHOTS / "page-ringing.png"))
    await p.testid("accept-video").click()
    answer = await p.server.wait_sent(lambda m: m["type"] == "answer")
    assert (answer["call_id"], answer["video"], answer["allow_unencrypted"]) == ("in1", True, False)
    await p.server.push(call_event("in1", state="connecting", owner=True))
    await p.testid("call-screen").wait_for()
    assert await banner.count() == 0
    assert not await p.page.evaluate("window.sealcall.ringing()")
    # The far side's camera is off (no video yet): its name stands in.
    assert "bob" in await p.testid("remote-placeholder").inner_text()
    await p.testid("hangup").click()
    hangup = await p.server.wait_sent(lambda m: m["type"] == "hangup")
    assert hangup["call_id"] == "in1"
    await p.server.push(
        {"type": "call_ended", "call_id": "in1", "reason": "user_hangup", "by_remote": False}
    )
    await p.testid("call-audio").wait_for()
    assert p.errors == []


async def test_unencrypted_call_asks_the_user_before_answering(open_page: Any) -> None:
    p = await open_page()
    await p.testid("room").nth(1).wait_for()
    await p.server.push(call_event("plain", encrypted=False, video=False))
    await p.testid("e2ee-warning").wait_for()
    assert await p.testid("accept-audio").count() == 0
    assert await p.testid("accept-video").count() == 0
    assert not [m for m in p.server.sent if m["type"] == "answer"]
    await p.testid("continue-unencrypted").click()
    answer = await p.server.wait_sent(lambda m: m["type"] == "answer")
    assert (answer["call_id"], answer["allow_unencrypted"], answer["video"]) == (
        "plain",
        True,
        False,
    )
    assert p.errors == []


async def test_second_call_shows_call_waiting_and_holds_the_first(open_page: Any) -> None:
    p = await open_page()
    await p.testid("room").nth(1).wait_for()
    await p.server.push(call_event("first", state="connected", owner=True, direction="outgoing"))
    await p.testid("call-screen").wait_for()
    await p.server.push(call_event("second", peer="@carol:localhost", video=False))
    await p.server.push({"type": "call_waiting", "call_id": "second", "current_call_id": "first"})
    waiting = p.testid("call-waiting")
    await waiting.wait_for()
    assert "carol is calling" in await waiting.inner_text()
    assert await p.testid("ring-banner").count() == 0
    await waiting.get_by_test_id("hold-answer").click()
    answer = await p.server.wait_sent(lambda m: m["type"] == "answer")
    kinds = [m["type"] for m in p.server.sent if m["type"] in ("hold", "answer")]
    assert kinds == ["hold", "answer"]
    hold = next(m for m in p.server.sent if m["type"] == "hold")
    assert (hold["call_id"], hold["on_hold"]) == ("first", True)
    assert (answer["call_id"], answer["video"]) == ("second", False)
    assert p.errors == []


async def test_without_script_transform_no_call_is_placed(open_page: Any) -> None:
    p = await open_page("delete window.RTCRtpScriptTransform;")
    hello = await p.server.wait_sent(lambda m: m["type"] == "hello")
    assert hello["e2ee"] is False
    await p.testid("no-transform-warning").wait_for()
    await p.testid("history-item").nth(1).wait_for()
    assert await p.testid("call-audio").is_disabled()
    assert await p.testid("call-video").is_disabled()
    assert not [m for m in p.server.sent if m["type"] == "place_call"]
    # An incoming call can only be rejected here, and no media starts.
    await p.server.push(call_event("in-plain"))
    banner = p.testid("ring-banner")
    await banner.wait_for()
    assert await banner.get_by_test_id("reject").count() == 1
    assert await p.testid("accept-audio").count() == 0
    assert await p.testid("accept-video").count() == 0
    await p.server.push(
        {
            "type": "media",
            "call_id": "in-plain",
            "op": "create_offer",
            "video": False,
            "screenshare": False,
            "on_hold": False,
            "ice_restart": False,
            "ice_servers": [],
        }
    )
    failed = await p.server.wait_sent(lambda m: m["type"] == "media_failed")
    assert failed == {"type": "media_failed", "call_id": "in-plain", "detail": "NotSupportedError"}
    assert not [m for m in p.server.sent if m["type"] == "local_description"]
    assert p.errors == []


async def relay_candidates(a: StubPageServer, b: StubPageServer, call_id: str) -> None:
    """Forward each page's trickled candidates to the other page (as the engine would)."""
    seen = {id(a): 0, id(b): 0}
    while True:
        for src, dst in ((a, b), (b, a)):
            while seen[id(src)] < len(src.sent):
                msg = src.sent[seen[id(src)]]
                seen[id(src)] += 1
                if msg["type"] == "local_candidates":
                    await dst.push(
                        {
                            "type": "media",
                            "op": "add_candidates",
                            "call_id": call_id,
                            "candidates": msg["candidates"],
                        }
                    )
        await asyncio.sleep(0.05)


def first_video_codec(sdp: str) -> str:
    video = sdp.split("m=video ")[1].split("\r\n")
    first = video[0].split()[2]
    return next(
        line.split()[1].split("/")[0] for line in video if line.startswith(f"a=rtpmap:{first} ")
    )


def h264_first(sdp: str) -> str:
    """The SDP with the H.264 payload types first on its video line."""
    head, video = sdp.split("m=video ")
    mline, rest = video.split("\r\n", 1)
    port, proto, *pts = mline.split()
    h264 = {line.split()[0][len("a=rtpmap:") :] for line in rest.split("\r\n") if " H264/" in line}
    ordered = [pt for pt in pts if pt in h264] + [pt for pt in pts if pt not in h264]
    return f"{head}m=video {' '.join([port, proto, *ordered])}\r\n{rest}"


async def until(what: str, predicate: Any, timeout: float = 20.0) -> Any:
    async with asyncio.timeout(timeout):
        while not (value := await predicate()):
            await asyncio.sleep(0.1)
    assert value, what
    return value


async def test_two_pages_connect_through_the_media_commands(open_page: Any) -> None:
    a = await open_page()
    b = await open_page(
        me={"user_id": "@bob:localhost", "device_id": "BOBDEV", "display_name": "Bob"}
    )
    call = "relay1"
    await a.testid("room").nth(1).wait_for()
    await b.testid("room").nth(1).wait_for()
    await a.server.push(call_event(call, direction="outgoing", state="connecting", owner=True))
    await b.server.push(call_event(call, peer="@alice:localhost", state="connecting", owner=True))
    relay = asyncio.create_task(relay_candidates(a.server, b.server, call))
    try:
        media = {"type": "media", "call_id": call, "ice_servers": [], "on_hold": False}
        await a.server.push(
            {
                **media,
                "op": "create_offer",
                "video": True,
                "screenshare": False,
                "ice_restart": False,
            }
        )
        offer = await a.server.wait_sent(lambda m: m["type"] == "local_description")
        # B gets the offer with H.264 listed first (as some peers offer): it answers VP8 first.
        await b.server.push(
            {**media, "op": "create_answer", "sdp": h264_first(offer["sdp"]), "video": True}
        )
        answer = await b.server.wait_sent(lambda m: m["type"] == "local_description")
        await a.server.push(
            {"type": "media", "call_id": call, "op": "apply_answer", "sdp": answer["sdp"]}
        )
        k1, k2 = (base64.b64encode(secrets.token_bytes(16)).decode() for _ in range(2))
        await a.server.push(
            {"type": "media", "call_id": call, "op": "keys", "suite": 1, "send": k1, "receive": k2}
        )
        await b.server.push(
            {"type": "media", "call_id": call, "op": "keys", "suite": 1, "send": k2, "receive": k1}
        )
        for side in (a, b):
            state = await side.server.wait_sent(lambda m: m["type"] == "connection_state")
            assert state == {"type": "connection_state", "call_id": call, "state": "connected"}
        # Each description names its one user-media stream, the stream the SDP carries.
        for desc in (offer, answer):
            # VP8 first: Chromium loses SFrame-protected H.264 frames on receipt.
            assert first_video_codec(desc["sdp"]) == "VP8"
            ((stream_id, purpose),) = desc["streams"].items()
            assert purpose == "m.usermedia"
            assert f"a=msid:{stream_id} " in desc["sdp"]

        async def flowing(p: Page) -> Any:
            s = await p.page.evaluate("(id) => window.sealcall.stats(id)", call)
            w = s["worker"]
            return s if w["sent"] > 0 and w["received"] > 0 and s["frames_decoded"] > 0 else None

        for side in (a, b):
            stats = await until("frames through both transforms", lambda side=side: flowing(side))
            transforms = {(t["scope"], t["side"], t["kind"]) for t in stats["worker"]["transforms"]}
            assert transforms == {
                (call, s, k) for s in ("send", "recv") for k in ("audio", "video")
            }
            keys = {(k["op"], k["sender"], k["kid"], k["bytes"]) for k in stats["worker"]["keys"]}
            assert keys == {("set_send_key", None, 0, 16), ("add_receive_key", "", 0, 16)}
            assert stats["e2ee"] is False  # the stand-in worker decrypts nothing
        # The far side's camera, named by remote_media, shows as video rather than a placeholder.
        (b_stream,) = answer["streams"]
        meta = {b_stream: {"purpose": "m.usermedia", "audio_muted": False, "video_muted": False}}
        await a.server.push(
            {"type": "remote_media", "call_id": call, "streams": meta, "on_hold": False}
        )
        await a.page.locator("[data-testid=remote-video]:visible").wait_for()
        assert await a.testid("remote-placeholder").count() == 0
        await a.testid("stats").click()
        await a.testid("stats-panel").wait_for()
        await a.page.screenshot(path=str(SHOTS / "page-in-call.png"))
        # The camera turned off on the far side: its name stands in.
        meta[b_stream]["video_muted"] = True
        await a.server.push(
            {"type": "remote_media", "call_id": call, "streams": meta, "on_hold": False}
        )
        await a.testid("remote-placeholder").wait_for()
        # set_mute disables the local tracks (the page's state follows).
        await a.server.push(
            {
                "type": "media",
                "call_id": call,
                "op": "set_mute",
                "audio_muted": True,
                "video_muted": False,
            }
        )
        await a.page.locator('[data-testid=mute][aria-pressed="true"]').wait_for()
        # Screen share: the click asks for the screen, the engine's next offer carries it.
        await a.testid("screen").click()
        share = await a.server.wait_sent(lambda m: m["type"] == "screen_share")
        assert (share["call_id"], share["on"]) == (call, True)
        await a.page.locator('[data-testid=screen][aria-pressed="true"]').wait_for()
        a.server.sent.clear()
        b.server.sent.clear()
        offer = {**media, "op": "create_offer", "video": True, "ice_restart": False}
        await a.server.push({**offer, "screenshare": True})
        offer2 = await a.server.wait_sent(lambda m: m["type"] == "local_description")
        assert sorted(offer2["streams"].values()) == ["m.screenshare", "m.usermedia"]
        await b.server.push({**media, "op": "create_answer", "sdp": offer2["sdp"], "video": True})
        answer2 = await b.server.wait_sent(lambda m: m["type"] == "local_description")
        await a.server.push(
            {"type": "media", "call_id": call, "op": "apply_answer", "sdp": answer2["sdp"]}
        )
        names = {
            sid: {"purpose": p, "audio_muted": False, "video_muted": False}
            for sid, p in offer2["streams"].items()
        }
        await b.server.push(
            {"type": "remote_media", "call_id": call, "streams": names, "on_hold": False}
        )
        await b.testid("remote-screen").wait_for()

        async def screen_frames(p: Page) -> Any:
            s = await p.page.evaluate("(id) => window.sealcall.stats(id)", call)
            recv = [
                t for t in s["worker"]["transforms"] if (t["kind"], t["side"]) == ("video", "recv")
            ]
            return len(recv) == 2 and all(t["frames"] > 0 for t in recv)  # camera and screen

        await until("the screen's frames through a transform", lambda: screen_frames(b))
        await b.page.screenshot(path=str(SHOTS / "page-screen-share.png"))
        for side in (a, b):
            await side.server.push({"type": "media", "call_id": call, "op": "close"})
            await side.server.push(
                {"type": "call_ended", "call_id": call, "reason": "user_hangup", "by_remote": False}
            )
            await side.testid("call-audio").wait_for()
    finally:
        relay.cancel()
    assert not [m for m in a.server.sent + b.server.sent if m["type"] == "media_failed"]
    assert a.errors == []
    assert b.errors == []


async def test_group_call_shows_members_and_who_speaks(open_page: Any) -> None:
    p = await open_page()
    await p.testid("room").nth(1).click()
    await p.testid("join-video").click()
    join = await p.server.wait_sent(lambda m: m["type"] == "group_join")
    assert (join["room_id"], join["video"]) == ("!team:localhost", True)

    def member(user: str, pair: str, speaking: bool, video_muted: bool = False) -> dict[str, Any]:
        return {
            "user_id": user,
            "device_id": user[1:4].upper(),
            "pair_id": pair,
            "state": "connected",
            "audio_muted": not speaking,
            "video_muted": video_muted,
            "speaking": speaking,
        }

    members = [
        member("@bob:localhost", "p-bob", True),
        member("@carol:localhost", "p-carol", False, video_muted=True),
    ]
    group = {"type": "group", "room_id": "!team:localhost", "joined": True, "members": members}
    await p.server.push({**group, "active_speaker": "@bob:localhost"})
    await p.testid("group-grid").wait_for()
    tiles = p.testid("member-tile")
    assert await tiles.count() == 3  # us and the two members
    bob = p.page.locator('[data-testid=member-tile][data-user="@bob:localhost"]')
    carol = p.page.locator('[data-testid=member-tile][data-user="@carol:localhost"]')
    assert await bob.get_attribute("data-speaking") == "true"
    assert await bob.get_attribute("data-active") == "true"
    assert await carol.get_attribute("data-speaking") == "false"
    assert "carol" in await carol.inner_text()  # her camera is off: her name stands in
    # Carol speaks now. The page patches itself: its buttons stay the same elements, so a click
    # that straddles a speaker change still lands.
    await p.page.evaluate("window.muteButton = document.querySelector('[data-testid=mute]')")
    members[0]["speaking"], members[1]["speaking"] = False, True
    await p.server.push({**group, "active_speaker": "@carol:localhost"})
    await p.page.locator(
        '[data-testid=member-tile][data-user="@carol:localhost"][data-speaking="true"]'
    ).wait_for()
    assert await p.page.evaluate(
        "window.muteButton === document.querySelector('[data-testid=mute]')"
    )
    await p.page.screenshot(path=str(SHOTS / "page-group.png"))
    await p.testid("mute").click()
    mute = await p.server.wait_sent(lambda m: m["type"] == "group_mute")
    assert (mute["room_id"], mute["audio"]) == ("!team:localhost", True)
    await p.page.locator('[data-testid=mute][aria-pressed="true"]').wait_for()
    await p.testid("leave").click()
    leave = await p.server.wait_sent(lambda m: m["type"] == "group_leave")
    assert leave["room_id"] == "!team:localhost"
    await p.server.push({**group, "joined": False, "members": [], "active_speaker": None})
    await p.testid("join-call").wait_for()
    assert p.errors == []


async def test_a_waiting_call_that_cannot_be_encrypted_is_answered_only_by_choice(
    open_page: Any,
) -> None:
    p = await open_page()
    await p.testid("room").nth(1).wait_for()
    await p.server.push(call_event("first", state="connected", owner=True, direction="outgoing"))
    await p.testid("call-screen").wait_for()
    await p.server.push(call_event("plain", peer="@carol:localhost", video=False, encrypted=False))
    await p.server.push({"type": "call_waiting", "call_id": "plain", "current_call_id": "first"})
    waiting = p.testid("call-waiting")
    await waiting.get_by_test_id("e2ee-warning").wait_for()
    # Holding the first call and answering as for an encrypted one would only be refused (the
    # first call left on hold): the banner asks for the choice the ring banner asks for.
    assert await waiting.get_by_test_id("hold-answer").count() == 0
    await waiting.get_by_test_id("hold-continue-unencrypted").click()
    answer = await p.server.wait_sent(lambda m: m["type"] == "answer")
    assert (answer["call_id"], answer["allow_unencrypted"]) == ("plain", True)
    assert p.errors == []


async def test_relay_only_page_gathers_and_sends_relay_candidates_only(
    open_page: Any, tmp_path: Path
) -> None:
    from sealcall.turn import TurnServer
    from sealcall.web.media_commands import ice_servers_json

    turn = TurnServer(
        tmp_path / "turn", relay_ips=["127.0.0.2"], allowed_peer_networks=["127.0.0.0/8"]
    )
    await turn.start()
    try:
        a = await open_page()
        call = "relayonly1"
        await a.testid("room").nth(1).wait_for()
        await a.server.push(call_event(call, direction="outgoing", state="connecting", owner=True))
        await a.server.push(
            {
                "type": "media",
                "call_id": call,
                "op": "create_offer",
                "ice_servers": ice_servers_json([turn.ice_server("@alice:localhost")]),
                "relay_only": True,
                "on_hold": False,
                "video": True,
                "screenshare": False,
                "ice_restart": False,
            }
        )
        offer = await a.server.wait_sent(lambda m: m["type"] == "local_description")
        # Gathering is over when the page sends the end-of-candidates marker.
        await a.server.wait_sent(
            lambda m: (
                m["type"] == "local_candidates"
                and any(c["candidate"] == "" for c in m["candidates"])
            )
        )
        sent = [
            c["candidate"]
            for m in a.server.sent
            if m["type"] == "local_candidates"
            for c in m["candidates"]
        ]
        assert_relay_only(offer["sdp"], sent)
    finally:
        await turn.stop()


def assert_relay_only(sdp: str, trickled: list[str]) -> None:
    """The page's offer and trickled candidates name TURN relays (127.0.0.2) only."""
    sent = [candidate for candidate in trickled if candidate]
    in_sdp = [line for line in sdp.split("\r\n") if line.startswith("a=candidate")]
    assert sent, "no relay candidate gathered"
    for candidate in sent + in_sdp:
        assert " typ relay" in candidate
        assert " 127.0.0.2 " in candidate


async def test_the_pages_relay_only_switch_makes_the_next_call_relay_only(
    browser: Any, turn_synapse: Any, tmp_path: Path
) -> None:
    """The real app on a homeserver with TURN: the user turns on "Always relay calls" in the
    page, then calls; what the page hands the app (offer, trickled candidates) is relay only."""
    from sealcall.demo import open_dm, wait_for
    from sealcall.transport.matrix import MatrixTransport
    from sealcall.web import protocol as p
    from web_app_helpers import WAIT_MS, account, page_user

    alice = await page_user(turn_synapse, tmp_path, "alice")
    bob_id, bob_password, bob_store = await account(turn_synapse, tmp_path, "bob")
    bob = await MatrixTransport.login(turn_synapse.url, bob_id, bob_password, bob_store)
    await bob.start()
    results: list[Any] = []
    feed = alice.app.page_media_result

    def record(socket: Any, result: Any) -> None:
        results.append(result)
        feed(socket, result)

    alice.app.page_media_result = record  # type: ignore[method-assign]
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        room_id = await open_dm(alice.transport, bob)
        page = await context.new_page()
        await page.goto(alice.server.url)
        switch = page.get_by_test_id("relay-only")
        await page.locator('[data-testid="relay-only"][aria-checked="false"]').wait_for(
            timeout=WAIT_MS
        )
        assert not alice.app.relay_only
        await switch.click()
        await page.locator('[data-testid="relay-only"][aria-checked="true"]').wait_for(
            timeout=WAIT_MS
        )
        assert alice.app.relay_only
        await page.locator(f'[data-testid="room"][data-room-id="{room_id}"]').click()
        await page.get_by_test_id("call-audio").click(timeout=WAIT_MS)
        # The switch says a change now would apply to the next call only.
        await page.get_by_test_id("relay-only-note").wait_for(timeout=WAIT_MS)
        await wait_for(
            lambda: any(
                isinstance(r, p.LocalCandidates) and any(not c.candidate for c in r.candidates)
                for r in results
            ),
            30,
            "the end of the page's candidates",
        )
        offers = [r for r in results if isinstance(r, p.LocalDescription)]
        trickled = [
            c.candidate for r in results if isinstance(r, p.LocalCandidates) for c in r.candidates
        ]
        assert offers, "the page made no offer"
        assert "" in trickled, "the page's gathering did not end"
        assert_relay_only(offers[0].sdp, trickled)
    finally:
        await context.close()
        await alice.stop()
        await bob.stop()

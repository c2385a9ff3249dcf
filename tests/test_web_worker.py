"""The SFrame worker (web/static/e2ee_worker.js) in Debian's Chromium, over real WebRTC.

tests/web/loopback.html runs two peer connections in one page: A sends the fake camera and
microphone to B, each frame protected by the worker on A's senders and opened by it on B's
receivers (RTCRtpScriptTransform). The page is served from 127.0.0.1 (a secure context, so
WebCrypto is there) with the package's static files beside it.
"""

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from browser import Browser, until
from interop_jssdk import StaticServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parent.parent
KEY = list(range(32))
WRONG_KEY = list(range(1, 33))
FRAMES = 20  # frames of each kind that must get through (about a second of media)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """The package's static files as /static/ and the test pages as /web/, on 127.0.0.1."""
    root = tmp_path_factory.mktemp("site")
    os.symlink(ROOT / "src" / "sealcall" / "web" / "static", root / "static")
    os.symlink(ROOT / "tests" / "web", root / "web")
    server = StaticServer(root)
    try:
        yield server.url
    finally:
        server.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser, site: str) -> AsyncIterator[Any]:
    """The loopback page, loaded; its connections and worker closed after the test."""
    page = await browser.page_on(site + "web/loopback.html")
    await until(page, "() => window.T?.ready === true", what="loopback.js")
    try:
        yield page
    finally:
        await page.evaluate("() => T.close()")
        await browser.close_pages()


async def stats(page: Any, scope: str) -> dict[str, Any]:
    return dict(await page.evaluate("(scope) => T.stats(scope)", scope))


async def media(page: Any) -> dict[str, Any]:
    return dict(await page.evaluate("() => T.media()"))


def no_drops_but_duplicates(counters: dict[str, Any]) -> bool:
    """True if the receiver dropped nothing but replays. Chromium may hand the worker a video
    frame twice when a probe retransmission reassembles it again (seen early in a call: the
    same counter, 2 below the highest); the copy is refused as a replay, as it must be."""
    return all(n == 0 for reason, n in counters["dropped"].items() if reason != "replay")


DECRYPTED_BOTH = """async (n) => {
    const s = await T.stats("b");
    return s.audio.decrypted > n && s.video.decrypted > n;
}"""


async def test_matching_keys_decrypt_audio_and_video_and_the_video_plays(page: Any) -> None:
    await page.evaluate("() => T.start()")
    await page.evaluate("(k) => T.setKeys({send: k, receive: k})", KEY)
    await until(page, DECRYPTED_BOTH, FRAMES, what="frames decrypted at B")
    await until(page, "async () => (await T.media()).videoWidth > 0", what="the video plays")
    first = (await media(page))["framesDecoded"]
    await until(
        page,
        "async (n) => (await T.media()).framesDecoded > n",
        first + 10,
        what="framesDecoded rising",
    )
    a, b = await stats(page, "a"), await stats(page, "b")
    assert a["audio"]["encrypted"] > FRAMES
    assert a["video"]["encrypted"] > FRAMES
    assert a["plain"] == b["plain"] == 0
    assert no_drops_but_duplicates(b)
    assert (await media(page))["videoCodec"] == "video/VP8"
    # The call ends: its keys are forgotten, its counters start again, nothing opens.
    await page.evaluate("() => T.post({op: 'forget', scope: 'b'})")
    await until(
        page,
        "async (n) => (await T.stats('b')).video.dropped.no_key > n",
        FRAMES,
        what="frames dropped after forget",
    )
    assert (await stats(page, "b"))["decrypted"] == 0


async def test_a_wrong_receive_key_decrypts_nothing_and_nothing_decodes(page: Any) -> None:
    await page.evaluate("() => T.start()")
    await page.evaluate("([s, r]) => T.setKeys({send: s, receive: r})", [KEY, WRONG_KEY])
    await until(
        page,
        """async (n) => {
            const s = await T.stats("b");
            return s.audio.dropped.auth > n && s.video.dropped.auth > n;
        }""",
        FRAMES,
        what="frames refused at B",
    )
    b, shown = await stats(page, "b"), await media(page)
    assert b["decrypted"] == b["plain"] == 0
    assert [b["dropped"][k] for k in ("no_key", "replay", "malformed", "unencrypted")] == [0] * 4
    assert shown["framesDecoded"] == 0
    assert shown["videoWidth"] == 0
    # Repeated failures asked for a key frame (at most once a second).
    assert await page.evaluate("() => T.keyFrameNeeded.length") >= 1
    assert (await stats(page, "a"))["video"]["encrypted"] > FRAMES


BAD_MESSAGES = [
    None,
    5,
    {},
    {"op": "nope"},
    {"op": "set_send_key", "scope": "a", "suite": 4, "kid": 0, "key": "not bytes"},
    {"op": "add_receive_key", "scope": "b", "sender": 3, "suite": 4, "kid": 0},
    {"op": "set_send_key", "scope": "a", "suite": 77, "kid": 0},
    {"op": "stats", "scope": 7, "request": 1},
    {"op": "forget", "scope": "x" * 300},
]


async def test_before_keys_the_sender_drops_then_keys_start_the_media(page: Any) -> None:
    await page.evaluate("() => T.start()")
    for message in BAD_MESSAGES:
        await page.evaluate("(m) => T.post(m)", message)
    # A key for an unknown suite: refused while it is being installed.
    await page.evaluate(
        "(k) => T.post({op: 'set_send_key', scope: 'a', suite: 9, kid: 0, key: new Uint8Array(k)})",
        KEY,
    )
    await until(
        page,
        """async (n) => {
            const s = await T.stats("a");
            return s.audio.dropped.no_key > n && s.video.dropped.no_key > n;
        }""",
        FRAMES,
        what="frames dropped at A before keys",
    )
    a, b, shown = await stats(page, "a"), await stats(page, "b"), await media(page)
    assert a["encrypted"] == a["plain"] == 0
    assert b["received"] == 0
    assert shown["framesDecoded"] == 0
    assert a["bad_messages"] == len(BAD_MESSAGES) + 1
    # Keys arrive: the same connection starts carrying decryptable media.
    await page.evaluate("(k) => T.setKeys({send: k, receive: k})", KEY)
    await until(page, DECRYPTED_BOTH, FRAMES, what="frames decrypted once keys arrived")
    await until(page, "async () => (await T.media()).framesDecoded > 0", what="video decoding")


async def test_h264_frames_from_chromium_open_without_a_drop(page: Any) -> None:
    """Chromium's receiver parses each H.264 slice header (where a frame starts), which SFrame
    encrypts, so only IDR frames (behind their clear SPS/PPS) reach the worker: calls prefer
    VP8. The frames that do arrive must all open: Chromium's Annex B output and frames.js
    agree."""
    await page.evaluate("() => T.start({video: 'video/H264'})")
    await page.evaluate("(k) => T.setKeys({send: k, receive: k})", KEY)
    await until(
        page, "async () => (await T.stats('b')).video.decrypted >= 2", what="H.264 frames opened"
    )
    assert no_drops_but_duplicates(await stats(page, "b"))
    assert (await media(page))["videoCodec"] == "video/H264"

"""``sealcall app`` over the real stack: the page in Debian's Chromium calls a ``sealcall
answer`` peer, and a Python peer calls the page; frames are decrypted on both sides (the page's
worker counters, the peer's counters and its recording), and what a relay sees decodes to
nothing.
"""

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from browser import Browser
from matrix_helpers import MatrixDevice, device, without_frame_encryption
from sealcall.calls import CallPolicy, CallState
from sealcall.demo import open_dm, wait_for
from sealcall.e2ee import vp8_is_key_frame
from web_app_helpers import WAIT_MS, PageUser, account, joined, page_user

from encoded_media import decodable_frames, incompressible

pytestmark = pytest.mark.asyncio(loop_scope="module")

CLI = [sys.executable, "-m", "sealcall"]


def received(peer: MatrixDevice, call_id: str, kind: str) -> int:
    """Frames of ``kind`` the Python peer decoded in the call so far."""
    counter = peer.counters.get((call_id, kind))
    return 0 if counter is None else counter.frames


async def page_call(user: PageUser, state: str = "connected") -> str:
    """The id of the page's call once it reaches ``state``."""
    handle = await user.page.wait_for_function(
        "(wanted) => Object.values(window.sealcall.state().calls)"
        ".find((c) => c.state === wanted)?.call_id",
        arg=state,
        polling=100,
        timeout=WAIT_MS,
    )
    return str(await handle.json_value())


async def hostile_visits(
    user: PageUser, session: aiohttp.ClientSession
) -> aiohttp.ClientWebSocketResponse:
    """What another local user or a web site can try against the app's port; returns a socket
    that has the secret (as a second tab would) for more mischief."""
    port = user.server.port
    base = f"http://127.0.0.1:{port}"
    ws_url = user.server.url.replace("http://", "ws://") + "ws"
    async with session.get(f"{base}/{'x' * 43}/") as wrong:
        assert wrong.status == 404
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await session.ws_connect(ws_url, origin="http://evil.example")
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await session.ws_connect(ws_url.replace(user.server.url.split("/")[3], "0" * 43))
    tab = await session.ws_connect(ws_url, origin=base)
    for junk in ("{", "[]", '{"type": "answer", "id": 1, "call_id": 5}', '{"type": "nope"}'):
        await tab.send_str(junk)
    await tab.send_str('{"type": "hangup", "id": 2, "call_id": "no-such-call"}')
    replies = [await tab.receive_json(timeout=10) for _ in range(2)]
    assert {r.get("code") for r in replies if r.get("id") == 2} == {"not_found"}
    return tab


async def test_page_calls_a_cli_peer(synapse: Any, tmp_path: Path, browser: Browser) -> None:
    alice = await page_user(synapse, tmp_path, "alice")
    bob_id, bob_password, bob_store = await account(synapse, tmp_path, "bob")
    proc = await asyncio.create_subprocess_exec(
        *CLI, "answer", "--auto", "--loopback", "--duration", "4",
        "--homeserver", synapse.url, "--user", bob_id, "--password", bob_password,
        "--store", str(bob_store),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    stack = contextlib.AsyncExitStack()
    try:
        room = await alice.transport.create_dm(bob_id)
        await joined(alice.transport, room, bob_id)
        await alice.transport.wait_for_member_devices(room)
        await alice.open(browser)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        tab = await hostile_visits(alice, http)
        await alice.select_room(room)
        await alice.click("call-video")

        call_id = await page_call(alice)
        # A second socket cannot drive media of the call the page carries.
        await tab.send_str(
            json.dumps({"type": "connection_state", "call_id": call_id, "state": "failed"})
        )
        await wait_for(lambda: alice.app.dropped_media_results > 0, 10, "the drop")
        assert alice.server.refused_messages >= 4
        assert sum(alice.server.refused_requests.values()) >= 3
        await tab.close()
        await alice.decrypted(call_id, "video", 19)
        await alice.decrypted(call_id, "audio", 49)
        stats = await alice.stats(call_id)
        assert stats["e2ee"] is True
        assert stats["frames_decoded"] > 0
        assert stats["worker"]["video"]["encrypted"] > 0

        output, _ = await asyncio.wait_for(proc.communicate(), 60)
        text = output.decode()
        assert proc.returncode == 0, text
        assert "media: end-to-end encrypted (SFrame)" in text
        received = next(line for line in text.splitlines() if "[call] received:" in line)
        audio, video = [int(word) for word in received.split() if word.isdigit()][:2]
        assert audio > 50, received
        assert video > 20, received
        assert " 0 dropped" in received

        await alice.wait_call_state(call_id, "ended")
        item = await alice.history_item(call_id)
        assert (item["outcome"], item["direction"], item["video"]) == (
            "answered",
            "outgoing",
            "true",
        )
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await stack.aclose()
        await alice.stop()


async def test_python_peer_calls_the_page(synapse: Any, tmp_path: Path, browser: Browser) -> None:
    alice = await page_user(synapse, tmp_path, "alice")
    bob = await device(synapse, tmp_path, "bob")
    try:
        room = await open_dm(bob.transport, alice.transport)
        await alice.open(browser)
        session = await bob.voip.place_call(room, alice.user_id, video=True)

        banner = alice.page.locator('[data-testid="ring-banner"]')
        await banner.wait_for(timeout=WAIT_MS)
        assert await alice.page.evaluate("() => window.sealcall.ringing()") is True
        await alice.screenshot("ringing")
        await alice.click("accept-video")
        await wait_for(lambda: session.state is CallState.CONNECTED, 30, "connected")
        call_id = session.call_id
        await alice.wait_call_state(call_id, "connected")
        assert await alice.page.evaluate("() => window.sealcall.ringing()") is False

        # What a relay would see: the frames as they arrive at bob, before his SFrame layer.
        seen: dict[str, list[bytes]] = {"audio": [], "video": []}
        assert session.pc is not None
        for transceiver in session.pc.getTransceivers():
            tap = session.pc.receiver_tap(transceiver.receiver)

            def recording(
                mime: str,
                data: bytes,
                _open: Any = tap.unprotect,
                _k: str = transceiver.kind,
                **options: Any,
            ) -> Any:
                seen[_k].append(bytes(data))
                return _open(mime, data, **options)

            tap.unprotect = recording  # type: ignore[method-assign]

        await alice.decrypted(call_id, "video", 19)
        await alice.decrypted(call_id, "audio", 49)
        await wait_for(lambda: len(seen["video"]) > 30 and len(seen["audio"]) > 50, 30, "frames")
        video = list(seen["video"])
        assert decodable_frames("vp8", video) == 0
        body = b"".join(f[10:] if vp8_is_key_frame(f) else f[3:] for f in video)
        assert incompressible(body)
        assert incompressible(b"".join(f[1:] for f in seen["audio"]))
        # ... and bob, who holds the key, decrypted them.
        taps = [session.pc.receiver_tap(t.receiver) for t in session.pc.getTransceivers()]
        decrypted = {t.kind: t.counters.frames_decrypted for t in taps}
        assert decrypted["video"] > 30
        assert decrypted["audio"] > 50
        assert sum(t.counters.frames_dropped for t in taps) == 0
        assert bob.counters[(call_id, "video")].frames > 10

        await alice.click("stats")
        await alice.page.wait_for_selector('[data-testid="stat-e2ee"]:has-text("yes")')
        await alice.screenshot("in-call")

        await alice.click("hangup")
        await wait_for(lambda: session.state is CallState.ENDED, 30, "the hang-up")
        item = await alice.history_item(call_id)
        assert (item["outcome"], item["direction"]) == ("answered", "incoming")
    finally:
        await bob.stop()
        await alice.stop()


async def test_a_browser_without_the_transform_places_no_call(
    synapse: Any, tmp_path: Path, browser: Browser
) -> None:
    alice = await page_user(synapse, tmp_path, "alice")
    bob = await device(synapse, tmp_path, "bob")
    try:
        room = await open_dm(bob.transport, alice.transport)
        page = await browser.page_on(alice.server.url)
        await page.add_init_script("delete window.RTCRtpScriptTransform")
        await page.reload()
        alice.page = page
        await page.locator('[data-testid="no-transform-warning"]').wait_for(timeout=WAIT_MS)
        await alice.select_room(room)
        assert await page.locator('[data-testid="call-video"]').is_disabled()
        # Asked anyway (a script on the page): the app refuses to place it.
        with pytest.raises(Exception, match="cannot encrypt"):
            await page.evaluate(
                "(room) => new Promise((ok, fail) => {"
                " const ws = new WebSocket(location.href.replace('http', 'ws') + 'ws');"
                " ws.onopen = () => { ws.send(JSON.stringify({type: 'hello', id: 1, e2ee: false}));"
                " ws.send(JSON.stringify("
                "{type: 'place_call', id: 2, room_id: room, video: true})); };"
                " ws.onmessage = (m) => { const r = JSON.parse(m.data);"
                " if (r.id === 2) r.type === 'error' ? fail(new Error(r.message)) : ok(r); }; })",
                room,
            )
        assert not bob.events["incoming_call"]

        # A call to it rings with Reject only: it is never answered without frame encryption.
        session = await bob.voip.place_call(room, alice.user_id, video=True)
        await page.locator('[data-testid="ring-banner"]').wait_for(timeout=WAIT_MS)
        assert await page.locator('[data-testid="accept-video"]').count() == 0
        await alice.click("reject")
        await wait_for(lambda: session.state is CallState.ENDED, 30, "the reject")
        assert session.call.end_reason in ("rejected", "encryption_required")
    finally:
        await bob.stop()
        await alice.stop()


async def test_a_peer_that_cannot_encrypt_is_the_users_decision(
    synapse: Any, tmp_path: Path, browser: Browser
) -> None:
    alice = await page_user(synapse, tmp_path, "alice")
    element = await device(synapse, tmp_path, "element", CallPolicy(allow_unencrypted=True))
    without_frame_encryption(element.transport)  # as an app without sealcall's encryption
    try:
        room = await open_dm(element.transport, alice.transport)
        await alice.open(browser)

        # Refused: the caller learns why.
        refused = await element.voip.place_call(room, alice.user_id, video=True)
        warning = alice.page.locator('[data-testid="ring-banner"] [data-testid="e2ee-warning"]')
        await warning.wait_for(timeout=WAIT_MS)
        assert await alice.page.locator('[data-testid="accept-video"]').count() == 0
        await alice.screenshot("unencrypted-warning")
        await alice.click("reject")
        await wait_for(lambda: refused.state is CallState.ENDED, 30, "the refusal")
        assert refused.call.end_reason == "encryption_required"

        # Taken by the user's explicit choice: media flows, in the clear between the two apps,
        # and the page says so for the whole call.
        taken = await element.voip.place_call(room, alice.user_id, video=True)
        await warning.wait_for(timeout=WAIT_MS)
        await alice.click("continue-unencrypted")
        await wait_for(lambda: taken.state is CallState.CONNECTED, 30, "connected")
        await alice.page.locator(
            '[data-testid="call-screen"] [data-testid="e2ee-warning"]'
        ).wait_for(timeout=WAIT_MS)
        assert (await alice.state())["calls"][taken.call_id]["encrypted"] is False
        await wait_for(
            lambda: received(element, taken.call_id, "video") > 10, 30, "frames at the far side"
        )
        stats = await alice.stats(taken.call_id)
        assert stats["worker"]["decrypted"] == 0
        assert stats["e2ee"] is False
        await alice.click("hangup")
        await wait_for(lambda: taken.state is CallState.ENDED, 30, "the hang-up")
    finally:
        await element.stop()
        await alice.stop()


async def test_the_app_command_serves_the_page(
    synapse: Any, tmp_path: Path, browser: Browser
) -> None:
    user_id, password, store = await account(synapse, tmp_path, "alice")
    proc = await asyncio.create_subprocess_exec(
        *CLI, "app", "--no-browser", "--homeserver", synapse.url, "--user", user_id,
        "--password", password, "--store", str(store),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line.startswith(f"sealcall app for {user_id}: http://127.0.0.1:"), line
        url = line.split(": ", 1)[1].strip()
        page = await browser.page_on(url)
        await page.locator(f'[data-testid="me"]:has-text("{user_id}")').wait_for(timeout=WAIT_MS)
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert url.split("/")[3] not in err.decode()  # the secret is in no log

"""Two people, each in ``sealcall app`` in their own browser context, call each other over the
real stack: mute, camera off and on, screen share, reject, a missed call and call waiting, each
seen on both screens and in both histories."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from browser import Browser
from matrix_helpers import device
from sealcall.calls import CallState
from sealcall.demo import open_dm, wait_for
from web_app_helpers import WAIT_MS, PageUser, joined, page_user

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module")
async def pair(synapse: Any, tmp_path: Path, browser: Browser) -> AsyncIterator[Any]:
    """Alice and Bob, each with the app open, and their DM."""
    alice = await page_user(synapse, tmp_path, "alice")
    bob = await page_user(synapse, tmp_path, "bob")
    try:
        room = await open_dm(alice.transport, bob.transport)
        for user in (alice, bob):
            await user.open(browser)
            await user.select_room(room)
        yield alice, bob, room
    finally:
        await browser.close_pages()
        for user in (alice, bob):
            await user.stop()


async def ring(user: PageUser) -> str:
    """Wait for the ring banner; the ringing call's id."""
    banner = user.page.locator('[data-testid="ring-banner"]')
    await banner.wait_for(timeout=WAIT_MS)
    return str(await banner.get_attribute("data-call-id"))


async def remote(user: PageUser, call_id: str, expression: str) -> None:
    """Wait until ``expression`` holds of the call's far side (``r``: its usermedia stream's
    metadata, ``s``: all its streams' purposes)."""
    await user.page.wait_for_function(
        "(id) => { const c = window.sealcall.state().calls[id]; if (!c) return false;"
        " const all = Object.values(c.remote.streams);"
        " const r = all.find((m) => m.purpose === 'm.usermedia') ?? {};"
        f" const s = all.map((m) => m.purpose); return {expression}; }}",
        arg=call_id,
        polling=100,
        timeout=WAIT_MS,
    )


async def pressed(user: PageUser, testid: str, on: bool) -> None:
    """Wait until the page's toggle button ``testid`` shows ``on``."""
    selector = f'[data-testid="{testid}"][aria-pressed="{str(on).lower()}"]'
    await user.page.locator(selector).wait_for(timeout=WAIT_MS)


async def test_video_call_with_mute_camera_and_screen_share(pair: Any) -> None:
    alice, bob, _ = pair
    await alice.click("call-video")
    call_id = await ring(bob)
    await bob.click("accept-video")
    await alice.wait_call_state(call_id, "connected")
    await bob.wait_call_state(call_id, "connected")
    for user in (alice, bob):
        await user.decrypted(call_id, "video", 10)
        await user.decrypted(call_id, "audio", 20)

    # Alice mutes: her button shows it, Bob's screen says so; she unmutes.
    await alice.click("mute")
    await pressed(alice, "mute", True)
    await remote(bob, call_id, "r.audio_muted === true")
    await bob.page.locator('[data-testid="remote-muted"]').wait_for(timeout=WAIT_MS)
    await alice.click("mute")
    await pressed(alice, "mute", False)
    await remote(bob, call_id, "r.audio_muted === false")

    # Hold: Bob sees that Alice put the call on hold; she resumes.
    await alice.click("hold")
    await alice.page.locator('[data-testid="on-hold"]').wait_for(timeout=WAIT_MS)
    await remote(bob, call_id, "c.remote.on_hold === true")
    await bob.page.locator('[data-testid="remote-placeholder"]').wait_for(timeout=WAIT_MS)
    await alice.click("hold")
    await remote(bob, call_id, "c.remote.on_hold === false")
    await alice.page.locator('[data-testid="on-hold"]').wait_for(state="detached", timeout=WAIT_MS)

    # Camera off: Bob sees her name instead of her picture; on again: the picture is back
    # and frames flow again.
    await alice.click("camera")
    await pressed(alice, "camera", True)
    await remote(bob, call_id, "r.video_muted === true")
    await bob.page.locator('[data-testid="remote-placeholder"]').wait_for(timeout=WAIT_MS)
    await alice.click("camera")
    await remote(bob, call_id, "r.video_muted === false")
    await bob.page.locator('[data-testid="remote-placeholder"]').wait_for(
        state="detached", timeout=WAIT_MS
    )
    before = await bob.decrypted(call_id, "video", 0)
    await bob.decrypted(call_id, "video", before + 10)

    # Screen share: Bob gets a second stream, the screen, and shows it.
    await alice.click("screen")
    await remote(bob, call_id, "s.includes('m.screenshare')")
    await bob.page.locator('[data-testid="remote-screen"]').wait_for(timeout=WAIT_MS)
    shared = await bob.decrypted(call_id, "video", 0)
    await bob.decrypted(call_id, "video", shared + 30)  # camera and screen both flow
    await bob.screenshot("screen-share")
    await alice.click("screen")
    await remote(bob, call_id, "!s.includes('m.screenshare')")
    await bob.page.locator('[data-testid="remote-screen"]').wait_for(
        state="detached", timeout=WAIT_MS
    )

    stats = await bob.stats(call_id)
    assert stats["e2ee"] is True
    # Chromium hands the worker a few video frames twice early on: those are refused as
    # replays; nothing else may be dropped.
    dropped = {reason for reason, count in stats["worker"]["dropped"].items() if count}
    assert dropped <= {"replay"}, stats["worker"]

    await bob.click("hangup")
    await alice.wait_call_state(call_id, "ended")
    mine, theirs = await alice.history_item(call_id), await bob.history_item(call_id)
    assert (mine["outcome"], mine["direction"], mine["video"]) == ("answered", "outgoing", "true")
    assert (theirs["outcome"], theirs["direction"]) == ("answered", "incoming")


async def test_reject_and_missed_call(pair: Any) -> None:
    alice, bob, _ = pair
    await alice.click("call-audio")
    rejected = await ring(bob)
    await bob.click("reject")
    await alice.wait_call_state(rejected, "ended")
    mine, theirs = await alice.history_item(rejected), await bob.history_item(rejected)
    assert (mine["outcome"], mine["direction"], mine["video"]) == ("rejected", "outgoing", "false")
    assert (theirs["outcome"], theirs["direction"]) == ("rejected", "incoming")

    # Alice gives up before Bob answers: cancelled for her, missed for him.
    await alice.click("call-audio")
    missed = await ring(bob)
    assert missed != rejected
    await alice.click("hangup")
    await bob.page.locator('[data-testid="ring-banner"]').wait_for(
        state="detached", timeout=WAIT_MS
    )
    mine, theirs = await alice.history_item(missed), await bob.history_item(missed)
    assert (mine["outcome"], mine["direction"]) == ("cancelled", "outgoing")
    assert (theirs["outcome"], theirs["direction"]) == ("missed", "incoming")
    await bob.screenshot("history")


async def test_call_waiting_end_and_answer(pair: Any, synapse: Any, tmp_path: Path) -> None:
    alice, bob, _ = pair
    carol = await device(synapse, tmp_path, "carol")
    try:
        carol_room = await open_dm(carol.transport, bob.transport)
        await alice.click("call-audio")
        first = await ring(bob)
        await bob.click("accept-audio")
        await bob.wait_call_state(first, "connected")
        await bob.page.locator('[data-testid="e2ee-badge"][data-e2ee="true"]').wait_for(
            timeout=WAIT_MS
        )

        second = await carol.voip.place_call(carol_room, bob.user_id)
        waiting = bob.page.locator('[data-testid="call-waiting"]')
        await waiting.wait_for(timeout=WAIT_MS)
        assert await waiting.get_attribute("data-call-id") == second.call_id
        await bob.screenshot("call-waiting")
        await bob.click("end-answer")

        await wait_for(lambda: second.state is CallState.CONNECTED, 30, "carol connected")
        await bob.wait_call_state(second.call_id, "connected")
        await alice.wait_call_state(first, "ended")
        await bob.decrypted(second.call_id, "audio", 20)
        await bob.click("hangup")
        await wait_for(lambda: second.state is CallState.ENDED, 30, "carol's call ended")
        mine = await alice.history_item(first)
        assert (mine["outcome"], mine["direction"]) == ("answered", "outgoing")
    finally:
        await carol.stop()


async def test_calling_someone_new_by_user_id(
    synapse: Any, tmp_path: Path, browser: Browser
) -> None:
    alice = await page_user(synapse, tmp_path, "alice")
    bob = await page_user(synapse, tmp_path, "bob")
    try:
        for user in (alice, bob):
            await user.open(browser)
        await alice.page.fill('[data-testid="new-dm-user"]', bob.user_id)
        await alice.click("new-dm-open")
        # The DM is made, Bob's app joins it, Alice's page selects it.
        await alice.page.locator('[data-testid="room"][aria-current="true"]').wait_for(
            timeout=WAIT_MS
        )
        room = await alice.page.locator('[data-testid="room"][aria-current="true"]').get_attribute(
            "data-room-id"
        )
        assert room is not None
        await joined(alice.transport, room, bob.user_id)
        await bob.page.locator(f'[data-testid="room"][data-room-id="{room}"]').wait_for(
            timeout=WAIT_MS
        )
        await alice.page.locator('[data-testid="call-audio"]:not([disabled])').wait_for(
            timeout=WAIT_MS
        )
        await alice.click("call-audio")
        call_id = await ring(bob)
        await bob.click("accept-audio")
        await alice.wait_call_state(call_id, "connected")
        await bob.decrypted(call_id, "audio", 20)
        # An audio call gets Alice's camera ("Start camera"): Bob's page receives her video.
        await alice.click("camera")
        await bob.decrypted(call_id, "video", 10)
        await bob.page.locator('[data-testid="remote-placeholder"]').wait_for(
            state="detached", timeout=WAIT_MS
        )
        await alice.click("hangup")
        await bob.wait_call_state(call_id, "ended")
    finally:
        await browser.close_pages()
        for user in (alice, bob):
            await user.stop()

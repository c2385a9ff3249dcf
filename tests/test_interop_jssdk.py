"""Calls between sealcall and matrix-js-sdk (Element's SDK) in headless Chromium, over Synapse."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from interop_jssdk import CHROMIUM, CHROMIUM_ARGS, JsSdk, StaticServer, build, missing
from matrix_helpers import MatrixDevice, device, ringing
from sealcall.calls import CallPolicy
from sealcall.demo import wait_for
from sealcall.homeserver import Homeserver

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Peers:
    """The js-sdk user and two sealcall users, each in an encrypted DM with the js-sdk user."""

    def __init__(self, js: JsSdk, open_: MatrixDevice, strict: MatrixDevice) -> None:
        self.js = js
        self.open = open_  # opted in to unencrypted media (CallPolicy(allow_unencrypted=True))
        self.strict = strict  # the default policy
        self.rooms: dict[str, str] = {}


async def dm_with_browser(sealcall: MatrixDevice, js: JsSdk) -> str:
    room_id = await sealcall.transport.create_dm(js.user_id)
    await js.until("joined the DM", lambda: js.call("joined", room_id), 30)
    await wait_for(
        lambda: js.user_id in sealcall.transport.client.rooms[room_id].users, 30, "js-sdk joined"
    )
    assert await sealcall.transport.wait_for_member_devices(room_id, 30)
    return room_id


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def peers(
    synapse: Homeserver, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Peers]:
    reason = missing()
    if reason is not None:
        pytest.fail(f"the interop harness needs {reason}")
    from playwright.async_api import async_playwright

    tmp = tmp_path_factory.mktemp("interop")
    web = StaticServer(build(tmp / "web"))
    account = await synapse.register("element", "secret-element")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = await browser.new_page()
        js = JsSdk(page)
        try:
            await page.goto(web.url + "index.html")
            await js.start(synapse.url, account.user_id, account.password)
            open_ = await device(synapse, tmp, "open", CallPolicy(allow_unencrypted=True))
            strict = await device(synapse, tmp, "strict")
            peers = Peers(js, open_, strict)
            for d in (open_, strict):
                peers.rooms[d.user_id] = await dm_with_browser(d, js)
            yield peers
            await open_.stop()
            await strict.stop()
        finally:
            print("\n".join(js.console[-80:]))
            await browser.close()
            web.close()


async def test_jssdk_places_video_call(peers: Peers) -> None:
    js, sc = peers.js, peers.open
    room = peers.rooms[sc.user_id]
    call_id = await js.call("place", room, sc.user_id, True)
    incoming = await ringing(sc)
    assert incoming.call_id == call_id
    await incoming.answer()
    await wait_for(lambda: incoming.state.value == "connected", 15, "sealcall connected")
    await js.until("connected", lambda: _is(js, call_id, "connected"))


async def _is(js: JsSdk, call_id: str, state: str) -> bool:
    return await js.state(call_id) == state

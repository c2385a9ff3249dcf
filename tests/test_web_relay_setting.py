"""The relay-only setting of ``sealcall app`` (the page's "Always relay calls"), over a real
Synapse and stand-in page sockets: refused without TURN, told to every page, and applied to the
calls that begin after it changes (a ringing one answered afterwards included), never to one in
progress. The page's switch itself: tests/test_web_page.py."""

from pathlib import Path
from typing import Any

import pytest

from matrix_helpers import device
from sealcall.calls.relay_only import RELAY_UNAVAILABLE
from sealcall.demo import open_dm, wait_for
from sealcall.web import protocol as p
from sealcall.web.page_socket import PageError
from test_web_app_pages import opened
from web_app_helpers import page_user

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_relay_only_is_refused_when_the_homeserver_offers_no_turn(
    synapse: Any, tmp_path: Path
) -> None:
    alice = await page_user(synapse, tmp_path, "alice")
    try:
        page = await opened(alice.app, 1)
        with pytest.raises(PageError) as refused:
            await alice.app.page_request(page, p.SetRelayOnly(id=1, on=True))  # type: ignore[arg-type]
        assert (refused.value.code, str(refused.value)) == ("failed", RELAY_UNAVAILABLE)
        assert alice.app.relay_only is False
        assert alice.app.voip.manager.policy.relay_only is False
        assert page.of("settings") == []
        # Turning it off needs no TURN server.
        off = await alice.app.page_request(page, p.SetRelayOnly(id=2, on=False))  # type: ignore[arg-type]
        assert off == {"relay_only": False}
    finally:
        await alice.stop()


async def test_the_setting_applies_to_the_next_call_and_not_to_the_one_in_progress(
    turn_synapse: Any, tmp_path: Path
) -> None:
    alice = await page_user(turn_synapse, tmp_path, "alice")
    bob = await device(turn_synapse, tmp_path, "bob", ask_turn=True)
    try:
        first = await opened(alice.app, 1)
        room = await open_dm(bob.transport, alice.transport)
        session = await bob.voip.place_call(room, alice.user_id, video=False)
        await wait_for(lambda: session.call_id in alice.app.voip.sessions, 30, "the ring")
        # It rings before the user turns the setting on; a second tab is told of the change.
        second = await opened(alice.app, 2)
        reply = await alice.app.page_request(first, p.SetRelayOnly(id=1, on=True))  # type: ignore[arg-type]
        assert reply == {"relay_only": True}
        assert second.of("settings") == [{"type": "settings", "relay_only": True}]
        third = await opened(alice.app, 3)  # a page opened later learns it from hello
        hello = await alice.app.page_request(third, p.Hello(id=9, e2ee=True))  # type: ignore[arg-type]
        assert hello["relay_only"] is True

        await alice.app.page_request(
            first, p.Answer(id=2, call_id=session.call_id, video=False, allow_unencrypted=False)
        )  # type: ignore[arg-type]
        await wait_for(
            lambda: any(m.get("op") == "create_answer" for m in first.of("media")),
            30,
            "the page asked for an answer",
        )
        answer = next(m for m in first.of("media") if m.get("op") == "create_answer")
        assert answer["relay_only"] is True  # answered as the user now asks

        # Turned off during the call: the call in progress keeps relaying, the next does not.
        await alice.app.page_request(first, p.SetRelayOnly(id=3, on=False))  # type: ignore[arg-type]
        call = alice.app.voip.sessions[session.call_id].call
        assert call.policy.relay_only is True
        assert alice.app.voip.manager.policy.relay_only is False
    finally:
        await bob.stop()
        await alice.stop()

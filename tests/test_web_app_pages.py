"""CallApp with more than one page, over a real Synapse and stand-in page sockets (no browser):
a page that opens (a reload, a second tab) while a call rings or goes on is told of it, and a
second page's answer never takes the media of a call another page already answered."""

from pathlib import Path
from typing import Any

import pytest

from matrix_helpers import device
from sealcall.calls import CallState
from sealcall.demo import open_dm, wait_for
from sealcall.web import protocol as p
from sealcall.web.page_socket import PageError
from sealcall.web.rooms import room_list
from test_web_group_app import StandInSocket
from web_app_helpers import page_user

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def opened(app: Any, number: int) -> StandInSocket:
    socket = StandInSocket(number)
    await app.page_opened(socket)
    await app.page_request(socket, p.Hello(id=0, e2ee=True))
    return socket


async def test_a_page_that_opens_during_a_call_is_told_of_it(synapse: Any, tmp_path: Path) -> None:
    alice = await page_user(synapse, tmp_path, "alice")
    bob = await device(synapse, tmp_path, "bob")
    try:
        room = await open_dm(bob.transport, alice.transport)
        session = await bob.voip.place_call(room, alice.user_id, video=False)
        await wait_for(lambda: session.call_id in alice.app.voip.sessions, 30, "the ring")
        # No page was open when it began to ring: the first one to open rings.
        first = await opened(alice.app, 1)
        await wait_for(lambda: first.of("incoming_call"), 10, "the ring on the page")
        assert [(m["call_id"], m["state"], m["owner"]) for m in first.of("call")] == [
            (session.call_id, "ringing", False)
        ]
        assert first.of("incoming_call") == [{"type": "incoming_call", "call_id": session.call_id}]

        await alice.app.page_request(
            first, p.Answer(id=1, call_id=session.call_id, video=False, allow_unencrypted=False)
        )  # type: ignore[arg-type]
        # A second tab: it sees the call (not its owner), and it does not ring.
        second = await opened(alice.app, 2)
        await wait_for(lambda: second.of("call"), 10, "the call on the second page")
        snapshot = second.of("call")[-1]
        assert (snapshot["call_id"], snapshot["owner"]) == (session.call_id, False)
        assert snapshot["state"] != "ringing"
        assert second.of("incoming_call") == []
        # ... and the far side's streams as the first page knows them (its mute, its camera).
        await wait_for(lambda: second.of("remote_media"), 10, "the far side's streams")
        assert second.of("remote_media")[-1]["streams"] == first.of("remote_media")[-1]["streams"]
    finally:
        await bob.stop()
        await alice.stop()


async def test_a_second_pages_answer_leaves_the_media_with_the_first(
    synapse: Any, tmp_path: Path
) -> None:
    alice = await page_user(synapse, tmp_path, "alice")
    bob = await device(synapse, tmp_path, "bob")
    try:
        first = await opened(alice.app, 1)
        second = await opened(alice.app, 2)
        room = await open_dm(bob.transport, alice.transport)
        session = await bob.voip.place_call(room, alice.user_id, video=False)
        call_id = session.call_id
        await wait_for(lambda: first.of("incoming_call"), 30, "the ring")

        answer = p.Answer(id=1, call_id=call_id, video=False, allow_unencrypted=False)
        await alice.app.page_request(first, answer)  # type: ignore[arg-type]
        ours = alice.app.voip.sessions[call_id]
        assert ours.state is not CallState.RINGING
        with pytest.raises(PageError) as refused:
            await alice.app.page_request(second, answer)  # type: ignore[arg-type]
        assert refused.value.code == "illegal"

        # The first page still drives the call: the hang-up's close goes to it, not the second.
        assert not [m for m in second.of("call") if m["owner"]]
        await alice.app.page_request(second, p.HangUp(id=2, call_id=call_id))  # type: ignore[arg-type]
        await wait_for(lambda: first.of("call_ended"), 10, "the end on the page")
        assert [m["op"] for m in first.of("media")][-1] == "close"
        assert second.of("media") == []
    finally:
        await bob.stop()
        await alice.stop()


async def test_a_call_whose_page_never_answers_its_media_commands_ends(
    synapse: Any, tmp_path: Path
) -> None:
    alice = await page_user(synapse, tmp_path, "alice")
    bob = await device(synapse, tmp_path, "bob")
    try:
        alice.app.media_timeout = 1.0
        page = await opened(alice.app, 1)
        room = await open_dm(alice.transport, bob.transport)
        await alice.app.page_request(page, p.ListRooms(id=1))  # type: ignore[arg-type]
        await wait_for(
            lambda: any(r["peer"] == bob.user_id for r in room_list(alice.transport)), 30, "the DM"
        )
        placed = await alice.app.page_request(page, p.PlaceCall(id=2, room_id=room, video=False))  # type: ignore[arg-type]
        assert [m["op"] for m in page.of("media")] in ([], ["create_offer"])
        # The page never reports its offer: the call ends as one whose media failed.
        await wait_for(lambda: page.of("call_ended"), 30, "the end")
        assert page.of("call_ended")[0]["call_id"] == placed["call_id"]
        assert page.of("call_ended")[0]["reason"] == "user_media_failed"
        await wait_for(lambda: page.of("history_item"), 10, "the history item")
        assert page.of("history_item")[0]["item"]["outcome"] == "failed"
        assert placed["call_id"] not in alice.app.voip.sessions
    finally:
        await bob.stop()
        await alice.stop()


async def test_glare_hands_the_surviving_call_to_the_page_that_placed_ours(
    synapse: Any, tmp_path: Path
) -> None:
    alice = await page_user(synapse, tmp_path, "alice")
    bob = await device(synapse, tmp_path, "bob")
    try:
        page = await opened(alice.app, 1)
        room = await open_dm(alice.transport, bob.transport)
        await wait_for(
            lambda: any(r["peer"] == bob.user_id for r in room_list(alice.transport)), 30, "the DM"
        )
        ours = await alice.app.page_request(page, p.PlaceCall(id=1, room_id=room, video=False))  # type: ignore[arg-type]
        # Bob calls while our page still makes its offer: glare merges ours into his call,
        # which the engine answers at once; its media is this page's.
        theirs = await bob.voip.place_call(room, alice.user_id, video=False)
        await wait_for(
            lambda: any(
                m["op"] == "create_answer" and m["call_id"] == theirs.call_id
                for m in page.of("media")
            ),
            30,
            "the surviving call's answer asked of the page",
        )
        ended = [m["call_id"] for m in page.of("call_ended")]
        assert ended == [ours["call_id"]]
        await wait_for(
            lambda: any(m["call_id"] == theirs.call_id and m["owner"] for m in page.of("call")),
            10,
            "the page told it drives the surviving call",
        )
    finally:
        await bob.stop()
        await alice.stop()

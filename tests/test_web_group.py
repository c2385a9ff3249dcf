"""A group call of two pages and two Python clients over a real Synapse (issue 10, must-show 3).

Ann and Bob use ``sealcall app`` in Debian's Chromium; Cat and Dan are Python members
(``GroupCallSession`` with aiortc). Cat starts the room's call: it rings both pages; Ann joins
from the ring banner, Bob declines, then joins from the room. All four connect pairwise; each
page's worker opens frames from every other member (per sender) and each Python member decrypts
both pages' frames; the grid shows three members and who speaks; Ann mutes and the others see
it; Ann leaves and the others see two members, and her history shows the group call.
"""

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

import test_group_membership_session as gm
from browser import Browser, missing
from group_call_helpers import SMALL_MEDIA, TIMEOUT
from sealcall.demo import wait_for
from sealcall.homeserver import Homeserver
from sealcall.session import GroupCallSession
from web_app_helpers import WAIT_MS, PageUser, page_user

pytestmark = pytest.mark.usefixtures("synapse")


def sender_of(transport: Any) -> str:
    return f"{transport.user_id} {transport.device_id}"


async def in_room(room_id: str, *transports: Any, users: int) -> None:
    await wait_for(
        lambda: all(
            room_id in t.client.rooms
            and t.client.rooms[room_id].encrypted
            and len(t.client.rooms[room_id].users) == users
            for t in transports
        ),
        TIMEOUT,
        "everybody in the encrypted room",
    )


async def group_state(user: PageUser, room_id: str) -> dict[str, Any]:
    state = await user.state()
    group: dict[str, Any] = state.get("groups", {}).get(room_id, {})
    return group


async def wait_page(user: PageUser, expression: str, arg: Any = None) -> None:
    await user.page.wait_for_function(expression, arg=arg, polling=200, timeout=WAIT_MS)


async def worker_senders(user: PageUser, room_id: str) -> dict[str, Any]:
    stats = await user.page.evaluate("(id) => window.sealcall.stats(id)", room_id)
    senders: dict[str, Any] = (stats.get("worker") or {}).get("senders", {})
    return senders


def tile(user: PageUser, sender: str) -> Any:
    return user.page.locator(f'[data-testid="member-tile"][data-sender="{sender}"]')


async def test_two_pages_and_two_python_members_in_one_group_call(
    synapse: Homeserver, tmp_path: Path
) -> None:
    if (reason := missing()) is not None:
        pytest.fail(reason)
    devices = gm.Devices(synapse, tmp_path)
    ann = await page_user(synapse, tmp_path, "ann")
    bob = await page_user(synapse, tmp_path, "bob")
    sessions: list[GroupCallSession] = []
    shared: dict[int, list[tuple[str, str]]] = {}  # session -> (sender, purpose) of its tracks
    try:
        cat, dan = await devices.new("cat"), await devices.new("dan")
        room_id = await cat.transport.create_group_room(
            f"team-{uuid.uuid4().hex[:4]}", invite=[ann.user_id, bob.user_id, dan.user_id]
        )
        await wait_for(lambda: room_id in dan.transport.invites(), TIMEOUT, "dan's invite")
        await dan.transport.join(room_id)  # the pages' apps join their invites themselves
        everyone = (ann.transport, bob.transport, cat.transport, dan.transport)
        await in_room(room_id, *everyone, users=4)

        def member(d: gm.Device) -> GroupCallSession:
            session = GroupCallSession(
                d.transport,
                room_id,
                video=True,
                media=SMALL_MEDIA,
                leave_delay_ms=gm.DELAY_MS,
                restart_ms=gm.RESTART_MS,
                key_options={"use_delay": 0.5, "early_ttl": 1.0, "young_key_age": 60.0},
            )
            sessions.append(session)
            session.on(
                "remote_media_added",
                lambda device, track, purpose, s=session: shared[id(s)].append(
                    (f"{device.user_id} {device.device_id}", purpose.value)
                ),
            )
            shared[id(session)] = []
            return session

        async with Browser.launched() as browser:
            for user in (ann, bob):
                await user.open(browser)
            # Cat starts the call: both pages ring.
            cats = member(cat)
            await cats.join()
            for user in (ann, bob):
                await user.page.locator(
                    f'[data-testid="group-ring"][data-room-id="{room_id}"]'
                ).wait_for(timeout=WAIT_MS)
                assert await user.page.evaluate("() => window.sealcall.ringing()")
            # Bob declines (the banner and the ringing stop), then joins from the room; Ann
            # joins from the ring.
            await bob.click("group-decline")
            await bob.page.locator('[data-testid="group-ring"]').wait_for(
                state="detached", timeout=WAIT_MS
            )
            await wait_page(bob, "() => !window.sealcall.ringing()")
            await ann.click("group-join-video")
            await bob.select_room(room_id)
            await bob.click("join-video")
            dans = member(dan)
            await dans.join()

            pages = {sender_of(ann.transport): ann, sender_of(bob.transport): bob}
            python = {sender_of(cat.transport): cats, sender_of(dan.transport): dans}
            all_senders = [*pages, *python]

            # All four connect pairwise.
            await wait_for(
                lambda: all(len(s.connected_peers()) == 3 for s in python.values()),
                TIMEOUT,
                "the Python members connected to everyone",
            )
            for user in pages.values():
                await wait_page(
                    user,
                    """(room) => {
                      const g = window.sealcall.state().groups[room];
                      return g?.joined && g.members.length === 3
                        && g.members.every((m) => m.state === "connected");
                    }""",
                    room_id,
                )
                # The grid: us and three members, each named.
                await user.page.locator('[data-testid="group-grid"][data-members="3"]').wait_for(
                    timeout=WAIT_MS
                )

            # Each page's worker opens every other member's audio and video with its keys.
            async def page_decrypts(user: PageUser, me: str) -> bool:
                senders = await worker_senders(user, room_id)
                return all(
                    senders.get(s, {}).get(kind, {}).get("decrypted", 0) >= 10
                    for s in all_senders
                    if s != me
                    for kind in ("audio", "video")
                )

            for me, user in pages.items():
                for _ in range(int(TIMEOUT / 0.5)):
                    if await page_decrypts(user, me):
                        break
                    await user.page.wait_for_timeout(500)
                # A string, so that pytest shows every sender's counts, not a cut repr.
                assert await page_decrypts(user, me), json.dumps(
                    await worker_senders(user, room_id)
                )

            # Each Python member decrypts both pages' audio and video.
            def python_decrypts() -> bool:
                return all(
                    s.stats()["received"].get(p, {}).get(kind, {}).get("frames_decrypted", 0) >= 10
                    for s in python.values()
                    for p in pages
                    for kind in ("audio", "video")
                )

            await wait_for(python_decrypts, TIMEOUT, "the Python members decrypting the pages")

            # Who speaks: Ann's microphone (the fake device's beep) lights her tile on Bob's page.
            ann_sender = sender_of(ann.transport)
            await bob.page.locator(
                f'[data-testid="member-tile"][data-sender="{ann_sender}"][data-speaking="true"]'
            ).wait_for(timeout=WAIT_MS)
            await ann.screenshot("group-call")

            # Ann mutes: Bob's page and the Python members see it.
            await ann.click("mute")
            await bob.page.locator(
                f'[data-testid="member-tile"][data-sender="{ann_sender}"][data-audio-muted="true"]'
            ).wait_for(timeout=WAIT_MS)
            for session in python.values():
                await wait_for(
                    lambda s=session: any(
                        pair.remote_mute_state()[0]
                        for device, pair in s.peer_sessions().items()
                        if f"{device.user_id} {device.device_id}" == ann_sender
                    ),
                    TIMEOUT,
                    "the Python members seeing Ann's mute",
                )

            # Bob turns his camera off (his name stands in for his picture) and shares his
            # screen: Ann's page and the Python members see both.
            bob_sender = sender_of(bob.transport)
            await bob.click("camera")
            await (
                tile(ann, bob_sender)
                .and_(ann.page.locator('[data-video-muted="true"]'))
                .wait_for(timeout=WAIT_MS)
            )
            for session in python.values():
                await wait_for(
                    lambda s=session: any(
                        pair.remote_mute_state()[1]
                        for device, pair in s.peer_sessions().items()
                        if f"{device.user_id} {device.device_id}" == bob_sender
                    ),
                    TIMEOUT,
                    "the Python members seeing Bob's camera off",
                )
            await bob.click("screen")
            await ann.page.locator('[data-testid="member-screen"]').wait_for(timeout=WAIT_MS)
            await wait_for(
                lambda: all(
                    (bob_sender, "m.screenshare") in shared[id(s)] for s in python.values()
                ),
                TIMEOUT,
                "the Python members getting Bob's screen",
            )

            # Ann leaves: the others see two members; her history shows the group call.
            await ann.click("leave")
            await bob.page.locator('[data-testid="group-grid"][data-members="2"]').wait_for(
                timeout=WAIT_MS
            )
            await wait_for(
                lambda: all(len(s.members()) == 2 for s in python.values()),
                TIMEOUT,
                "the Python members seeing Ann leave",
            )
            await wait_page(
                ann,
                """(room) => (window.sealcall.state().history[room] ?? [])
                    .some((it) => it.group === true && it.outcome === "answered")""",
                room_id,
            )
            await ann.select_room(room_id)
            await ann.page.locator('[data-testid="history-item"]').first.wait_for(timeout=WAIT_MS)
    finally:
        for session in sessions:
            await session.close(leave=False)
        for user in (ann, bob):
            await user.stop()
        for d in devices.started:
            await d.transport.stop()

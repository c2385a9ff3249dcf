"""A browser page in an SFU group call with Python members over a real Synapse (issue 11,
must-show 5b).

Ann uses ``sealcall app --sfu URL`` in Debian's Chromium; Cat and Dan are Python members in SFU
mode (``GroupCallSession`` with the aiortc link). The SFU is the real server with its real
admission (its own account in the room). Cat starts the call naming the SFU; Ann joins from the
room: her app is admitted (OpenID -> ``POST /admit``) and hands her page the join token, and
the page connects to the SFU itself. Ann's worker opens Cat's and Dan's forwarded audio and
video with their keys, and both Python members decrypt and decode Ann's; nothing goes peer to
peer. Dan leaves: Ann's page answers the SFU's renegotiation and goes on opening Cat's frames.
Ann leaves: the SFU drops her.
"""

import json
from pathlib import Path
from typing import Any

import pytest

import test_group_membership_session as gm
from browser import Browser, missing
from group_call_helpers import TIMEOUT, CallDevices
from sealcall.demo import wait_for
from sealcall.group import MemberDevice
from sealcall.homeserver import Homeserver
from sealcall.web import protocol as p
from sealcall.web.app import CallApp
from sealcall.web.page_socket import PageError
from sfu_call_helpers import running_sfu, sfu_member_session, sfu_url
from test_web_group_app import StandInSocket
from web_app_helpers import WAIT_MS, PageUser, page_user

pytestmark = pytest.mark.usefixtures("synapse")


def sender_of(device: MemberDevice) -> str:
    return f"{device.user_id} {device.device_id}"


async def worker_senders(user: PageUser, room_id: str) -> dict[str, Any]:
    stats = await user.page.evaluate("(id) => window.sealcall.stats(id)", room_id)
    senders: dict[str, Any] = (stats.get("worker") or {}).get("senders", {})
    return senders


def in_sfu_room(server: Any, room_id: str) -> list[str]:
    """The members of ``room_id`` the SFU has a connection with."""
    room = server.rooms.get(room_id)
    return [] if room is None else list(room.members)


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


async def test_a_page_joins_an_sfu_call_with_python_members_and_decrypts_their_media(
    synapse: Homeserver, tmp_path: Path
) -> None:
    if (reason := missing()) is not None:
        pytest.fail(reason)
    call_devices = CallDevices(synapse, tmp_path)
    call_devices.sessions = []
    cat, dan, sfu = [await call_devices.new(n) for n in ("cat", "dan", "sfu")]
    try:
        async with running_sfu(synapse, sfu) as server, Browser.launched() as browser:
            ann = await page_user(synapse, tmp_path, "ann", sfu_url=sfu_url(server))
            try:
                await in_sfu_call(call_devices, server, browser, ann, cat, dan, sfu)
            finally:
                await ann.stop()
    finally:
        for session in call_devices.sessions:
            await session.close(leave=False)
        for d in call_devices.started:
            await d.transport.stop()


async def in_sfu_call(
    call_devices: CallDevices,
    server: Any,
    browser: Browser,
    ann: PageUser,
    cat: gm.Device,
    dan: gm.Device,
    sfu: gm.Device,
) -> None:
    room_id = await sfu.transport.create_group_room(
        "sfu-team", invite=[ann.user_id, cat.user_id, dan.user_id]
    )
    for d in (cat, dan):
        await wait_for(lambda d=d: room_id in d.transport.invites(), TIMEOUT, "invite")
        await d.transport.join(room_id)  # the page's app joins its invite itself
    everyone = (ann.transport, cat.transport, dan.transport, sfu.transport)
    await in_room(room_id, *everyone, users=4)
    await ann.open(browser)
    cats = sfu_member_session(call_devices, cat, room_id, server)
    await cats.session.join()
    await ann.select_room(room_id)
    await ann.click("join-video")
    dans = sfu_member_session(call_devices, dan, room_id, server)
    await dans.session.join()
    python = {cat.device: cats, dan.device: dans}
    ann_device = MemberDevice(ann.transport.user_id, ann.transport.device_id)

    # Everyone is in the SFU's room: one connection each, the page's included.
    await wait_for(
        lambda: len(in_sfu_room(server, room_id)) == 3,
        TIMEOUT,
        "three members in the SFU's room",
    )
    assert all(w.session.pairs == {} for w in python.values())  # nothing peer to peer

    # Ann's worker opens Cat's and Dan's audio and video with each one's keys.
    async def page_decrypts() -> bool:
        senders = await worker_senders(ann, room_id)
        return all(
            senders.get(sender_of(d), {}).get(kind, {}).get("decrypted", 0) >= 10
            for d in python
            for kind in ("audio", "video")
        )

    for _ in range(int(TIMEOUT / 0.5)):
        if await page_decrypts():
            break
        await ann.page.wait_for_timeout(500)
    assert await page_decrypts(), json.dumps(await worker_senders(ann, room_id))

    # Cat and Dan decrypt and decode Ann's audio and video.
    await wait_for(
        lambda: all(
            w.decrypted(ann_device, kind) >= 10 and w.decoded(ann_device, kind) >= 10
            for w in python.values()
            for kind in ("audio", "video")
        ),
        TIMEOUT,
        "the Python members decrypting and decoding Ann's page",
    )

    # The grid shows both members, connected through the SFU, with their video.
    await ann.page.locator('[data-testid="group-grid"][data-members="2"]').wait_for(timeout=WAIT_MS)
    await ann.page.wait_for_function(
        """(room) => {
          const g = window.sealcall.state().groups[room];
          return g?.joined && g.members.length === 2
            && g.members.every((m) => m.state === "connected");
        }""",
        arg=room_id,
        polling=200,
        timeout=WAIT_MS,
    )
    for d in python:
        await ann.page.locator(
            f'[data-testid="member-tile"][data-sender="{sender_of(d)}"] video'
        ).wait_for(timeout=WAIT_MS)
    await ann.screenshot("sfu-group-call")

    # Mute indicators, through the SFU's control channel (no pair signaling): Cat mutes her
    # microphone and Ann's grid shows it; Ann turns her camera off and Dan hears of it.
    seen: list[tuple[Any, ...]] = []
    dans.session.on("remote_mute_changed", lambda *args: seen.append(args))
    await cats.session.set_microphone_muted(True)
    await ann.page.locator(
        f'[data-testid="member-tile"][data-sender="{sender_of(cat.device)}"]'
        '[data-audio-muted="true"]'
    ).wait_for(timeout=WAIT_MS)
    await ann.click("camera")
    await wait_for(lambda: (ann_device, False, True) in seen, TIMEOUT, "Ann's camera off")

    # Dan leaves: the SFU removes his m-lines from Ann's connection (a renegotiation the page
    # answers); her grid shows Cat alone, whose frames go on opening.
    await dans.session.leave()
    await ann.page.locator('[data-testid="group-grid"][data-members="1"]').wait_for(timeout=WAIT_MS)
    cat_sender = sender_of(cat.device)
    before = (await worker_senders(ann, room_id))[cat_sender]["video"]["decrypted"]
    await ann.page.wait_for_function(
        """([room, who, before]) => window.sealcall.stats(room).then((s) =>
             (s.worker?.senders?.[who]?.video?.decrypted ?? 0) > before + 10
             && Object.values(s.sfu?.tracks ?? {}).every((t) => t === who))""",
        arg=[room_id, cat_sender, before],
        polling=500,
        timeout=WAIT_MS,
    )

    # Ann leaves: the SFU drops her connection; Cat stays.
    await ann.click("leave")
    await wait_for(
        lambda: len(in_sfu_room(server, room_id)) == 1,
        TIMEOUT,
        "the SFU dropping Ann",
    )


async def test_an_app_without_that_sfu_refuses_the_call_and_sends_its_page_nowhere(
    call_devices: CallDevices, synapse: Homeserver
) -> None:
    """The page's CSP lets it reach only the ``--sfu`` SFU: a call another member focused on
    another SFU fails to join with the reason (no media runs in the app's process instead)."""
    alice, cat, sfu = [await call_devices.new(n) for n in ("alice", "cat", "sfu")]
    room_id = await gm.group_room(sfu, alice, cat)
    async with running_sfu(synapse, sfu) as server:
        cats = sfu_member_session(call_devices, cat, room_id, server)
        await cats.session.join()
        app = CallApp(alice.transport, sfu_url="http://127.0.0.1:9")  # another SFU
        page = StandInSocket(1)
        try:
            await app.page_opened(page)  # type: ignore[arg-type]
            await app.page_request(page, p.Hello(id=0, e2ee=True))  # type: ignore[arg-type]
            with pytest.raises(PageError) as refused:
                await app.page_request(page, p.GroupJoin(id="j", room_id=room_id, video=True))  # type: ignore[arg-type]
            assert refused.value.message == "the SFU: sfu_not_allowed"
            assert not page.of("sfu_join")
            assert room_id not in app.group.calls
            assert page.of("group")[-1]["joined"] is False
            assert len(in_sfu_room(server, room_id)) == 1  # Cat alone
        finally:
            await app.close()

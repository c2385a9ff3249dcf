"""The page in an SFU call (docs/sfu-protocol.md; docs/web-protocol.md, "SFU group calls").

Two pages in Debian's Chromium, each against its own stub page server (tests/web_page_stub.py)
with the real SFrame worker, join a real :class:`SfuServer` with the join token the stub hands
them (``sfu_join``), as ``sealcall app`` does after admission. Each publishes audio, a thumbnail
and a full-resolution encoding, and its worker opens the other's forwarded frames with the key
of the member the SFU's ``tracks`` names; a page that holds the wrong key for a member opens
none of its frames. The page's CSP lets it reach the SFU it was given, and no other.
"""

import base64
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from browser import Browser, missing, until
from sealcall.sframe import CipherSuite
from sealcall.sfu.admission import Participant
from sealcall.sfu.server import SfuServer
from web_page_stub import StubPageServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOM = "!sfu:localhost"
SUITE = int(CipherSuite.AES_128_GCM_SHA256_128)


class TokenGate:
    """Admits the holders of tokens the test handed out (as admission's join tokens are)."""

    def __init__(self, on_disconnect: Any) -> None:
        self.tokens: dict[str, Participant] = {}

    def issue(self, user_id: str, device_id: str) -> str:
        token = secrets.token_urlsafe(16)
        self.tokens[token] = Participant(ROOM, user_id, device_id, "m1")
        return token

    def verify(self, join_token: object) -> Participant | None:
        return self.tokens.get(join_token) if isinstance(join_token, str) else None


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    if (reason := missing()) is not None:
        pytest.fail(reason)
    async with Browser.launched() as b:
        yield b


@pytest_asyncio.fixture(loop_scope="module")
async def sfu() -> AsyncIterator[SfuServer]:
    server = SfuServer(TokenGate, host="127.0.0.1", port=0)
    await server.start()
    yield server
    await server.close()


def me(name: str) -> dict[str, str]:
    return {"user_id": f"@{name}:localhost", "device_id": name.upper(), "display_name": name}


def sender(name: str) -> str:
    return f"@{name}:localhost {name.upper()}"


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


async def open_page(browser: Browser, name: str, sfu: SfuServer) -> tuple[StubPageServer, Any]:
    room = {"room_id": ROOM, "name": "Team", "kind": "group", "peer": None, "members": 2}
    stub = StubPageServer(
        me(name), [room], {}, real_worker=True, connect=(f"ws://127.0.0.1:{sfu.port}",)
    )
    await stub.start()
    page = await browser.page_on(stub.url)
    await until(page, "() => window.sealcall?.state().connected", what=f"{name}'s page socket")
    return stub, page


def group_snapshot(other: str) -> dict[str, Any]:
    user_id, device_id = sender(other).split(" ")
    return {
        "type": "group",
        "room_id": ROOM,
        "joined": True,
        "video": True,
        "audio_muted": False,
        "video_muted": False,
        "screensharing": False,
        "members": [
            {
                "user_id": user_id,
                "device_id": device_id,
                "sender": sender(other),
                "pair_id": None,
                "state": None,
                "audio_muted": False,
                "video_muted": False,
                "screensharing": False,
            }
        ],
    }


async def senders(page: Any) -> dict[str, Any]:
    stats = await page.evaluate("(room) => window.sealcall.stats(room)", ROOM)
    return dict((stats.get("worker") or {}).get("senders", {}))


async def decrypted(page: Any, who: str, kind: str) -> int:
    return int((await senders(page)).get(who, {}).get(kind, {}).get("decrypted", 0))


async def test_two_pages_publish_and_decrypt_each_other_through_the_sfu(
    browser: Browser, sfu: SfuServer
) -> None:
    gate = sfu.gate
    assert isinstance(gate, TokenGate)
    keys = {"ann": secrets.token_bytes(32), "bob": secrets.token_bytes(32)}
    pages: dict[str, tuple[StubPageServer, Any]] = {}
    try:
        for name, other in (("ann", "bob"), ("bob", "ann")):
            stub, _ = pages[name] = await open_page(browser, name, sfu)
            await stub.push(group_snapshot(other))
            # Bob's page holds a wrong key for Ann: none of her frames may open there.
            other_key = keys[other] if name == "ann" else secrets.token_bytes(32)
            await stub.push(
                {
                    "type": "group_keys",
                    "room_id": ROOM,
                    "suite": SUITE,
                    "send": {"kid": 0, "key": b64(keys[name])},
                    "receive": [{"sender": sender(other), "kid": 0, "key": b64(other_key)}],
                }
            )
            user_id, device_id = sender(name).split(" ")
            await stub.push(
                {
                    "type": "sfu_join",
                    "room_id": ROOM,
                    "url": f"http://127.0.0.1:{sfu.port}",
                    "token": gate.issue(user_id, device_id),
                    "video": True,
                    "speaking": True,
                }
            )
        for name, other in (("ann", "bob"), ("bob", "ann")):
            stub = pages[name][0]
            joined = await stub.wait_sent(lambda m: m["type"] == "sfu_joined", timeout=30)
            assert joined == {
                "type": "sfu_joined",
                "room_id": ROOM,
                "member": sender(name).replace(" ", "|"),
            }
            tracks = await stub.wait_sent(
                lambda m: m["type"] == "sfu_tracks" and len(m["tracks"]) == 2, timeout=30
            )
            assert sorted(t["kind"] for t in tracks["tracks"]) == ["audio", "video"]
            assert {t["member"] for t in tracks["tracks"]} == {sender(other).replace(" ", "|")}

        # Ann's page opens Bob's audio and video (both encodings went out; the SFU forwards one).
        ann = pages["ann"][1]
        for kind in ("audio", "video"):
            await until(
                ann,
                "([room, who, kind]) => window.sealcall.stats(room).then((s) =>"
                " (s.worker?.senders?.[who]?.[kind]?.decrypted ?? 0) >= 10)",
                [ROOM, sender("bob"), kind],
                what=f"Ann's page decrypting Bob's {kind}",
            )
        # Bob's page receives Ann's frames but cannot open one: its key for her is wrong.
        bob = pages["bob"][1]
        await until(
            bob,
            "(room) => window.sealcall.stats(room).then((s) =>"
            " (s.worker?.video?.received ?? 0) >= 10 && (s.worker?.audio?.received ?? 0) >= 10)",
            ROOM,
            what="Bob's page receiving Ann's frames",
        )
        stats = await bob.evaluate("(room) => window.sealcall.stats(room)", ROOM)
        assert stats["worker"]["decrypted"] == 0, stats["worker"]
        assert stats["worker"]["dropped"]["auth"] >= 10, stats["worker"]
        # Each page publishes audio, a thumbnail and a full resolution: three m-lines the SFU
        # receives on, each with its SSRC.
        for name in ("ann", "bob"):
            member = sfu.rooms[ROOM].members[sender(name).replace(" ", "|")]
            published = [
                (s.kind, bool(s.remote_ssrcs))
                for s in member.transport.sections
                if s.direction == "recvonly"
            ]
            assert published == [("audio", True), ("video", True), ("video", True)], published
        # Ann's tile for Bob shows his video (the forwarded tracks in a stream of their own).
        await ann.locator(
            f'[data-testid="member-tile"][data-sender="{sender("bob")}"] video'
        ).wait_for(timeout=30_000)
        assert await ann.evaluate(
            "() => [...document.querySelectorAll('[data-testid=member-tile] video')]"
            ".some((v) => v.srcObject && v.srcObject.getVideoTracks().length === 1"
            " && v.videoWidth > 0)"
        )

        # Bob's thumbnail reaches Ann's page (the SFU's default layer: about 180 lines or less).
        await until(
            ann,
            "([room, who]) => window.sealcall.stats(room).then((s) => {"
            " const h = s.sfu?.video?.[who]?.height ?? 0; return h > 0 && h <= 180; })",
            [ROOM, sender("bob")],
            what="Bob's thumbnail on Ann's page",
        )

        # Bob speaks (the fake microphone beeps): Ann's page shows him large and asks the SFU for
        # his full resolution (on the control channel; on the socket while this SFU rejects the
        # channel). The Python side asks for his thumbnail (sfu_subscribe): that wins over the
        # page's choice, also once Ann pins his tile.
        async def asked(wanted: dict[str, str]) -> None:
            await until(
                ann,
                "([room, wanted]) => window.sealcall.stats(room).then((s) =>"
                " JSON.stringify(s.sfu?.asked) === JSON.stringify(wanted))",
                [ROOM, wanted],
                what=f"Ann's page asking {wanted}",
            )

        bob_member = sender("bob").replace(" ", "|")
        await asked({bob_member: "full"})
        # And gets it, with no cap: Chromium's REMB, bound to 1.5x what it receives, never covers
        # a full layer on its own; the SFU ramps it through the clamp.
        await until(
            ann,
            "([room, who]) => window.sealcall.stats(room).then((s) =>"
            " s.sfu?.layers?.[who] === 'full')",
            [ROOM, bob_member],
            timeout=60,
            what="the SFU's layer message: Bob's full layer on Ann's page",
        )
        await pages["ann"][0].push(
            {
                "type": "sfu_subscribe",
                "room_id": ROOM,
                "publisher": sender("bob"),
                "quality": "thumbnail",
            }
        )
        await asked({bob_member: "thumbnail"})
        await ann.locator(f'[data-testid="member-tile"][data-sender="{sender("bob")}"]').click()
        await ann.locator('[data-testid="member-tile"][data-pinned="true"]').wait_for()
        await asked({bob_member: "thumbnail"})
        assert sfu.bad_messages == 0  # every message of both pages was one the SFU takes
    finally:
        for stub, _ in pages.values():
            await stub.close()
        await browser.close_pages()

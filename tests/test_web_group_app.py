"""CallApp's group calls over a real Synapse, with stand-in page sockets (no browser): a Python
member's call rings the page, which declines and then joins; the driving page alone gets the
pair's media commands and the group keys (ours, and the member's exactly as the member sends
with), a non-member's key never; every page gets the snapshots; the driver closing leaves the
call and the other page gets the group history item."""

import os
from typing import Any

import pytest

import test_group_membership_session as gm
from group_call_helpers import TIMEOUT, CallDevices, group_call
from sealcall.demo import wait_for
from sealcall.e2ee import GroupKey
from sealcall.signaling.key_events import ENCRYPTION_KEY_EVENT, EncryptionKeyContent
from sealcall.web import protocol as p
from sealcall.web.app import CallApp

pytestmark = pytest.mark.usefixtures("synapse")


class StandInSocket:
    """What CallApp uses of a page socket: its number and an ordered post."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.messages: list[dict[str, Any]] = []

    def post(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]


def b64(key: bytes) -> str:
    import base64

    return base64.b64encode(key).decode("ascii")


async def test_a_page_joins_a_rooms_call_gets_its_keys_and_media_and_leaves_with_its_page(
    call_devices: CallDevices,
) -> None:
    alice, bob, mallory = [await call_devices.new(n) for n in ("alice", "bob", "mallory")]
    room_id = await gm.group_room(alice, bob, mallory)
    app = CallApp(
        alice.transport,
        group_options={
            "leave_delay_ms": gm.DELAY_MS,
            "restart_ms": gm.RESTART_MS,
            "key_options": {"use_delay": 0.5, "early_ttl": 1.0, "young_key_age": 60.0},
        },
    )
    driver, watcher = StandInSocket(1), StandInSocket(2)
    try:
        for number, socket in enumerate((driver, watcher)):
            await app.page_opened(socket)  # type: ignore[arg-type]
            await app.page_request(socket, p.Hello(id=number, e2ee=True))  # type: ignore[arg-type]

        # Bob starts the room's call: it rings both pages; the driver declines, then joins.
        bobs = group_call(call_devices, bob, room_id, video=False)
        await bobs.join()
        await wait_for(lambda: watcher.of("group_ring"), TIMEOUT, "the ring")
        assert watcher.of("group_ring")[0] == {
            "type": "group_ring",
            "room_id": room_id,
            "sender": bob.user_id,
        }
        await app.page_request(driver, p.GroupDecline(id="d", room_id=room_id))  # type: ignore[arg-type]
        await wait_for(lambda: watcher.of("group_ring_ended"), TIMEOUT, "the ring ending")
        assert watcher.of("group_ring_ended")[0]["reason"] == "declined"
        await app.page_request(driver, p.GroupJoin(id="j", room_id=room_id, video=False))  # type: ignore[arg-type]

        bob_sender = f"{bob.user_id} {bob.transport.device_id}"
        ours = app.group.calls[room_id].session

        def received_keys() -> dict[tuple[str, int], str]:
            return {
                (entry["sender"], entry["kid"]): entry["key"]
                for m in driver.of("group_keys")
                for entry in m["receive"]
            }

        # Our key goes to the driver as we start to use it; bob's as bob sends with it.
        assert bobs.keys is not None
        assert bobs.keys.send_key is not None
        bob_key = bobs.keys.send_key
        await wait_for(lambda: (bob_sender, bob_key.index) in received_keys(), TIMEOUT, "bob's key")
        assert received_keys()[(bob_sender, bob_key.index)] == b64(bob_key.key)
        await wait_for(lambda: any(m["send"] for m in driver.of("group_keys")), TIMEOUT, "our key")
        assert ours.keys is not None
        assert ours.keys.send_key is not None
        sent = [m["send"] for m in driver.of("group_keys") if m["send"]]
        assert sent[-1] == {"kid": ours.keys.send_key.index, "key": b64(ours.keys.send_key.key)}

        # The pair with bob: its media work goes to the driver, addressed by pair and sender.
        await wait_for(
            lambda: any(m.get("sender") == bob_sender for m in driver.of("media")),
            TIMEOUT,
            "the pair's media commands",
        )
        media = [m for m in driver.of("media") if m.get("sender") == bob_sender]
        assert media[0]["op"] in ("create_offer", "create_answer")
        assert media[0]["room_id"] == room_id
        assert media[0]["pair_id"] in ours.pairs
        await wait_for(
            lambda: any(
                m["joined"] and [x["sender"] for x in m["members"]] == [bob_sender]
                for m in watcher.of("group")
            ),
            TIMEOUT,
            "bob in the snapshot",
        )

        # Mallory, in the room but not in the call, sends us a key over Olm: refused, and
        # nothing of it reaches the page.
        assert ours.keys is not None
        forged = GroupKey(9, os.urandom(32))
        content = EncryptionKeyContent(room_id, ours.keys.member_id, forged).to_dict()
        await mallory.transport.send_to_device(
            alice.user_id, alice.transport.device_id, ENCRYPTION_KEY_EVENT, content
        )
        await wait_for(lambda: ours.keys.counters["not_member"] >= 1, TIMEOUT, "the refusal")
        assert all(
            sender != f"{mallory.user_id} {mallory.transport.device_id}"
            for sender, _ in received_keys()
        )
        assert b64(forged.key) not in received_keys().values()

        await app.page_request(driver, p.GroupMute(id="m", room_id=room_id, audio=True))  # type: ignore[arg-type]
        await wait_for(
            lambda: watcher.of("group")[-1]["audio_muted"] is True, TIMEOUT, "our mute shown"
        )

        # Keys and media commands went to the driving page only.
        assert not watcher.of("group_keys")
        assert not watcher.of("media")

        # The driving page goes away: we leave the call; the other page is told, with the
        # call's history item.
        await app.page_closed(driver)  # type: ignore[arg-type]
        assert room_id not in app.group.calls
        await wait_for(lambda: watcher.of("history_item"), TIMEOUT, "the history item")
        assert watcher.of("group")[-1] == {
            "type": "group",
            "room_id": room_id,
            "joined": False,
            "video": False,
            "audio_muted": False,
            "video_muted": False,
            "screensharing": False,
            "sfu": False,
            "members": [],
        }
        item = watcher.of("history_item")[0]
        assert item["room_id"] == room_id
        assert item["item"]["group"] is True
        assert item["item"]["direction"] == "incoming"
        assert item["item"]["outcome"] == "answered"
        await wait_for(lambda: not bobs.members(), TIMEOUT, "bob seeing us leave")
    finally:
        await app.close()

"""Hostile room members over a real Synapse: a too-deep event is dropped alone, nio's logs carry no
event content, and a barrage of hostile events leaves no lasting weight on the heap."""

import asyncio
import gc
import logging
import secrets
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from matrix_helpers import MatrixDevice, device, dm
from sealcall.demo import wait_for
from sealcall.homeserver import Homeserver
from sealcall.transport import RoomEvent
from sealcall.transport.matrix import MatrixTransport

pytestmark = pytest.mark.usefixtures("synapse")

HOSTILE = "Z" * 40_000


def call_ids(seen: list[RoomEvent]) -> list[str]:
    return [str(e.event["content"].get("call_id")) for e in seen]


async def transport_only(d: MatrixDevice, listener: Callable[[RoomEvent], None]) -> None:
    """Replace the device's VoIP by a bare listener (only the transport is under test)."""
    await d.voip.close(hang_up=False)
    d.transport.add_listener(listener)


async def reopen(d: MatrixDevice, listener: Callable[[RoomEvent], None]) -> MatrixTransport:
    """Start the device's transport again from its store, with ``listener``."""
    saved = MatrixTransport.saved_credentials(d.store)
    assert saved is not None
    d.transport = MatrixTransport.from_credentials(saved, d.store)
    d.transport.add_listener(listener)
    await d.transport.start()
    return d.transport


async def send_deep(sender: MatrixDevice, room: str, call_id: str, depth: int = 5000) -> None:
    """An encrypted call event whose plaintext nests ``depth`` levels (Synapse sees ciphertext).

    The sender has shared its room key already (it sent an event before).
    """
    nested: Any = 1
    for _ in range(depth):
        nested = {"x": nested}
    content = {"call_id": call_id, "party_id": "x", "version": "1", "d": nested}
    limit = sys.getrecursionlimit()
    # The sender's JSON encoder must get through it; raised only while encrypting, as the
    # receiving device runs in this same process.
    sys.setrecursionlimit(depth * 4)
    try:
        event_type, encrypted = sender.transport.client.encrypt(room, "m.call.hangup", content)
    finally:
        sys.setrecursionlimit(limit)
    await send_raw(sender, room, event_type, encrypted)


async def send_raw(sender: MatrixDevice, room: str, event_type: str, content: Any) -> None:
    """Send an event as it is, unencrypted, past the transport."""
    client = sender.transport.client
    path = f"/_matrix/client/v3/rooms/{room}/send/{event_type}/{secrets.token_hex(8)}"
    url = f"{client.homeserver}{path}"
    headers = {"Authorization": f"Bearer {client.access_token}"}
    async with aiohttp.ClientSession() as http, http.put(url, json=content, headers=headers) as r:
        assert r.status == 200, await r.text()


def hangup(call_id: str, **extra: Any) -> dict[str, Any]:
    return {"call_id": call_id, "party_id": "x", "version": "1", **extra}


async def test_a_too_deep_event_is_dropped_alone(synapse: Homeserver, tmp_path: Path) -> None:
    alice = await device(synapse, tmp_path, "alice")
    bob = await device(synapse, tmp_path, "bob")
    try:
        room = await dm(alice, bob)
        earlier: list[RoomEvent] = []
        await transport_only(bob, earlier.append)
        await alice.transport.send_room_event(room, "m.call.hangup", hangup("before"))
        await wait_for(lambda: "before" in call_ids(earlier), 15, "the first event")
        await bob.transport.stop()
        # Both arrive in Bob's next sync: the deep one first.
        await send_deep(alice, room, "deep")
        await alice.transport.send_room_event(room, "m.call.hangup", hangup("after"))
        seen: list[RoomEvent] = []
        transport = await reopen(bob, seen.append)
        await wait_for(lambda: "after" in call_ids(seen), 15, "the event after the deep one")
        assert call_ids(seen) == ["after"]
        assert transport.malformed == 1
    finally:
        await alice.stop()
        await bob.stop()


async def test_logs_carry_no_hostile_content(
    synapse: Homeserver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # The CLI quiets nio's logger; a CLI test run in this process before must not hide its records.
    caplog.set_level(logging.INFO, logger="nio")
    alice = await device(synapse, tmp_path, "alice")
    bob = await device(synapse, tmp_path, "bob")
    try:
        room = await dm(alice, bob)
        seen: list[RoomEvent] = []
        await transport_only(bob, seen.append)
        # An encrypted invite that fails nio's schema on a 40 KB field (offer must be an object)...
        invalid = {"call_id": "c", "version": 1, "lifetime": 60000, "offer": HOSTILE}
        await alice.transport.send_room_event(room, "m.call.invite", invalid)
        # ... a plaintext call event in the encrypted room (a type that test_matrix_calls does not
        # look for in Synapse's database), and a deep one.
        await send_raw(alice, room, "m.call.reject", hangup("plain", junk=HOSTILE))
        await send_deep(alice, room, "deep")
        await alice.transport.send_room_event(room, "m.call.hangup", hangup("last"))
        await wait_for(lambda: "last" in call_ids(seen), 15, "the last event")
        messages = [record.getMessage() for record in caplog.records]
        for message in messages:
            assert "ZZZZZZZZ" not in message
            assert "\n" not in message
            assert len(message) < 500
        assert any("schema validation" in m for m in messages)
        assert bob.transport.dropped_plaintext == 1
        assert bob.transport.malformed == 1
    finally:
        await alice.stop()
        await bob.stop()


async def test_heap_returns_after_a_barrage_of_hostile_events(
    synapse: Homeserver, tmp_path: Path
) -> None:
    alice = await device(synapse, tmp_path, "alice")
    bob = await device(synapse, tmp_path, "bob")
    try:
        room = await dm(alice, bob)
        seen: list[RoomEvent] = []
        await transport_only(bob, seen.append)
        await alice.transport.send_room_event(room, "m.call.hangup", hangup("first"))
        await wait_for(lambda: "first" in call_ids(seen), 15, "the first event")
        # Alice stops syncing (her keys and token stay usable): only Bob's device takes the
        # barrage, as one device per process would.
        await alice.stop()
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            undecryptable = 200  # 60 KB each, with sessions nobody has the key for
            for start in range(0, undecryptable, 20):
                await asyncio.gather(
                    *(
                        send_raw(
                            alice,
                            room,
                            "m.room.encrypted",
                            {
                                "algorithm": "m.megolm.v1.aes-sha2",
                                "ciphertext": "A" * 60_000,
                                "device_id": "EVIL",
                                "sender_key": secrets.token_hex(16),
                                "session_id": secrets.token_hex(16),
                            },
                        )
                        for _ in range(start, start + 20)
                    )
                )
            for i in range(20):
                await send_raw(alice, room, "m.call.reject", hangup(f"plain-{i}", junk=HOSTILE))
            for i in range(5):
                await send_deep(alice, room, f"deep-{i}")
            await send_raw(
                alice, room, *alice.transport.client.encrypt(room, "m.call.hangup", hangup("last"))
            )
            await wait_for(lambda: "last" in call_ids(seen), 60, "the last event")
            await wait_for(
                lambda: bob.transport.undecryptable >= undecryptable, 30, "every hostile event"
            )
            assert bob.transport.dropped_plaintext == 20
            assert bob.transport.malformed == 5
            assert call_ids(seen) == ["first", "last"]
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert grown < 10 * 1024 * 1024, f"heap grew by {grown / 1e6:.1f} MB"
    finally:
        await alice.stop()
        await bob.stop()

"""The Matrix transport's rules, without a homeserver: never plaintext, undecryptable events kept,
TURN servers from the homeserver."""

import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from nio import EncryptionError, Event, MatrixRoom, MegolmEvent

from sealcall.homeserver import free_port
from sealcall.transport import RoomEvent
from sealcall.transport.matrix import (
    Credentials,
    MatrixTransport,
    UnencryptedRoomError,
)
from sealcall.transport.matrix.guard import DeepEventGuard, NoContentFilter

INVITE = {
    "type": "m.call.invite",
    "sender": "@alice:x",
    "event_id": "$1",
    "origin_server_ts": 1,
    "content": {
        "call_id": "c",
        "party_id": "p",
        "version": "1",
        "lifetime": 1000,
        "offer": {"type": "offer", "sdp": "v=0"},
    },
}
ENCRYPTED = {
    "type": "m.room.encrypted",
    "sender": "@alice:x",
    "event_id": "$2",
    "origin_server_ts": 1,
    "content": {
        "algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": "AAAA",
        "device_id": "D",
        "sender_key": "k",
        "session_id": "s",
    },
}


def transport(
    tmp_path: Path, url: str = "http://127.0.0.1:9"
) -> tuple[MatrixTransport, list[RoomEvent]]:
    t = MatrixTransport.from_credentials(Credentials(url, "@bob:x", "BOBDEVICE", "token"), tmp_path)
    got: list[RoomEvent] = []
    t.add_listener(got.append)
    return t, got


def room(encrypted: bool) -> MatrixRoom:
    r = MatrixRoom("!dm:x", "@bob:x")
    r.encrypted = encrypted
    return r


async def test_plaintext_call_event_in_encrypted_room_is_dropped(tmp_path: Path) -> None:
    t, got = transport(tmp_path)
    try:
        t._on_event(room(encrypted=True), Event.parse_event(INVITE))
        assert got == []
        assert t.dropped_plaintext == 1
        decrypted = Event.parse_event(INVITE)
        decrypted.decrypted = True
        t._on_event(room(encrypted=True), decrypted)
        assert [e.event["type"] for e in got] == ["m.call.invite"]
        assert got[0].sender == "@alice:x"
    finally:
        await t.client.close()


async def test_undecryptable_event_is_kept_not_delivered(tmp_path: Path) -> None:
    t, got = transport(tmp_path)
    try:
        t._on_event(room(encrypted=True), Event.parse_event(ENCRYPTED))
        assert got == []
        assert t.undecryptable == 1
        assert len(t.keys.pending) == 1
    finally:
        t.keys.cancel_requests()
        await t.client.close()


async def test_call_events_are_never_sent_to_an_unencrypted_room(tmp_path: Path) -> None:
    t, _ = transport(tmp_path)
    try:
        t.client.rooms["!dm:x"] = room(encrypted=False)
        with pytest.raises(UnencryptedRoomError):
            await t.send_room_event("!dm:x", "m.call.invite", INVITE["content"])
    finally:
        await t.client.close()


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            200,
            {
                "uris": ["turn:127.0.0.1:3478?transport=udp"],
                "username": "u",
                "password": "p",
                "ttl": 60,
            },
            [(["turn:127.0.0.1:3478?transport=udp"], "u", "p")],
        ),
        (200, {}, []),
        (404, {"errcode": "M_NOT_FOUND"}, []),
    ],
)
async def test_ice_servers_come_from_the_homeserver(
    tmp_path: Path, status: int, body: dict[str, Any], expected: list[Any]
) -> None:
    async def turn(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer token"
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get("/_matrix/client/v3/voip/turnServer", turn)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    t, _ = transport(tmp_path, f"http://127.0.0.1:{port}")
    try:
        servers = await t.ice_servers()
        assert [(s.urls, s.username, s.credential) for s in servers] == expected
    finally:
        await t.client.close()
        await runner.cleanup()


async def test_hostile_event_fields_do_not_break_the_sync(tmp_path: Path) -> None:
    t, got = transport(tmp_path)
    try:
        weird = Event.parse_event(INVITE)
        weird.source = {**INVITE, "unsigned": "not an object", "origin_server_ts": "x"}
        weird.decrypted = True
        t._on_event(room(encrypted=True), weird)
        assert [e.event["type"] for e in got] == ["m.call.invite"]
        assert got[0].age_ms >= 0

        class Broken:
            source = None

        t._on_event(room(encrypted=True), Broken())  # type: ignore[arg-type]
        assert t.malformed == 1
    finally:
        await t.client.close()


async def test_undecryptable_events_and_key_requests_are_bounded(tmp_path: Path) -> None:
    t, got = transport(tmp_path)
    try:
        for i in range(300):
            content = {**ENCRYPTED["content"], "session_id": f"s{i}", "ciphertext": "A" * 60_000}
            event = Event.parse_event({**ENCRYPTED, "event_id": f"${i}", "content": content})
            t._on_event(room(encrypted=True), event)
        assert got == []
        assert t.undecryptable == 300
        kept = [event.source["content"]["session_id"] for _, event in t.keys.pending]
        assert 0 < len(kept) * 60_000 <= 4 * 1024 * 1024  # the documented bound
        assert kept[-1] == "s299"  # the newest are kept
        assert len(t.keys.requests) <= 64
    finally:
        t.keys.cancel_requests()
        await t.client.close()


def test_nio_log_records_carry_no_event_content() -> None:
    record = logging.LogRecord(
        "nio.events.misc",
        logging.WARNING,
        "x",
        1,
        "Error validating event: %s",
        ("Z" * 40_000,),
        None,
    )
    assert NoContentFilter().filter(record)
    assert "Z" not in record.getMessage()
    long = logging.LogRecord("nio.x", logging.WARNING, "x", 1, "a\nb" + "Y" * 5000, None, None)
    NoContentFilter().filter(long)
    assert "\n" not in long.getMessage()
    assert len(long.getMessage()) < 200


def test_a_too_deep_event_is_dropped_by_the_guard_alone() -> None:
    class Olm:
        def decrypt_megolm_event(self, event: Any, room_id: str | None = None) -> Any:
            raise RecursionError

        def handle_to_device_event(self, event: Any) -> Any:
            raise RecursionError

    drops: list[None] = []
    guard = DeepEventGuard(lambda: drops.append(None))
    olm = Olm()
    guard.install(olm)
    guard.install(olm)  # once only
    event = Event.parse_event(ENCRYPTED)
    assert isinstance(event, MegolmEvent)
    with pytest.raises(EncryptionError):  # nio's "could not decrypt": the sync goes on
        olm.decrypt_megolm_event(event)
    assert guard.was_dropped(event)
    assert olm.handle_to_device_event(object()) is None
    assert len(drops) == 2

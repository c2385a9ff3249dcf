"""The SFU server with its real admission over a real Synapse: POST /admit, then the WebSocket."""

import asyncio
import secrets
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

import test_group_membership_session as gm
from sealcall.demo import wait_for
from sealcall.group.member_event import member_state_key
from sealcall.homeserver import Homeserver, free_port
from sealcall.sfu.admission_service import AdmissionGate
from sealcall.sfu.server import SfuServer
from sealcall.transport.matrix import CALL_MEMBER
from test_sfu_admission_session import SFU_URL, join_call, request
from test_sfu_server import Client

pytestmark = pytest.mark.usefixtures("synapse")
TIMEOUT = 20


async def test_a_member_joins_with_its_admission_and_is_dropped_when_it_ends(
    devices: gm.Devices, synapse: Homeserver
) -> None:
    alice, bob, sfu = [await devices.new(n) for n in ("alice", "bob", "sfu")]
    room_id = await gm.group_room(sfu, alice, bob)
    await join_call(alice, room_id)
    gate = AdmissionGate(sfu.transport, homeserver_url=synapse.url, sfu_url=SFU_URL)
    server = SfuServer(gate)
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    client = Client("alice")
    async with aiohttp.ClientSession() as session:
        try:
            # Bob is in the room but not in the call: refused, no token.
            response = await session.post(
                f"{base}/admit", json=(await request(bob, room_id)).to_json()
            )
            assert response.status == 403, await response.text()
            assert (await response.json()) == {"error": "not_member"}
            response = await session.post(f"{base}/admit", json={"user_id": 5})
            assert response.status == 400
            response = await session.post(
                f"{base}/admit", json=(await request(alice, room_id)).to_json()
            )
            assert response.status == 200
            token = (await response.json())["join_token"]
            await client.connect(session, f"{base}/ws", token)
            assert client.member == f"{alice.user_id}|{alice.transport.device_id}"
            await wait_for(lambda: room_id in server.rooms, TIMEOUT, "the join")
            room = server.rooms[room_id]
            assert list(room.members) == [client.member]
            # Alice's call membership ends: the SFU drops her connection.
            key = member_state_key(alice.user_id, alice.transport.device_id)
            await alice.transport.send_state_event(room_id, CALL_MEMBER, key, {})
            await wait_for(lambda: room_id not in server.rooms, TIMEOUT, "the disconnect")
            await wait_for(
                lambda: any(m.get("reason") == "admission_ended" for m in client.messages),
                TIMEOUT,
                "the notice",
            )
        finally:
            await client.close()
            await server.close()
            await gate.close()


async def test_the_sfu_command_serves_and_stops(synapse: Homeserver, tmp_path: Path) -> None:
    account = await synapse.register(f"sfu{secrets.token_hex(4)}")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sealcall",
        "sfu",
        "--port",
        str(port),
        "--homeserver",
        synapse.url,
        "--user",
        account.user_id,
        "--password",
        account.password,
        "--store",
        str(tmp_path / "store"),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert f"serving on http://127.0.0.1:{port}" in line.decode()
        async with aiohttp.ClientSession() as session:
            response = await session.post(f"http://127.0.0.1:{port}/admit", json={"x": 1})
            assert response.status == 400
            assert await response.json() == {"error": "bad_request"}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0

"""``sealcall group --sfu URL --no-speaking`` as a real process in a call through the real SFU
(real admission over the session's Synapse) with a library member: its media reaches the other
member through the SFU, decrypted there, and the SFU gets no audio level from it."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import test_group_membership_session as gm
from group_call_helpers import TIMEOUT, CallDevices
from sealcall.demo import wait_for
from sealcall.group import MemberDevice
from sealcall.homeserver import Homeserver
from sealcall.sfu.room import participant_config
from sfu_call_helpers import running_sfu, sfu_member_session, sfu_url

pytestmark = pytest.mark.usefixtures("synapse")

CLI = [sys.executable, "-m", "sealcall"]


def test_a_bad_sfu_url_is_refused_before_login(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "group", "!room:x", "--sfu", "ftp://sfu", "--homeserver", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SEALCALL_USER": "@a:x", "SEALCALL_PASSWORD": "p"},
    )
    assert result.returncode == 2
    assert "--sfu must be http(s)://" in result.stderr


async def test_the_cli_joins_through_the_sfu_without_audio_levels(
    call_devices: CallDevices, synapse: Homeserver, tmp_path: Path
) -> None:
    alice, sfu = await call_devices.new("alice"), await call_devices.new("sfu")
    name = f"cli{uuid.uuid4().hex[:8]}"
    account = await synapse.register(name, "secret-" + name)
    room_id = await gm.group_room(sfu, alice)
    await alice.transport.client.room_invite(room_id, account.user_id)
    async with running_sfu(synapse, sfu) as server:
        watched = sfu_member_session(call_devices, alice, room_id, server)
        await watched.session.join()
        log = tmp_path / "cli.log"
        command = [
            *CLI,
            "group",
            room_id,
            "--video",
            "--sfu",
            sfu_url(server),
            "--no-speaking",
            "--duration",
            "60",
            "--homeserver",
            synapse.url,
            "--user",
            account.user_id,
            "--store",
            str(tmp_path / name),
            "--loopback",
        ]
        env = {**os.environ, "SEALCALL_PASSWORD": account.password}
        with log.open("w") as out:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            await wait_for(lambda: room_id in server.rooms, TIMEOUT, "the room at the SFU")
            room = server.rooms[room_id]

            def cli_device() -> MemberDevice | None:
                for m in watched.session.members():
                    if m.device.user_id == account.user_id:
                        return m.device
                return None

            await wait_for(lambda: cli_device() is not None, TIMEOUT, "the CLI's membership")
            device = cli_device()
            assert device is not None
            await wait_for(
                lambda: all(watched.decrypted(device, k) >= 10 for k in ("audio", "video")),
                90,
                "alice decrypting the CLI's audio and video through the SFU",
            )
            cli_member = f"{device.user_id}|{device.device_id}"
            assert cli_member in room.members
            assert participant_config(room.members[cli_member].transport).audio_level_id is None
            assert watched.session.pairs == {}  # nothing peer to peer
        except BaseException:
            print(log.read_text())
            raise
        finally:
            process.terminate()
            process.wait(30)

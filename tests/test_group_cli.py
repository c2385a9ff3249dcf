"""``sealcall group`` as a real process in a group call with two library members over a real
Synapse: it connects to both; killed with SIGKILL it vanishes from their view (its delayed
leave) and their connections to it close; started again it rejoins as a new session whose
pairs replace the old ones, with no ghost left behind."""

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import test_group_membership_session as gm
from group_call_helpers import CallDevices, group_call
from sealcall.calls import CallState
from sealcall.demo import wait_for
from sealcall.homeserver import Homeserver

pytestmark = pytest.mark.usefixtures("synapse")

CLI = [sys.executable, "-m", "sealcall"]
VANISH_SECONDS = 20  # the bound: the CLI's leave is scheduled 8 s ahead


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)


async def test_killed_member_vanishes_and_its_rejoin_replaces_its_pairs(
    call_devices: CallDevices, synapse: Homeserver, tmp_path: Path, processes: list[Any]
) -> None:
    a, b = await call_devices.new("kim"), await call_devices.new("lee")
    name = f"cli{uuid.uuid4().hex[:8]}"
    account = await synapse.register(name, "secret-" + name)
    room_id = await gm.group_room(a, b)
    await a.transport.client.room_invite(room_id, account.user_id)
    sessions = [group_call(call_devices, d, room_id, video=False) for d in (a, b)]
    for session in sessions:
        await session.join()
    command = [
        *CLI,
        "group",
        room_id,
        "--homeserver",
        synapse.url,
        "--user",
        account.user_id,
        "--store",
        str(tmp_path / name),
        "--loopback",
    ]
    env = {**os.environ, "SEALCALL_PASSWORD": account.password}

    log = tmp_path / "cli.log"

    def start() -> None:
        with log.open("a") as out:
            processes.append(
                subprocess.Popen(command, env=env, text=True, stdout=out, stderr=subprocess.STDOUT)
            )

    def cli_members(session: Any) -> list[Any]:
        return [m for m in session.members() if m.device.user_id == account.user_id]

    def connected_to_cli(session: Any) -> bool:
        found = cli_members(session)
        return len(found) == 1 and session.peer_state(found[0].device) is CallState.CONNECTED

    start()
    try:
        await wait_for(lambda: all(connected_to_cli(s) for s in sessions), 90, "the CLI member")
    finally:
        print(log.read_text())  # shown when the test fails
    old = cli_members(sessions[0])[0]
    old_calls = {s.peer_sessions()[old.device].call_id for s in sessions}
    old_pcs = [s.peer_sessions()[old.device].pc for s in sessions]

    processes[0].send_signal(signal.SIGKILL)
    processes[0].wait(10)
    await wait_for(
        lambda: all(not cli_members(s) and s.peer_state(old.device) is None for s in sessions),
        VANISH_SECONDS,
        "the killed member gone from everyone's view",
    )
    assert all(pc is not None and pc.connectionState == "closed" for pc in old_pcs)

    start()  # the same store: the same device, a new membership
    await wait_for(lambda: all(connected_to_cli(s) for s in sessions), 90, "the rejoined member")
    new = cli_members(sessions[0])[0]
    assert new.device == old.device
    assert new.member_id != old.member_id
    for s in sessions:
        assert s.peer_sessions()[new.device].call_id not in old_calls
        assert set(s.pairs) == {p.call_id for p in s.peer_sessions().values()}  # no ghost
        assert len(s.pairs) == 2

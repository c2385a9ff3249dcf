"""Homeserver outages mid-call, over a dedicated real Synapse (stopped and started again here,
so not the shared session one): media goes on peer to peer, the sync loops come back by
themselves, call events sent while it is down arrive once it is back."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from matrix_helpers import MatrixDevice, device, dm, ringing
from sealcall.calls import CallPolicy, Outcome
from sealcall.demo import wait_for
from sealcall.homeserver import Homeserver, free_port
from sealcall.session import CallSession
from sealcall.transport.matrix import Credentials, MatrixTransport
from sealcall.transport.matrix.login import RETRY_WAIT_CAP

OUTAGE = 20.0  # seconds, as the issue asks


@pytest.fixture(scope="module")
def homeserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Homeserver]:
    """A Synapse of this module's own: its tests stop it."""
    server = Homeserver(tmp_path_factory.mktemp("outage-synapse"))
    asyncio.run(server.start())
    yield server
    asyncio.run(server.stop())


async def test_retries_against_an_absent_homeserver_wait_a_bounded_time(tmp_path: Path) -> None:
    # nio's own cap is 60 s: a client would come back up to a minute after its homeserver.
    away = Credentials(f"http://127.0.0.1:{free_port()}", "@a:localhost", "DEV", "token")
    transport = MatrixTransport.from_credentials(away, tmp_path / "store")
    try:
        waits = [await transport.client.get_timeout_retry_wait_time(n) for n in range(1, 40)]
    finally:
        await transport.client.close()
    assert max(waits) == RETRY_WAIT_CAP <= 5


async def connected_video_call(
    server: Homeserver, tmp_path: Path, policy: CallPolicy | None = None
) -> tuple[MatrixDevice, MatrixDevice, CallSession, CallSession]:
    alice = await device(server, tmp_path, "alice", policy)
    bob = await device(server, tmp_path, "bob", policy)
    room = await dm(alice, bob)
    call = await alice.voip.place_call(room, bob.user_id, video=True)
    incoming = await ringing(bob)
    await incoming.answer()
    await wait_for(lambda: call.state.value == incoming.state.value == "connected", 20, "connected")
    for d in (alice, bob):
        await wait_for(lambda d=d: (call.call_id, "video") in d.counters, 10, "video")
        await wait_for(lambda d=d: d.counters[(call.call_id, "video")].frames > 5, 10, "frames")
    return alice, bob, call, incoming


def frames(d: MatrixDevice, call_id: str) -> int:
    return sum(d.counters[(call_id, kind)].frames for kind in ("audio", "video"))


async def test_call_outlives_a_homeserver_outage_and_hangs_up_after_it(
    homeserver: Homeserver, tmp_path: Path
) -> None:
    alice, bob, call, incoming = await connected_video_call(homeserver, tmp_path)
    sync_tasks = [d.transport._sync_task for d in (alice, bob)]
    try:
        port = homeserver.port
        await homeserver.stop()
        back_at = asyncio.get_running_loop().time() + OUTAGE
        down_at = {d.user_id: frames(d, call.call_id) for d in (alice, bob)}
        # Media keeps flowing both ways, peer to peer, while the homeserver is away.
        for d in (alice, bob):
            await wait_for(
                lambda d=d: frames(d, call.call_id) > down_at[d.user_id] + 100, 15, "media"
            )
        await asyncio.sleep(back_at - asyncio.get_running_loop().time())
        assert call.state.value == incoming.state.value == "connected"
        await homeserver.start()
        assert homeserver.port == port
        # Both sync loops are back by themselves (the same tasks): an event each side sends
        # now reaches the other.
        await incoming.set_microphone_muted(True)
        await wait_for(
            lambda: alice.events["remote_mute_changed"][-1:] == [(call, True, False)],
            15,
            "bob's mute after the restart",
        )
        await call.hangup()
        await wait_for(lambda: incoming.state.value == "ended", 15, "alice's hang-up")
        assert [d.transport._sync_task for d in (alice, bob)] == sync_tasks
        assert not any(task is None or task.done() for task in sync_tasks)
        assert alice.events["call_ended"][-1][1:] == ("user_hangup", False)
        assert bob.events["call_ended"][-1][1:] == ("user_hangup", True)
        for d in (alice, bob):
            items = [item[0] for item in d.events["history_item"]]
            assert [(i.call_id, i.outcome) for i in items] == [(call.call_id, Outcome.ANSWERED)]
    finally:
        await alice.stop()
        await bob.stop()

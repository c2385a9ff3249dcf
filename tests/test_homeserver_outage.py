"""Homeserver outages mid-call, over a dedicated real Synapse (stopped and started again here,
so not the shared session one): media goes on peer to peer, the sync loops come back by
themselves, call events sent while it is down arrive once it is back."""

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from matrix_helpers import MatrixDevice, device, dm, ringing
from sealcall.calls import CallPolicy, Outcome
from sealcall.calls.room_history import calls_from_timeline
from sealcall.demo import wait_for
from sealcall.homeserver import Homeserver, free_port
from sealcall.session import CallSession
from sealcall.transport.matrix import Credentials, MatrixTransport
from sealcall.transport.matrix.login import RETRY_WAIT_CAP

OUTAGE = 20.0  # seconds, as the issue asks
CLI = [sys.executable, "-m", "sealcall"]


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


async def ended(d: MatrixDevice, what: str, timeout: float = 15) -> tuple[str, bool]:
    """Wait until the application heard of the call's end (and got its history item); the
    reason and whether the far side ended it."""
    await wait_for(lambda: bool(d.events["call_ended"] and d.events["history_item"]), timeout, what)
    reason, by_remote = d.events["call_ended"][-1][1:]
    return reason, by_remote


def policy(**deadlines: float) -> CallPolicy:
    """A policy with these ICE deadlines (a TypeError on a field CallPolicy does not have, so a
    renamed deadline cannot silently fall back to its default)."""
    return CallPolicy(**deadlines)  # type: ignore[arg-type]


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
        try:
            back_at = asyncio.get_running_loop().time() + OUTAGE
            down_at = {d.user_id: frames(d, call.call_id) for d in (alice, bob)}
            # Media keeps flowing both ways, peer to peer, while the homeserver is away.
            for d in (alice, bob):
                await wait_for(
                    lambda d=d: frames(d, call.call_id) > down_at[d.user_id] + 100, 15, "media"
                )
            await asyncio.sleep(back_at - asyncio.get_running_loop().time())
            assert call.state.value == incoming.state.value == "connected"
        finally:
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
        assert await ended(bob, "alice's hang-up") == ("user_hangup", True)
        assert await ended(alice, "the local end") == ("user_hangup", False)
        assert call.state.value == incoming.state.value == "ended"
        assert [d.transport._sync_task for d in (alice, bob)] == sync_tasks
        assert not any(task is None or task.done() for task in sync_tasks)
        for d in (alice, bob):
            items = [item[0] for item in d.events["history_item"]]
            assert [(i.call_id, i.outcome) for i in items] == [(call.call_id, Outcome.ANSWERED)]
    finally:
        await alice.stop()
        await bob.stop()


async def test_mute_and_hang_up_while_the_homeserver_is_down_reach_the_far_side_after(
    homeserver: Homeserver, tmp_path: Path
) -> None:
    # Bob waits longer for a closed connection than the homeserver takes to come back.
    patient = policy(ice_restart_timeout=60, reconnect_timeout=60)
    alice, bob, call, incoming = await connected_video_call(homeserver, tmp_path, patient)
    try:
        alice.voip.send_timeout = 1.0
        await homeserver.stop()
        try:
            # Each takes effect here at once and returns without the homeserver (before, each
            # waited for it to come back): the call has ended, media released, history written.
            await asyncio.wait_for(call.set_microphone_muted(True), 10)
            await asyncio.wait_for(call.hangup(), 10)
            assert await ended(alice, "the local end", 5) == ("user_hangup", False)
            assert [i[0].outcome for i in alice.events["history_item"]] == [Outcome.ANSWERED]
            assert bob.events["call_ended"] == []
        finally:
            await homeserver.start()
        # Both were kept and go out, in order, once the homeserver is back.
        assert await ended(bob, "the hang-up, late") == ("user_hangup", True)
        assert bob.events["remote_mute_changed"][-1:] == [(incoming, True, False)]
        assert [i[0].outcome for i in bob.events["history_item"]] == [Outcome.ANSWERED]
    finally:
        await alice.stop()
        await bob.stop()


def short_ice_policy() -> CallPolicy:
    """Give up on a dead path soon: no ICE restart, short deadlines."""
    return policy(ice_restart_attempts=0, ice_restart_timeout=2.0, reconnect_timeout=2.0)


async def test_killed_client_the_other_side_ends_by_ice_timeout_and_histories_agree(
    homeserver: Homeserver, tmp_path: Path
) -> None:
    alice = await device(homeserver, tmp_path, "alice", short_ice_policy())
    bob = await device(homeserver, tmp_path, "bob")
    room = await dm(alice, bob)
    await bob.stop()
    # Bob's device now runs as a user runs it, in its own process, from the same store.
    with (tmp_path / "bob.log").open("wb") as log:  # read on failure; a pipe could fill up
        answering = subprocess.Popen(
            [*CLI, "answer", "--auto", "--timeout", "60", "--store", str(bob.store), "--loopback"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        call = await alice.voip.place_call(room, bob.user_id, video=True)
        await wait_for(lambda: call.state.value == "connected", 30, "bob's process answers")
        await wait_for(lambda: (call.call_id, "video") in alice.counters, 10, "video")
        await wait_for(lambda: alice.counters[(call.call_id, "video")].frames > 5, 10, "frames")
        answering.kill()  # kill -9: no hang-up, no goodbye of any kind
        answering.wait()
        assert await ended(alice, "the end of a dead call", 60) == ("ice_timeout", False)
        [mine] = [item[0] for item in alice.events["history_item"]]
        assert (mine.call_id, mine.end_reason) == (call.call_id, "ice_timeout")
        # Bob's device comes back (same account, device and store). It never rings for the
        # dead call and holds no call but the next one, which rings as usual.
        await bob.restart()
        second = await alice.voip.place_call(room, bob.user_id)
        await ringing(bob)
        assert [ring[0].call_id for ring in bob.events["incoming_call"]] == [second.call_id]
        assert [c.call_id for c in bob.voip.manager.active_calls()] == [second.call_id]
        await second.hangup()
        # Both rooms' records of the dead call: answered, ended by Alice's ice_timeout.
        for d, direction in ((bob, "incoming"), (alice, "outgoing")):
            timeline = await d.transport.timeline(room)
            entry = calls_from_timeline(timeline, d.user_id, d.transport.room_members(room))[0]
            assert (entry.call_id, entry.outcome, entry.end_reason, entry.direction.value) == (
                call.call_id,
                Outcome.ANSWERED,
                "ice_timeout",
                direction,
            )
            assert entry.duration > 0
    finally:
        answering.kill()
        await alice.stop()
        await bob.stop()


async def test_hang_up_and_quit_while_the_homeserver_is_down(
    homeserver: Homeserver, tmp_path: Path
) -> None:
    alice, bob, call, _ = await connected_video_call(homeserver, tmp_path)
    try:
        alice.voip.send_timeout = 0.5
        await homeserver.stop()
        try:
            # The user hangs up and quits: neither waits for long for a homeserver that may not
            # return (before, both waited until it answered again).
            await asyncio.wait_for(call.hangup(), 10)
            assert call.state.value == "ended"
            await asyncio.wait_for(alice.voip.close(), 10)
            # The hang-up never left: Bob's side ends when Alice's media is gone (ice_timeout,
            # as for a killed client above).
        finally:
            await homeserver.start()
    finally:
        await alice.stop()
        await bob.stop()

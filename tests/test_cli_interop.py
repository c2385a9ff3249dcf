"""Calls with a peer that cannot encrypt frames (an Element-family client): refused with a
reject that says why, or taken by the user's explicit decision and then reported truthfully;
and `sealcall answer` taking a waiting call once the current one ends.

The Element-like peer is a sealcall device whose call events lose ``org.sealcall.e2ee`` on the
way in and out, exactly as an app without sealcall's frame encryption sends and reads them.
"""

import asyncio
import contextlib
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from matrix_helpers import MatrixDevice, device, without_frame_encryption
from sealcall.calls import (
    ENCRYPTION_REQUIRED,
    CallError,
    CallPolicy,
    Outcome,
    UnencryptedCallError,
)
from sealcall.demo import wait_for
from sealcall.homeserver import Homeserver
from sealcall.media.stats import StatsCollector
from sealcall.transport import InMemoryHub
from sealcall.transport.matrix import MatrixTransportError
from voip_helpers import ROOM, Device, eventually

CLI = [sys.executable, "-m", "sealcall"]


async def test_unencrypted_call_counts_plaintext_frames_apart() -> None:
    # Issue 8, item 10: frames of an opted-in unencrypted call are never counted as encrypted.
    hub = InMemoryHub(latency=0.01)
    element = Device(hub, "@element:local", "ELEMENT", CallPolicy(allow_unencrypted=True))
    without_frame_encryption(element.voip.transport)
    bob = Device(hub, "@bob:local", "BOB", CallPolicy(ask_unencrypted=True))
    try:
        call = await element.voip.place_call(ROOM, "@bob:local")
        await eventually(lambda: bool(bob.events["incoming_call"]))
        incoming = bob.events["incoming_call"][0][0]
        assert not incoming.encrypted
        with pytest.raises(UnencryptedCallError):
            await incoming.answer()
        await incoming.answer(allow_unencrypted=True)
        await eventually(lambda: call.state.value == incoming.state.value == "connected")
        await eventually(lambda: (call.call_id, "m.usermedia/audio") in bob.counters)
        await eventually(lambda: bob.counter(call.call_id, "audio").frames > 30, timeout=5)
        for session in (call, incoming):
            assert session.pc is not None
            stats = await StatsCollector(session.pc).collect()
            assert not stats.encrypted
            assert sum(s.frames_unencrypted for s in stats.outbound) > 0
            assert sum(s.frames_unencrypted for s in stats.inbound) > 0
            assert sum(s.frames_encrypted for s in stats.outbound) == 0
            assert sum(s.frames_decrypted for s in stats.inbound) == 0
        await call.hangup()
        await eventually(lambda: bool(bob.events["history_item"]))
        await eventually(lambda: bool(element.events["history_item"]))
        items = [d.events["history_item"][0][0] for d in (element, bob)]
        assert [(i.outcome, i.encrypted) for i in items] == [(Outcome.ANSWERED, False)] * 2
    finally:
        await element.close()
        await bob.close()


def cli(*args: str) -> list[str]:
    return [*CLI, *args]


async def run_cli(
    args: list[str], stdin: bytes = b"", timeout: float = 120
) -> tuple[int, str, str]:
    env = {**os.environ}
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def account(synapse: Homeserver, name: str) -> tuple[str, str]:
    username = f"{name}{uuid.uuid4().hex[:6]}"
    registered = await synapse.register(username, "pw-" + username)
    return registered.user_id, registered.password


async def call_from_element(caller: MatrixDevice, callee: str) -> str:
    """Create a DM with ``callee``, wait for it to join, place a call; return the room."""
    room = await caller.transport.create_dm(callee)
    await wait_for(lambda: callee in caller.transport.room_members(room), 60, "the callee")
    await caller.transport.wait_for_member_devices(room)
    await caller.voip.place_call(room, callee)
    return room


@pytest.mark.usefixtures("synapse")
async def test_answer_auto_refuses_an_unencrypted_call_at_once_with_a_reject(
    synapse: Homeserver, tmp_path: Path
) -> None:
    # Items 6 and 8 over the real stack: `answer --auto` refuses an Element-style call with
    # m.call.reject (keeping our reason), says how to opt in, and exits without waiting.
    element = await device(synapse, tmp_path, "element", CallPolicy(allow_unencrypted=True))
    without_frame_encryption(element.transport)
    seen: list[dict[str, Any]] = []
    element.transport.add_listener(lambda e: seen.append(e.event))
    bob, password = await account(synapse, "bob")
    common = ["--homeserver", synapse.url, "--loopback", "--store", str(tmp_path / "bob")]
    try:
        answer = asyncio.ensure_future(
            run_cli(
                cli("answer", "--auto", "--timeout", "100", "--user", bob, "--password", password)
                + common
            )
        )
        room = await call_from_element(element, bob)
        code, out, err = await answer
        assert code == 1, (out, err[-2000:])
        assert "refused a call from" in out
        assert "--allow-unencrypted" in out
        assert "hop by hop" in out
        assert "no call came" not in err  # it did not wait for its timeout
        await wait_for(lambda: bool(element.events["history_item"]), 20, "the refusal")
        item = element.events["history_item"][0][0]
        assert (item.outcome, item.end_reason) == (Outcome.FAILED, ENCRYPTION_REQUIRED)
        rejects = [e for e in seen if e.get("type") == "m.call.reject"]
        assert rejects
        assert rejects[0]["content"]["org.sealcall.reason"] == ENCRYPTION_REQUIRED
        assert not [e for e in seen if e.get("type") == "m.call.hangup"]
        listing = await run_cli(cli("history", room) + common[:2] + common[3:])
        assert f"-> {bob}  voice  failed" in listing[1], listing
    finally:
        await element.stop()


@pytest.mark.usefixtures("synapse")
async def test_answer_asks_about_an_unencrypted_call_and_reports_it_truthfully(
    synapse: Homeserver, tmp_path: Path
) -> None:
    element = await device(synapse, tmp_path, "element", CallPolicy(allow_unencrypted=True))
    without_frame_encryption(element.transport)
    bob, password = await account(synapse, "bob")
    args = cli(
        "answer",
        "--duration",
        "2",
        "--timeout",
        "100",
        "--user",
        bob,
        "--password",
        password,
        "--homeserver",
        synapse.url,
        "--loopback",
        "--store",
        str(tmp_path / "bob"),
    )
    try:
        answer = asyncio.ensure_future(run_cli(args, stdin=b"y\n"))
        await call_from_element(element, bob)
        code, out, err = await answer
        assert code == 0, (out, err[-2000:])
        assert "cannot be encrypted end to end" in out
        assert "hop by hop" in out
        assert "answer without end-to-end encryption? [y/N]" in out
        assert "media: NOT end-to-end encrypted" in out
        await wait_for(lambda: bool(element.events["history_item"]), 20, "the hang-up")
        item = element.events["history_item"][0][0]
        assert (item.outcome, item.encrypted) == (Outcome.ANSWERED, False)
    finally:
        await element.stop()


@pytest.mark.usefixtures("synapse")
async def test_call_refuses_an_unencrypted_answer_and_says_how_to_opt_in(
    synapse: Homeserver, tmp_path: Path
) -> None:
    element = await device(synapse, tmp_path, "element", CallPolicy(allow_unencrypted=True))
    without_frame_encryption(element.transport)
    alice, password = await account(synapse, "alice")
    store = ["--store", str(tmp_path / "alice"), "--homeserver", synapse.url]
    args = cli("call", element.user_id, "--duration", "1", "--ring-timeout", "60", "--loopback")

    async def keep_answering() -> None:
        """Join the DM when invited and answer every call that rings."""
        answered: set[str] = set()
        while True:
            for room_id in element.transport.invites():
                with contextlib.suppress(MatrixTransportError):
                    await element.transport.join(room_id)
            for (session,) in list(element.events["incoming_call"]):
                if session.call_id not in answered:
                    answered.add(session.call_id)
                    with contextlib.suppress(CallError):
                        await session.answer()
            await asyncio.sleep(0.2)

    try:
        answering = asyncio.ensure_future(keep_answering())
        code, out, err = await run_cli([*args, "--user", alice, "--password", password, *store])
        assert code == 1, (out, err[-2000:])
        assert "--allow-unencrypted" in err
        assert "cannot encrypt media end to end" in err
        room = next(line.split()[-1] for line in out.splitlines() if line.startswith("room "))
        # The refused call was answered on the wire and then refused: not "answered 0m00s".
        code, listing, _ = await run_cli(cli("history", room, *store))
        assert f"{alice} -> {element.user_id}  voice  failed" in listing, listing

        code, out, err = await run_cli([*args, "--allow-unencrypted", "--room", room, *store])
        assert code == 0, (out, err[-2000:])
        assert "media: NOT end-to-end encrypted" in out
        await wait_for(lambda: len(element.events["history_item"]) == 2, 20, "both ends")
        first, second = (item for (item,) in element.events["history_item"])
        assert (first.outcome, first.end_reason) == (Outcome.FAILED, ENCRYPTION_REQUIRED)
        assert (second.outcome, second.encrypted) == (Outcome.ANSWERED, False)
    finally:
        answering.cancel()
        await element.stop()


@pytest.mark.usefixtures("synapse")
async def test_answer_auto_takes_the_waiting_call_after_the_current_one(
    synapse: Homeserver, tmp_path: Path
) -> None:
    alice = await device(synapse, tmp_path, "alice")
    carol = await device(synapse, tmp_path, "carol")
    bob, password = await account(synapse, "bob")
    args = cli(
        "answer",
        "--auto",
        "--duration",
        "4",
        "--timeout",
        "100",
        "--user",
        bob,
        "--password",
        password,
        "--homeserver",
        synapse.url,
        "--loopback",
        "--store",
        str(tmp_path / "bob"),
    )
    try:
        answer = asyncio.ensure_future(run_cli(args))
        await call_from_element(alice, bob)
        first = alice.voip.manager.active_calls()[0]
        await wait_for(lambda: first.state.value == "connected", 30, "the first call")
        await call_from_element(carol, bob)  # rings as call waiting
        code, out, err = await answer
        assert code == 0, (out, err[-2000:])
        assert out.count("incoming voice call from") == 2
        for caller in (alice, carol):
            await wait_for(lambda c=caller: bool(c.events["history_item"]), 20, "the end")
        outcomes = [d.events["history_item"][0][0].outcome for d in (alice, carol)]
        assert outcomes == [Outcome.ANSWERED, Outcome.ANSWERED]
    finally:
        await alice.stop()
        await carol.stop()

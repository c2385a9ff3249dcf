"""Relay-only calls: only TURN relay candidates leave; without TURN the call fails clearly.

coturn (the ``turn_synapse`` fixture) listens on 127.0.0.1 and relays from 127.0.0.2, and the
clients' host candidates are held to 127.0.0.1: any 127.0.0.1 a side receives is a host address
of the other's, any 127.0.0.2 is the relay.
"""

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCSessionDescription
from hypothesis import given
from hypothesis import strategies as st

import matrix_helpers as mh
from sealcall.calls import CallPolicy, RelayUnavailableError
from sealcall.calls.relay_only import relay_only_candidates, relay_only_sdp
from sealcall.homeserver import Homeserver
from sealcall.media import LOOPBACK, PeerConnection
from sealcall.signaling import Candidate
from voip_helpers import eventually

from conftest import TURN_RELAY_IP

RELAY_ONLY = CallPolicy(relay_only=True)
HOST_LINE = "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"
SRFLX_LINE = "candidate:2 1 udp 1694498815 198.51.100.7 6000 typ srflx raddr 127.0.0.1 rport 5000"
RELAY_LINE = "candidate:3 1 udp 16777215 127.0.0.2 7000 typ relay raddr 198.51.100.7 rport 6000"


def offered_addresses(text: str) -> list[str]:
    """The candidate types and every 127.0.0.x (or test) address in ``text``."""
    return re.findall(r"typ \w+|127\.0\.0\.\d+|198\.51\.100\.\d+", text)


async def host_sdp() -> str:
    """A real aiortc offer with host candidates on 127.0.0.1 (ICE policy ``all``)."""
    pc = PeerConnection(host_addresses=LOOPBACK)
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def test_sdp_filter_keeps_relay_candidates_only_and_hides_other_addresses() -> None:
    sdp = await host_sdp()
    assert "typ host" in sdp
    assert "127.0.0.1" in sdp
    # A server-reflexive and a relay candidate beside the host ones, as a browser gives them.
    lines = sdp.split("\r\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("a=candidate:"))
    lines[at:at] = ["a=" + SRFLX_LINE, "a=" + RELAY_LINE]
    filtered = relay_only_sdp("\r\n".join(lines))
    assert "typ host" not in filtered
    assert "127.0.0.1" not in filtered
    assert "198.51.100.7" not in filtered
    assert "127.0.0.2 7000 typ relay raddr 0.0.0.0 rport 9" in filtered
    # Still a description aiortc takes (the other side must be able to use it).
    pc = PeerConnection()
    await pc.setRemoteDescription(RTCSessionDescription(filtered, "offer"))
    await pc.close()


def test_candidate_filter_drops_host_and_srflx_and_keeps_the_end_marker() -> None:
    kept = relay_only_candidates(
        (
            Candidate(candidate=HOST_LINE.removeprefix("a="), sdp_mid="0", sdp_mline_index=0),
            Candidate(candidate=SRFLX_LINE, sdp_mid="0", sdp_mline_index=0),
            Candidate(candidate=RELAY_LINE, sdp_mid="0", sdp_mline_index=0),
            Candidate(candidate="garbage without a type", sdp_mid="0", sdp_mline_index=0),
            Candidate(candidate="", sdp_mid="0", sdp_mline_index=0),
        )
    )
    assert [c.candidate for c in kept] == [
        "candidate:3 1 udp 16777215 127.0.0.2 7000 typ relay raddr 0.0.0.0 rport 9",
        "",
    ]


@pytest.mark.parametrize("end", ["\n", "\r", "\r\n"])
def test_sdp_filter_reads_any_line_end_and_writes_crlf(end: str) -> None:
    head = ["v=0", "o=- 1 1 IN IP4 10.0.0.5", "m=audio 5000 RTP/AVP 0", "c=IN IP4 10.0.0.5"]
    sdp = end.join([*head, HOST_LINE, "a=" + RELAY_LINE, "c=IN IP6 fd00::5", ""])
    filtered = relay_only_sdp(sdp)
    assert "typ host" not in filtered
    assert "10.0.0.5" not in filtered
    assert "fd00::5" not in filtered
    assert filtered.split("\r\n") == filtered.splitlines()
    assert "c=IN IP6 ::" in filtered.split("\r\n")  # not the malformed "IN IP6 0.0.0.0"
    assert "a=candidate:3 1 udp 16777215 127.0.0.2 7000 typ relay raddr 0.0.0.0 rport 9" in filtered


@pytest.mark.parametrize(
    "line",
    [
        "a=candidate:x typ relay",
        "a=candidate:1 1 udp 1 127.0.0.2 typ relay",
        "a=candidate:1 1 udp 1 127.0.0.2 7000 host relay",
        "a=candidate:1 1 udp x 127.0.0.2 7000 typ relay",
        "a=candidate:1 1 udp 1 not-an-address 7000 typ relay",
        "a=candidate:1 1 udp 1 127.0.0.2 7000 typ relay raddr 10.0.0.5 rport x",
    ],
)
def test_sdp_filter_drops_unreadable_relay_candidates(line: str) -> None:
    assert relay_only_sdp(f"v=0\r\n{line}\r\nc=IN IP4 10.0.0.5") == "v=0\r\nc=IN IP4 0.0.0.0"
    unreadable = Candidate(candidate=line.removeprefix("a="), sdp_mid="0", sdp_mline_index=0)
    assert relay_only_candidates((unreadable,)) == ()


SDP_PIECES = ["a=candidate:", " typ ", "relay", "host", " raddr ", "127.0.0.1", "\r\n", "c=IN IP4 "]
SDP_PIECES += ["o=- 1 1 IN IP4 ", "a=rtcp:", "m=audio 5 x", "9", " ", "\n", "\r", "c=IN IP6 "]
SDP_PIECES += ["a=candidate:x typ relay", "a=candidate:1 1 udp 1 127.0.0.2 7 typ relay", "fd00::1"]


@given(st.lists(st.sampled_from(SDP_PIECES) | st.text(max_size=5), max_size=40).map("".join))
def test_sdp_filter_never_raises_and_leaves_no_other_candidate(text: str) -> None:
    filtered = relay_only_sdp(text)
    lines = filtered.splitlines()  # however a receiver splits it, it reads the same lines
    assert filtered.split("\r\n") == lines or filtered.split("\r\n") == [*lines, ""]
    relays = {"0.0.0.0", "::"}
    for line in lines:
        if line.startswith("a=candidate"):
            words = line.split()
            assert len(words) >= 8
            assert words[6:8] == ["typ", "relay"]
            relays.add(words[4])
    for line in lines:
        if line.startswith(("c=", "o=", "a=rtcp:")):
            assert line.split()[-1] in relays  # no address but a relay's


def local_types(session: Any) -> tuple[str, set[str]]:
    """Our candidate's type in the nominated ICE pair of ``session``'s connection, and the types
    of all the candidates it gathered."""
    connection = session.pc.getTransceivers()[0].sender.transport.transport._connection
    [pair] = connection._nominated.values()
    return str(pair.local_candidate.type), {c.type for c in connection.local_candidates}


def call_texts(device: mh.MatrixDevice, sender: str) -> list[str]:
    return [str(e) for e in device.events["received"] if e[0] == sender]


async def record_received(device: mh.MatrixDevice) -> None:
    def listener(room_event: Any) -> None:
        if str(room_event.event.get("type", "")).startswith("m.call."):
            device.events["received"].append((room_event.sender, room_event.event))

    device.transport.add_listener(listener)


async def test_relay_only_call_connects_through_turn_and_never_names_a_host(
    turn_synapse: Homeserver, tmp_path: Path
) -> None:
    alice = await mh.device(turn_synapse, tmp_path, "ra", RELAY_ONLY, ask_turn=True)
    bob = await mh.device(turn_synapse, tmp_path, "rb", RELAY_ONLY, ask_turn=True)
    try:
        for d in (alice, bob):
            await record_received(d)
        room = await mh.dm(alice, bob)
        placed = await alice.voip.place_call(room, bob.user_id)
        incoming = await mh.ringing(bob)
        await incoming.answer()
        await eventually(
            lambda: placed.state.value == incoming.state.value == "connected", timeout=30
        )
        # ICE gathered relay candidates only (no packet of ours left from a host address).
        assert local_types(placed) == ("relay", {"relay"})
        assert local_types(incoming) == ("relay", {"relay"})
        for receiver, sender in ((bob, alice), (alice, bob)):
            seen = offered_addresses(" ".join(call_texts(receiver, sender.user_id)))
            assert "typ relay" in seen
            assert TURN_RELAY_IP in seen
            assert set(seen) <= {"typ relay", TURN_RELAY_IP}, seen
        await placed.hangup()
    finally:
        await alice.stop()
        await bob.stop()


async def test_turn_is_used_for_ordinary_calls_too(
    turn_synapse: Homeserver, tmp_path: Path
) -> None:
    # Without relay-only the clients still ask for TURN and offer a relay candidate beside
    # their host one.
    alice = await mh.device(turn_synapse, tmp_path, "ta", ask_turn=True)
    bob = await mh.device(turn_synapse, tmp_path, "tb", ask_turn=True)
    try:
        await record_received(bob)
        room = await mh.dm(alice, bob)
        placed = await alice.voip.place_call(room, bob.user_id)
        incoming = await mh.ringing(bob)
        await incoming.answer()
        await eventually(
            lambda: placed.state.value == incoming.state.value == "connected", timeout=30
        )
        seen = set(offered_addresses(" ".join(call_texts(bob, alice.user_id))))
        assert {"typ host", "typ relay", "127.0.0.1", TURN_RELAY_IP} <= seen
        await placed.hangup()
    finally:
        await alice.stop()
        await bob.stop()


async def test_relay_only_without_turn_fails_clearly_and_never_goes_direct(
    synapse: Homeserver, tmp_path: Path
) -> None:
    alice = await mh.device(synapse, tmp_path, "na", RELAY_ONLY, ask_turn=True)
    bob = await mh.device(synapse, tmp_path, "nb", RELAY_ONLY, ask_turn=True)
    plain = await mh.device(synapse, tmp_path, "np")
    try:
        room = await mh.dm(alice, bob)
        with pytest.raises(RelayUnavailableError, match="no TURN server"):
            await alice.voip.place_call(room, bob.user_id)
        assert alice.voip.sessions == {}
        # Called by someone else, a relay-only device cannot answer: the call ends for both.
        room2 = await mh.dm(plain, bob)
        placed = await plain.voip.place_call(room2, bob.user_id)
        incoming = await mh.ringing(bob)
        with pytest.raises(RelayUnavailableError):
            await incoming.answer()
        await eventually(lambda: placed.state.value == incoming.state.value == "ended")
        assert incoming.call.end_reason == "ice_failed"
        assert placed.call.end_reason == "ice_failed"
    finally:
        await asyncio.gather(alice.stop(), bob.stop(), plain.stop())


def test_page_commands_ask_the_browser_for_relay_candidates_only() -> None:
    from sealcall.calls import actions as act
    from sealcall.web.media_commands import media_command

    offer = act.CreateOffer(video=False)
    assert media_command(offer, relay_only=True)["relay_only"] is True  # type: ignore[index]
    assert "relay_only" not in (media_command(offer) or {})


@pytest.mark.parametrize("command", ["call", "answer"])
async def test_cli_relay_only_without_turn_exits_with_the_reason(
    synapse: Homeserver, tmp_path: Path, command: str
) -> None:
    import subprocess
    import sys

    account = await synapse.register(f"cli{command}{uuid.uuid4().hex[:6]}", "pw")
    target = ["@nobody:localhost"] if command == "call" else ["--auto"]
    login = ["--homeserver", synapse.url, "--user", account.user_id, "--password", "pw"]
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "sealcall",
            command,
            *target,
            "--relay-only",
            *login,
            "--store",
            str(tmp_path / "store"),
            "--timeout" if command == "answer" else "--duration",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "no TURN server is offered" in result.stderr


async def test_relay_only_group_mesh_connects_through_turn_and_names_no_host(
    turn_synapse: Homeserver, tmp_path: Path
) -> None:
    import test_group_membership_session as gm
    from group_call_helpers import TIMEOUT, CallDevices, group_call

    devices = CallDevices(turn_synapse, tmp_path)
    devices.sessions = []
    received: list[str] = []
    try:
        members = [await devices.new(name) for name in ("gra", "grb")]
        room_id = await gm.group_room(members[0], members[1])
        sessions = []
        fetches: list[list[str]] = []
        for d in members:
            d.transport.add_to_device_listener(lambda message: received.append(str(message)))
            asked: list[str] = []

            async def source(d: mh.MatrixDevice = d, asked: list[str] = asked) -> Any:
                asked.append(d.transport.user_id)  # each new pair asks for fresh credentials
                return await d.transport.ice_servers()

            fetches.append(asked)
            ice = await d.transport.ice_servers()  # at join; the pair asks again
            options = {"ice_servers": ice, "ice_source": source, "relay_only": True}
            sessions.append(group_call(devices, d, room_id, **options))
        await asyncio.gather(*(s.join() for s in sessions))
        await eventually(lambda: all(len(s.connected_peers()) == 1 for s in sessions), TIMEOUT)
        for s in sessions:
            [pair] = s.peer_sessions().values()
            assert local_types(pair) == ("relay", {"relay"})
        assert [len(asked) for asked in fetches] == [1, 1]
        seen = offered_addresses(" ".join(received))
        assert "typ relay" in seen
        assert set(seen) <= {"typ relay", TURN_RELAY_IP}, seen
        # Without TURN a relay-only member does not join.
        lone = group_call(devices, members[0], room_id, relay_only=True)
        with pytest.raises(RelayUnavailableError):
            await lone.join()
    finally:
        for session in devices.sessions:
            await session.close(leave=False)
        for d in devices.started:
            await d.transport.stop()


async def test_relay_only_refuses_an_sfu_another_member_named_and_sends_it_nothing(
    synapse: Homeserver, tmp_path: Path
) -> None:
    """Any member can name the room's SFU, and the SFU link is not relayed: relay-only, only
    the user's own ``sfu_url`` is used; a foreign one gets not a single request."""
    from aiohttp import web
    from aiortc import RTCIceServer

    import test_group_membership_session as gm
    from group_call_helpers import CallDevices, group_call
    from sealcall.calls.relay_only import RELAY_FOREIGN_SFU
    from sealcall.homeserver import free_port

    requests: list[str] = []

    async def count(request: web.Request) -> web.Response:
        requests.append(request.path)
        return web.Response(status=503)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", count)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    foreign = f"http://127.0.0.1:{port}"
    turn = [RTCIceServer(urls="turn:127.0.0.1:9", username="u", credential="c")]
    devices = CallDevices(synapse, tmp_path)
    devices.sessions = []
    try:
        mallory, us = [await devices.new(name) for name in ("mal", "rel")]
        room_id = await gm.group_room(mallory, us)
        await mallory.membership(room_id, sfu_url=foreign).join()
        session = group_call(devices, us, room_id, ice_servers=turn, relay_only=True)
        with pytest.raises(RelayUnavailableError) as refused:
            await session.join()
        assert str(refused.value) == RELAY_FOREIGN_SFU
        assert requests == []
        # The same SFU when the user configured it is used (its refusal here is not ours).
        own = group_call(devices, us, room_id, ice_servers=turn, relay_only=True, sfu_url=foreign)
        with pytest.raises(Exception) as failed:  # noqa: PT011 - any error but the relay refusal
            await own.join()
        assert not isinstance(failed.value, RelayUnavailableError)
        assert requests != []
    finally:
        for session in devices.sessions:
            await session.close(leave=False)
        for d in devices.started:
            if d.group is not None:
                await d.group.close(leave=True)
            await d.transport.stop()
        await runner.cleanup()

"""Issue 11, must-show 3, over the real stack: a non-member's join is refused; a member whose call
membership ends is disconnected and receives no further packet.

The real ``sealcall sfu`` process with its real AdmissionService over a real Synapse; members
publish SFrame-encrypted media; what reaches a member is counted where its connection decrypts
SRTP (every RTP packet the SFU sent it).
"""

import base64
import json
from pathlib import Path

import aiohttp
import pytest

import test_group_membership_session as gm
from sealcall.demo import wait_for
from sealcall.e2ee import GroupKey
from sealcall.group.member_event import member_state_key
from sealcall.homeserver import Homeserver, free_port
from sealcall.sfu.admission_service import AdmissionGate
from sealcall.sfu.join_token import JoinTokens
from sealcall.sfu.server import SfuServer
from sealcall.transport.matrix import CALL_MEMBER
from sfu_e2ee import TIMEOUT, SfuMember, SfuProcess, SfuRefusedError
from test_sfu_admission_session import join_call, request

pytestmark = pytest.mark.usefixtures("synapse")


def other_room(token: str, room_id: str) -> str:
    """``token`` with its claims moved to ``room_id``, its MAC kept."""
    body, _, mac = token.partition(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims[2] = room_id
    moved = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode())
    return moved.rstrip(b"=").decode() + "." + mac


def forged(token: str) -> str:
    body, _, mac = token.partition(".")
    return body + "." + ("A" if mac[0] != "A" else "B") + mac[1:]


async def refused(member: SfuMember, session: aiohttp.ClientSession, url: str, token: str) -> str:
    """The reason the SFU gives for refusing ``member``'s WebSocket join with ``token``."""
    with pytest.raises(SfuRefusedError) as error:
        await member.connect(session, url, token)
    await member.close()
    return error.value.reason


async def test_a_non_member_is_refused_and_a_leaver_gets_no_further_packet(
    devices: gm.Devices, synapse: Homeserver, tmp_path: Path
) -> None:
    account = await devices.new("sfu")
    sfu = await SfuProcess.start(synapse, account, tmp_path)
    directory: dict[str, GroupKey] = {}
    members: list[SfuMember] = []
    try:
        a, b, c, dave = [await devices.new(n) for n in ("alice", "bob", "carol", "dave")]
        room_id = await gm.group_room(account, a, b, c, dave)
        for d in (a, b, c):  # dave is in the room, not in the call
            await join_call(d, room_id, url=sfu.url)
        other_id = await gm.group_room(account, name="elsewhere")
        alice, bob, carol = (SfuMember(d, directory) for d in (a, b, c))
        members += [alice, bob, carol]
        async with aiohttp.ClientSession() as session:
            # A non-member gets no join token, and no token of its own making gets it in.
            intruder = SfuMember(dave, directory)
            with pytest.raises(SfuRefusedError) as no_token:
                await intruder.admit(session, sfu.url, room_id)
            assert no_token.value.reason == "not_member"
            outsider = await devices.new("eve")  # not even in the room
            with pytest.raises(SfuRefusedError) as no_token:
                await SfuMember(outsider, directory).admit(session, sfu.url, room_id)
            assert no_token.value.reason == "not_member"
            # Someone naming alice without her OpenID token.
            body = (await request(dave, room_id)).to_json()
            body["user_id"] = a.user_id
            response = await session.post(f"{sfu.url}/admit", json=body)
            assert (response.status, await response.json()) == (403, {"error": "bad_token"})
            token = await alice.admit(session, sfu.url, room_id)
            for bad, reason in (
                ("x.y", "malformed"),
                (forged(token), "forged"),
                (other_room(token, other_id), "forged"),
            ):
                got = await refused(SfuMember(dave, directory), session, sfu.url, bad)
                assert got == f"join token refused: {reason}"

            for m in members:
                await m.join(session, sfu.url, room_id)
            pairs = [(x, y) for x in members for y in members if x is not y]
            await wait_for(
                lambda: all(x.decrypted(y.member, "video") >= 10 for x, y in pairs),
                TIMEOUT,
                "everyone decrypting everyone's video",
            )
            assert not [x for x in members if intruder.member in {m for m, _ in x.tracks.values()}]

            # Carol's membership ends: the SFU disconnects her at once.
            key = member_state_key(c.user_id, c.transport.device_id)
            await c.transport.send_state_event(room_id, CALL_MEMBER, key, {})
            await wait_for(
                lambda: {"type": "error", "reason": "admission_ended"} in carol.messages,
                TIMEOUT,
                "carol's disconnect",
            )
            assert carol.packets_from(alice.member) > 0
            assert carol.packets_from(bob.member) > 0

            survivors = ((alice, bob), (bob, alice))

            async def others_get_more() -> None:
                base = {(x.member, y.member): x.packets_from(y.member) for x, y in survivors}
                await wait_for(
                    lambda: all(
                        x.packets_from(y.member) > base[(x.member, y.member)] + 100
                        for x, y in survivors
                    ),
                    TIMEOUT,
                    "alice and bob receiving each other",
                )

            # Alice and Bob go on publishing and receiving; nothing more reaches Carol (packets
            # already in flight at the notice may land: the count is taken once they have), and
            # nothing of hers reaches them.
            await others_get_more()
            after = len(carol.rtp_in)
            from_carol = [x.packets_from(carol.member) for x in (alice, bob)]
            await others_get_more()
            assert len(carol.rtp_in) == after
            assert [x.packets_from(carol.member) for x in (alice, bob)] == from_carol
            await wait_for(lambda: carol.ws is not None and carol.ws.closed, TIMEOUT, "closed")
            await wait_for(
                lambda: carol.pc.connectionState in ("closed", "failed"),
                TIMEOUT,
                "carol's connection ended by the SFU",
            )
            await wait_for(
                lambda: all(
                    {"type": "left", "member": carol.member} in x.messages for x in (alice, bob)
                ),
                TIMEOUT,
                "the others told that carol left",
            )
            # Her old join token admits nobody now, and she gets no new one.
            assert await refused(SfuMember(c, directory), session, sfu.url, carol.join_token) == (
                "refused"
            )
            with pytest.raises(SfuRefusedError) as gone:
                await SfuMember(c, directory).admit(session, sfu.url, room_id)
            assert gone.value.reason == "not_member"
    finally:
        for m in members:
            await m.close()
        await sfu.stop()


async def test_an_expired_join_token_is_refused_at_the_websocket(
    devices: gm.Devices, synapse: Homeserver
) -> None:
    account, alice_device = await devices.new("sfu"), await devices.new("alice")
    room_id = await gm.group_room(account, alice_device)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gate = AdmissionGate(
        account.transport,
        homeserver_url=synapse.url,
        sfu_url=url,
        tokens=JoinTokens(lifetime_ms=1),  # expired by the time it is used
    )
    server = SfuServer(gate, port=port)
    await server.start()
    await join_call(alice_device, room_id, url=url)
    alice = SfuMember(alice_device, {})
    try:
        async with aiohttp.ClientSession() as session:
            token = await alice.admit(session, url, room_id)
            assert await refused(alice, session, url, token) == "join token refused: expired"
            assert room_id not in server.rooms
    finally:
        await alice.close()
        await server.close()
        await gate.close()

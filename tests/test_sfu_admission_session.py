"""SFU admission over a real Synapse: OpenID tokens resolved by the homeserver's userinfo, the
device's membership read by the SFU's own account in the room, join tokens, and disconnects
when a membership ends (leave, expiry)."""

import time
from typing import Any

import pytest

import test_group_membership_session as gm
from sealcall.demo import wait_for
from sealcall.group.focus import sfu_member
from sealcall.group.member_event import member_state_key, mesh_member
from sealcall.homeserver import Homeserver
from sealcall.sfu.admission import Admitted, JoinRequest, Participant, Refusal, Refused
from sealcall.sfu.admission_service import AdmissionService
from sealcall.sfu.join_token import JoinTokenError, JoinTokenRefusal
from sealcall.transport.matrix import CALL_MEMBER, OpenIdToken

pytestmark = pytest.mark.usefixtures("synapse")

SFU_URL = "https://sfu.test:8443"
TIMEOUT = 20


class Sfu:
    def __init__(self, device: gm.Device, server: Homeserver) -> None:
        self.device = device
        self.disconnected: list[Participant] = []
        self.service = AdmissionService(
            device.transport,
            homeserver_url=server.url,
            sfu_url=SFU_URL,
            on_disconnect=self.disconnected.append,
        )


async def join_call(
    d: gm.Device, room_id: str, *, url: str = SFU_URL, expires: int = 3_600_000, mesh: bool = False
) -> str:
    """Send ``d``'s membership of the room call with our SFU (or the mesh) as its focus; its
    membership id."""
    membership_id = f"m-{d.transport.device_id}-{time.time_ns()}"
    now = int(time.time() * 1000)
    if mesh:
        member = mesh_member(
            device_id=d.transport.device_id,
            membership_id=membership_id,
            created_ts=now,
            expires=expires,
        )
    else:
        member = sfu_member(
            device_id=d.transport.device_id,
            membership_id=membership_id,
            created_ts=now,
            expires=expires,
            sfu_url=url,
        )
    key = member_state_key(d.user_id, d.transport.device_id)
    await d.transport.send_state_event(room_id, CALL_MEMBER, key, member.to_json())
    return membership_id


async def request(d: gm.Device, room_id: str, **changes: Any) -> JoinRequest:
    token = await d.transport.request_openid_token()
    fields: dict[str, Any] = {
        "user_id": d.user_id,
        "device_id": d.transport.device_id,
        "room_id": room_id,
        "openid_token": token,
        **changes,
    }
    return JoinRequest(**fields)


async def test_an_openid_token_is_typed_and_resolves_to_its_user(devices: gm.Devices) -> None:
    alice, sfu = await devices.new("alice"), await devices.new("sfu")
    token = await alice.transport.request_openid_token()
    assert token.token_type == "Bearer"
    assert token.matrix_server_name == "localhost"
    assert token.expires_in > 0
    assert token.access_token not in repr(token)
    assert OpenIdToken.parse(token.to_json()) == token
    room_id = await gm.group_room(sfu, alice)
    await join_call(alice, room_id)
    service = Sfu(sfu, devices.server).service
    verdict = await service.admit(await request(alice, room_id))
    await service.close()
    assert isinstance(verdict, Admitted), verdict


async def test_a_member_is_admitted_and_disconnected_when_it_leaves(
    devices: gm.Devices, synapse: Homeserver
) -> None:
    alice, sfu = await devices.new("alice"), await devices.new("sfu")
    room_id = await gm.group_room(sfu, alice)
    membership_id = await join_call(alice, room_id)
    s = Sfu(sfu, synapse)
    verdict = await s.service.admit(await request(alice, room_id, membership_id=membership_id))
    assert isinstance(verdict, Admitted), verdict
    expected = Participant(room_id, alice.user_id, alice.transport.device_id, membership_id)
    assert verdict.participant == expected
    assert s.service.verify(verdict.join_token) == expected
    # A forged or an expired join token admits nobody.
    body, _, mac = verdict.join_token.partition(".")
    forged = body + "." + ("A" if mac[0] != "A" else "B") + mac[1:]
    with pytest.raises(JoinTokenError) as refused:
        s.service.verify(forged)
    assert refused.value.reason is JoinTokenRefusal.FORGED
    with pytest.raises(JoinTokenError) as refused:
        s.service.core.tokens.verify(verdict.join_token, verdict.expires_at)
    assert refused.value.reason is JoinTokenRefusal.EXPIRED
    # The member leaves: it is disconnected, and its token admits nobody any more.
    key = member_state_key(alice.user_id, alice.transport.device_id)
    await alice.transport.send_state_event(room_id, CALL_MEMBER, key, {})
    await wait_for(lambda: s.disconnected == [expected], TIMEOUT, "the disconnect")
    assert s.service.verify(verdict.join_token) is None
    assert s.service.core.participants() == []
    await s.service.close()


async def test_a_member_whose_membership_expires_is_disconnected(
    devices: gm.Devices, synapse: Homeserver
) -> None:
    alice, sfu = await devices.new("alice"), await devices.new("sfu")
    room_id = await gm.group_room(sfu, alice)
    await join_call(alice, room_id, expires=4000)  # never refreshed
    s = Sfu(sfu, synapse)
    verdict = await s.service.admit(await request(alice, room_id))
    assert isinstance(verdict, Admitted), verdict
    await wait_for(lambda: s.disconnected == [verdict.participant], TIMEOUT, "the expiry")
    await s.service.close()


async def test_non_members_wrong_users_and_bad_tokens_are_refused_with_their_reason(
    devices: gm.Devices, synapse: Homeserver
) -> None:
    alice, carol, mesh, bob, sfu = [
        await devices.new(n) for n in ("alice", "carol", "mesh", "bob", "sfu")
    ]
    room_id = await gm.group_room(sfu, alice, carol, mesh)
    other_room = await bob.transport.create_group_room("elsewhere")
    await join_call(alice, room_id)
    await join_call(mesh, room_id, mesh=True)
    await join_call(bob, other_room)
    s = Sfu(sfu, synapse)

    async def reason(req: JoinRequest) -> Refusal:
        verdict = await s.service.admit(req)
        assert isinstance(verdict, Refused), verdict
        return verdict.reason

    # In the room, but not in its call.
    assert await reason(await request(carol, room_id)) is Refusal.NOT_MEMBER
    # A member of another room's call.
    assert await reason(await request(bob, room_id)) is Refusal.NOT_MEMBER
    # A room the SFU's account is not in.
    assert await reason(await request(bob, other_room)) is Refusal.UNKNOWN_ROOM
    # In the call, through the mesh.
    assert await reason(await request(mesh, room_id)) is Refusal.WRONG_FOCUS
    # Carol's genuine token, claimed for Alice.
    carols = await carol.transport.request_openid_token()
    assert await reason(await request(alice, room_id, openid_token=carols)) is Refusal.BAD_TOKEN
    # A token the homeserver never issued.
    garbage = OpenIdToken("not-a-token", "Bearer", "localhost", 3600)
    assert await reason(await request(alice, room_id, openid_token=garbage)) is Refusal.BAD_TOKEN
    # A token of another server.
    foreign = OpenIdToken(carols.access_token, "Bearer", "elsewhere.test", 3600)
    assert await reason(await request(alice, room_id, openid_token=foreign)) is Refusal.BAD_TOKEN
    # Alice's membership, but a stale membership id.
    stale = await request(alice, room_id, membership_id="an-old-one")
    assert await reason(stale) is Refusal.NOT_MEMBER
    # And Alice herself gets in.
    assert isinstance(await s.service.admit(await request(alice, room_id)), Admitted)
    assert s.disconnected == []
    await s.service.close()

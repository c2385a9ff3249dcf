"""A hostile room member against a group call over a real Synapse: a member event written for
someone else's device, pair signaling that is garbage, forged or for another pair, a media key
from outside the call and one sent in plaintext. Each is refused and counted; the honest pair
stays as it was and keeps decrypting."""

import json
import os
import random
from typing import Any

from nio import ToDeviceMessage

import test_group_membership_session as gm
from group_call_helpers import TIMEOUT, CallDevices, group_call
from sealcall.calls import CallState
from sealcall.demo import wait_for
from sealcall.e2ee import GroupKey
from sealcall.group import MEMBER_EVENT_TYPE, Ignored, mesh_member
from sealcall.session import GroupCallSession
from sealcall.signaling.key_events import ENCRYPTION_KEY_EVENT, EncryptionKeyContent

HOSTILE_SIGNALS = 40


def audio_decrypted(session: GroupCallSession) -> int:
    return sum(
        t.counters.frames_decrypted
        for pair in session.peer_sessions().values()
        for t in pair.receiver_taps()
    )


def garbage(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value, nested a little."""
    kind = rng.randrange(7 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63, rng.randrange(-(10**6), 10**6)])
    if kind == 3:
        return rng.choice(["", "x" * rng.randrange(300), "\u0000", "m.call.invite"])
    if kind == 4:
        return rng.random()
    if kind == 5:
        return [garbage(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["call_id", "party_id", "version", "offer", "seq", "conf_id", "dest_session_id", "x"]
    return {rng.choice(keys): garbage(rng, depth + 1) for _ in range(rng.randrange(6))}


def hostile_signals(
    valid: dict[str, Any], rng: random.Random
) -> list[tuple[str, dict[str, Any] | Any]]:
    """Signals a member of the room outside the call might send: random contents, a valid
    envelope with its fields broken one at a time, another pair's call id, a claimed device."""
    types = ["m.call.invite", "m.call.answer", "m.call.candidates", "m.call.hangup", "m.call.x"]
    out: list[tuple[str, Any]] = []
    for i in range(HOSTILE_SIGNALS):
        content: Any
        if i % 3 == 0:
            content = garbage(rng)  # (the transport sends objects only)
            content = content if isinstance(content, dict) else {"call_id": content}
        else:
            content = dict(valid)
            key = rng.choice(list(content))
            content[key] = garbage(rng)
        out.append((rng.choice(types), content))
    return out


async def test_hostile_member_refused_and_counted_call_unharmed(
    call_devices: CallDevices,
) -> None:
    a, b, m = [await call_devices.new(n) for n in ("ada", "ben", "mal")]
    room_id = await gm.group_room(a, b, m)
    alice, bob = (group_call(call_devices, d, room_id, video=False) for d in (a, b))
    await alice.join()
    await bob.join()
    await wait_for(
        lambda: (
            alice.peer_state(bob.own) is CallState.CONNECTED
            and bob.peer_state(alice.own) is CallState.CONNECTED
        ),
        TIMEOUT,
        "the pair",
    )
    pair_call = alice.peer_sessions()[bob.own].call_id
    assert alice.mesh is not None
    before_mesh = sum(alice.mesh.counters.values())

    # 1. Mallory writes a membership for Bob's device (another user's state key): ignored.
    spoof = mesh_member(
        device_id=b.transport.device_id,
        membership_id="mallory-session",
        created_ts=0,
        expires=4 * 3600 * 1000,
    )
    state_key = f"_{b.user_id}_{b.transport.device_id}_m.call"
    await m.transport.send_state_event(room_id, MEMBER_EVENT_TYPE, state_key, spoof.to_json())
    await wait_for(
        lambda: alice.membership.ignored[Ignored.SPOOFED] >= 1, TIMEOUT, "the spoof ignored"
    )

    # 2. Mallory's pair signaling over Olm: garbage, broken envelopes, a claimed device.
    own_session = alice.membership.own.membership_id
    assert own_session is not None
    valid = {
        "call_id": pair_call,
        "party_id": "MAL",
        "version": "1",
        "lifetime": 60000,
        "offer": {"type": "offer", "sdp": "v=0\r\n"},
        "conf_id": room_id,
        "room_id": room_id,
        "device_id": b.transport.device_id,  # claims to be Bob's device
        "seq": 0,
        "sender_session_id": "mallory-session",
        "dest_session_id": own_session,
    }
    target = (a.user_id, a.transport.device_id)
    for event_type, content in hostile_signals(valid, random.Random(9)):
        json.dumps(content)  # only JSON goes over the wire
        await m.transport.send_to_device(*target, event_type, content)

    # 3. A media key from Mallory (no member) over Olm, and one from Bob in plaintext.
    assert alice.keys is not None
    assert bob.keys is not None
    forged = EncryptionKeyContent(room_id, "mallory", GroupKey(9, os.urandom(32)))
    await m.transport.send_to_device(*target, ENCRYPTION_KEY_EVENT, forged.to_dict())
    plain = EncryptionKeyContent(room_id, bob.keys.member_id, GroupKey(7, os.urandom(32)))
    await b.transport.client.to_device(
        ToDeviceMessage(ENCRYPTION_KEY_EVENT, *target, plain.to_dict())
    )

    await wait_for(
        lambda: (
            alice.keys is not None
            and alice.keys.counters["not_member"] >= 1
            and alice.keys.counters["plaintext"] >= 1
        ),
        TIMEOUT,
        "the forged and plaintext keys refused",
    )
    await wait_for(
        lambda: (
            alice.mesh is not None
            and sum(alice.mesh.counters.values()) - before_mesh >= HOSTILE_SIGNALS
        ),
        TIMEOUT,
        "every hostile signal refused and counted",
    )
    # Nothing changed for the honest pair: same call, still connected, still decrypting; Mallory
    # is no peer and her key is no key of Bob's.
    assert [m.device for m in alice.members()] == [bob.own]
    assert alice.peer_sessions()[bob.own].call_id == pair_call
    assert set(alice.pairs) == {pair_call}
    assert alice.keys.kids(m.user_id, m.transport.device_id) == []
    assert 7 not in alice.keys.kids(bob.own.user_id, bob.own.device_id)
    decrypted = audio_decrypted(alice)
    await wait_for(lambda: audio_decrypted(alice) > decrypted + 25, TIMEOUT, "more frames")
    assert alice.peer_state(bob.own) is CallState.CONNECTED

"""Hostile members against the mesh: whatever two member devices (one that places its calls,
one that we call) send, garbage, forged envelopes, mutated invites, other pairs' call ids, replayed
sequence numbers, nothing raises, what is refused is counted under the project's fixed names, the
buffers stay bounded, and the honest members' pairs all connect as if nothing had happened."""

from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from call_harness import fake_sdp
from mesh_harness import ROOM, MeshNet, member
from sealcall.e2ee import KeyShare
from sealcall.group import (
    Dropped,
    MemberDevice,
    MemberJoined,
    MeshCount,
    SignalEnvelope,
    pair_call_id,
    wrap_signal,
)
from sealcall.group.mesh_inbox import MAX_EARLY, MAX_HELD_PER_PEER
from sealcall.sframe import CipherSuite
from sealcall.signaling import (
    E2EE_KEY,
    E2EE_VERSION,
    CallAnswer,
    E2eeParams,
    SessionDescription,
)
from sealcall.transport.matrix.to_device import DeviceMessage
from test_mesh import forged_invite, session

from fuzz_helpers import json_values

HONEST = (
    MemberDevice("@alice:hs", "A1"),
    MemberDevice("@bob:hs", "B1"),
    MemberDevice("@carol:hs", "C1"),
)
LOW = MemberDevice("@aaa:hs", "L1")  # places its calls to every honest member
HIGH = MemberDevice("@zed:hs", "Z1")  # every honest member calls it
HOSTILE = (LOW, HIGH)
TYPES = [
    "m.call.invite",
    "m.call.answer",
    "m.call.candidates",
    "m.call.select_answer",
    "m.call.negotiate",
    "m.call.hangup",
    "m.call.reject",
    "m.call.sdp_stream_metadata_changed",
    "m.room.message",
]
JSON = json_values(integers=st.integers(min_value=-(2**64), max_value=2**64))
KNOWN_COUNTS = {d.value for d in Dropped} | {c.value for c in MeshCount}


@st.composite
def hostile_messages(draw: st.DrawFn) -> tuple[int, float, DeviceMessage]:
    src = draw(st.sampled_from(HOSTILE))
    dest = draw(st.sampled_from(HONEST))
    delay = draw(st.floats(min_value=0, max_value=3))
    kind = draw(st.sampled_from(["garbage", "enveloped", "mutated_invite", "mutated_answer"]))
    event_type = draw(st.sampled_from(TYPES))
    if kind == "garbage":
        content: Any = draw(JSON)
    elif kind == "enveloped":
        # A well-formed envelope around a fuzzed event, aimed at its own pair's call, at
        # another honest pair's, or at nothing.
        other = draw(st.sampled_from([d for d in HONEST if d != dest]))
        call_id = draw(
            st.sampled_from(
                [
                    pair_call_id(ROOM, (src, session(src)), (dest, session(dest)), 0),
                    pair_call_id(ROOM, (src, session(src)), (dest, session(dest)), 3),
                    pair_call_id(ROOM, (other, session(other)), (dest, session(dest)), 0),
                ]
            )
            | st.text(max_size=8)
        )
        envelope = SignalEnvelope(
            ROOM, ROOM, src.device_id, draw(st.integers(0, 6)), session(src), session(dest)
        )
        body = draw(st.dictionaries(st.sampled_from(BODY_KEYS), JSON, max_size=4))
        content = {"call_id": call_id, "party_id": src.device_id, "version": "1", **body}
        content.update(envelope.to_json())
    else:
        if kind == "mutated_invite":
            forged = forged_invite(src, session(src), dest, session(dest))
        else:
            forged = forged_answer(src, dest, draw(st.integers(0, 6)))
        event_type, content = forged.type, dict(forged.content)
        for key in draw(st.lists(st.sampled_from(sorted(content)), max_size=3, unique=True)):
            if draw(st.booleans()):
                content[key] = draw(JSON)
            else:
                del content[key]
    return HONEST.index(dest), delay, DeviceMessage(src.user_id, src.device_id, event_type, content)


def forged_answer(src: MemberDevice, dest: MemberDevice, seq: int) -> DeviceMessage:
    """A well-formed, encrypted answer from ``src`` to ``dest``'s first call."""
    answer = CallAnswer(
        call_id=pair_call_id(ROOM, (src, session(src)), (dest, session(dest)), 0),
        party_id=src.device_id,
        answer=SessionDescription(
            type="answer",
            sdp=fake_sdp("answer", video=False, screenshare=False, on_hold=False, tag="x"),
        ),
        e2ee=E2eeParams(
            version=E2EE_VERSION,
            suites=(CipherSuite.AES_128_GCM_SHA256_128,),
            public_key=KeyShare().public_bytes,
        ),
    )
    envelope = SignalEnvelope(ROOM, ROOM, src.device_id, seq, session(src), session(dest))
    event_type, content = wrap_signal(answer, envelope)
    return DeviceMessage(src.user_id, src.device_id, event_type, content)


BODY_KEYS = [
    "offer",
    "answer",
    "candidates",
    "selected_party_id",
    "description",
    "reason",
    "lifetime",
    "sdp_stream_metadata",
    "org.matrix.msc3077.sdp_stream_metadata",
    "invitee",
    E2EE_KEY,
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(hostile_messages(), max_size=25), replay=st.booleans())
def test_hostile_members_neither_break_the_mesh_nor_escape_its_bounds(
    messages: list[tuple[int, float, DeviceMessage]], replay: bool
) -> None:
    net = MeshNet()
    for device in HONEST:
        net.join(device, session(device))
    hostile = [MemberJoined(member(d, session(d))) for d in HOSTILE]
    net.tell(list(net.nodes.values()), hostile)
    for dest, delay, message in messages:
        net.inject(HONEST[dest], message, delay)
        if replay:
            net.inject(HONEST[dest], message, delay + 0.5)
    net.wait(8)
    net.assert_all_connected(frozenset(HOSTILE))
    for node in net.nodes.values():
        assert set(node.mesh.counters) <= KNOWN_COUNTS
        for name in node.mesh.counters:
            event(name)  # see --hypothesis-show-statistics: which refusals the examples reach
        assert node.mesh.inbox.buffered <= MAX_EARLY + len(HOSTILE) * MAX_HELD_PER_PEER
        for device in HOSTILE:
            pair = node.mesh.pairs[device]
            assert pair.places == (node.device < device)
            if pair.call is not None:  # whatever a hostile member did, its call is its pair's
                assert pair.call.call_id.startswith(
                    pair_call_id(ROOM, (node.device, node.session), (device, session(device)), 0)[
                        :-1
                    ]
                )

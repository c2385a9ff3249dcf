"""Call events: parse/to_dict round trips byte for byte, errors name fields, fuzzing."""

import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealcall.signaling import (
    CallAnswer,
    CallAssertedIdentity,
    CallCandidates,
    CallHangup,
    CallInvite,
    CallNegotiate,
    CallReject,
    CallSdpStreamMetadataChanged,
    CallSelectAnswer,
    E2eeParams,
    FieldTypeError,
    HangupReason,
    InvalidEventError,
    MissingFieldError,
    SessionDescription,
    SignalingError,
    StreamMetadata,
    StreamPurpose,
    UnknownEventTypeError,
    parse,
)

from fuzz_helpers import json_values

SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\n"

# Events as Element-family clients put them in a room (with their unstable and extra keys).
SAMPLES = [
    '{"type":"m.call.invite","sender":"@a:x","event_id":"$1","origin_server_ts":5,'
    '"content":{"call_id":"c1","version":"1","party_id":"DEV","lifetime":60000,'
    '"offer":{"type":"offer","sdp":"v=0\\r\\n"},"invitee":"@b:x",'
    '"org.matrix.msc3077.sdp_stream_metadata":{"s1":{"purpose":"m.usermedia",'
    '"audio_muted":false,"video_muted":true}},'
    '"capabilities":{"m.call.transferee":false,"m.call.dtmf":false}},"unsigned":{"age":12}}',
    '{"type":"m.call.answer","content":{"call_id":"c1","party_id":"B","version":"1",'
    '"answer":{"sdp":"v=0","type":"answer"},"sdp_stream_metadata":{}}}',
    '{"type":"m.call.candidates","content":{"version":1,"call_id":"c1","party_id":"B",'
    '"candidates":[{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host",'
    '"sdpMid":"0","sdpMLineIndex":0},{"candidate":""}]}}',
    '{"type":"m.call.select_answer","content":{"call_id":"c1","party_id":"A","version":"1",'
    '"selected_party_id":"B"}}',
    '{"type":"m.call.reject","content":{"call_id":"c1","party_id":"B","version":"1"}}',
    '{"type":"m.call.hangup","content":{"call_id":"c1","party_id":"B","version":"1",'
    '"reason":"ice_failed"}}',
    '{"type":"m.call.hangup","content":{"call_id":"c1","party_id":"B","version":0}}',
    '{"type":"m.call.negotiate","content":{"call_id":"c1","party_id":"A","version":"1",'
    '"lifetime":10000,"description":{"type":"offer","sdp":"v=0"}}}',
    '{"type":"m.call.sdp_stream_metadata_changed","content":{"call_id":"c1","party_id":"A",'
    '"version":"1","sdp_stream_metadata":{"s":{"purpose":"m.screenshare"}}}}',
    '{"type":"org.matrix.call.asserted_identity","content":{"call_id":"c1","party_id":"A",'
    '"version":"1","asserted_identity":{"id":"@c:x","display_name":"C"}}}',
    '{"type":"m.call.invite","content":{"call_id":"c2","party_id":"A","version":"1",'
    '"lifetime":30000,"offer":{"type":"offer","sdp":"v=0"},"org.sealcall.e2ee":'
    '{"version":1,"suites":[4],"public_key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"}}}',
]


@pytest.mark.parametrize("text", SAMPLES)
def test_real_events_round_trip_byte_for_byte(text: str) -> None:
    event = parse(json.loads(text))
    assert json.dumps(event.to_dict(), separators=(",", ":")) == text


def test_typed_fields() -> None:
    invite = parse(json.loads(SAMPLES[0]))
    assert isinstance(invite, CallInvite)
    assert invite.lifetime == 60000
    assert invite.invitee == "@b:x"
    assert invite.sdp_stream_metadata == {
        "s1": StreamMetadata(purpose="m.usermedia", audio_muted=False, video_muted=True)
    }
    assert invite.extra == {"capabilities": {"m.call.transferee": False, "m.call.dtmf": False}}
    assert invite.envelope["unsigned"] == {"age": 12}
    candidates = parse(json.loads(SAMPLES[2]))
    assert isinstance(candidates, CallCandidates)
    assert [c.candidate for c in candidates.candidates][1] == ""
    assert candidates.candidates[0].sdp_mline_index == 0
    hangup = parse(json.loads(SAMPLES[5]))
    assert isinstance(hangup, CallHangup)
    assert hangup.known_reason is HangupReason.ICE_FAILED
    legacy = parse(json.loads(SAMPLES[6]))
    assert isinstance(legacy, CallHangup)
    assert legacy.known_reason is HangupReason.USER_HANGUP
    identity = parse(json.loads(SAMPLES[9]))
    assert isinstance(identity, CallAssertedIdentity)
    assert identity.asserted_identity.display_name == "C"
    e2ee = parse(json.loads(SAMPLES[10]))
    assert isinstance(e2ee, CallInvite)
    assert e2ee.e2ee is not None
    assert e2ee.e2ee.public_key == bytes(range(32))
    assert e2ee.e2ee.suites == (4,)


def test_built_events_serialise_as_the_spec_says() -> None:
    invite = CallInvite(
        call_id="c",
        party_id="p",
        lifetime=1000,
        offer=SessionDescription(type="offer", sdp=SDP),
        sdp_stream_metadata={"s": StreamMetadata(purpose=StreamPurpose.USERMEDIA.value)},
        e2ee=E2eeParams(version=1, suites=(4,), public_key=bytes(32)),
    )
    content = invite.to_dict()["content"]
    assert content["version"] == "1"
    assert content["offer"] == {"type": "offer", "sdp": SDP}
    assert content["sdp_stream_metadata"] == {
        "s": {"purpose": "m.usermedia", "audio_muted": False, "video_muted": False}
    }
    assert content["org.sealcall.e2ee"]["public_key"] == "A" * 43
    assert parse(invite.to_dict()) == invite
    for event in (
        CallAnswer(call_id="c", party_id="q", answer=SessionDescription(type="answer", sdp=SDP)),
        CallSelectAnswer(call_id="c", party_id="p", selected_party_id="q"),
        CallReject(call_id="c", party_id="q"),
        CallHangup(call_id="c", party_id="p", reason="user_busy"),
        CallNegotiate(
            call_id="c", party_id="p", description=SessionDescription(type="offer", sdp=SDP)
        ),
        CallSdpStreamMetadataChanged(
            call_id="c", party_id="p", sdp_stream_metadata={"s": StreamMetadata(purpose="x")}
        ),
    ):
        assert parse(json.loads(json.dumps(event.to_dict()))) == event


def test_secrets_are_not_in_repr() -> None:
    invite = parse(json.loads(SAMPLES[0]))
    assert "v=0" not in repr(invite)
    assert "127.0.0.1" not in repr(parse(json.loads(SAMPLES[2])))


def content_of(index: int) -> dict[str, Any]:
    return json.loads(SAMPLES[index])


@pytest.mark.parametrize(
    ("mutate", "error", "field"),
    [
        (lambda e: e["content"].pop("call_id"), MissingFieldError, "content.call_id"),
        (lambda e: e["content"].pop("offer"), MissingFieldError, "content.offer"),
        (lambda e: e["content"]["offer"].pop("sdp"), MissingFieldError, "content.offer.sdp"),
        (lambda e: e["content"].update(lifetime="soon"), FieldTypeError, "content.lifetime"),
        (lambda e: e["content"].update(lifetime=-1), FieldTypeError, "content.lifetime"),
        (lambda e: e["content"].update(call_id=7), FieldTypeError, "content.call_id"),
        (lambda e: e["content"].update(call_id=""), FieldTypeError, "content.call_id"),
        (lambda e: e["content"].update(version=True), FieldTypeError, "content.version"),
        (
            lambda e: e["content"]["offer"].update(type="pranswer"),
            FieldTypeError,
            "content.offer.type",
        ),
        (
            lambda e: e["content"]["org.matrix.msc3077.sdp_stream_metadata"]["s1"].update(
                audio_muted="yes"
            ),
            FieldTypeError,
            "content.org.matrix.msc3077.sdp_stream_metadata.s1.audio_muted",
        ),
        (lambda e: e["content"].update(invitee=["@b:x"]), FieldTypeError, "content.invitee"),
    ],
)
def test_bad_fields_are_named(mutate: Any, error: type[InvalidEventError], field: str) -> None:
    event = content_of(0)
    mutate(event)
    with pytest.raises(error) as info:
        parse(event)
    assert info.value.field == field


def test_bad_e2ee_and_candidates_are_named() -> None:
    event = content_of(10)
    event["content"]["org.sealcall.e2ee"]["public_key"] = "AAAA"
    with pytest.raises(InvalidEventError, match="public_key"):
        parse(event)
    event = content_of(2)
    event["content"]["candidates"][0]["sdpMLineIndex"] = "0"
    with pytest.raises(FieldTypeError) as info:
        parse(event)
    assert info.value.field == "content.candidates.0.sdpMLineIndex"
    with pytest.raises(UnknownEventTypeError):
        parse({"type": "m.room.message", "content": {}})
    with pytest.raises(InvalidEventError):
        parse(["not", "an", "object"])


JSON = json_values()
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.sampled_from(SAMPLES), st.data())
def test_fuzz_mutated_real_events(text: str, data: st.DataObject) -> None:
    event = json.loads(text)
    content = event["content"]
    key = data.draw(st.sampled_from([*content.keys(), "new"]))
    content[key] = data.draw(JSON)
    try:
        parsed = parse(event)
    except SignalingError:
        return
    assert json.dumps(parsed.to_dict()) == json.dumps(event)


@SETTINGS
@given(JSON)
def test_fuzz_arbitrary_json(value: object) -> None:
    with contextlib.suppress(SignalingError):
        parse({"type": "m.call.invite", "content": value})


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e["content"].update(lifetime=10**400), "content.lifetime"),
        (lambda e: e["content"].update(lifetime=2**53), "content.lifetime"),
        (lambda e: e["content"].update(call_id="\ud800"), "content.call_id"),
        (lambda e: e["content"].update(party_id="a\udfffb"), "content.party_id"),
    ],
)
def test_hostile_values_are_refused_by_name(mutate: Any, field: str) -> None:
    event = content_of(0)
    mutate(event)
    with pytest.raises(FieldTypeError) as info:
        parse(event)
    assert info.value.field == field


UNSTABLE = "org.matrix.msc3077.sdp_stream_metadata"


def test_stream_metadata_is_written_under_both_keys() -> None:
    # matrix-js-sdk reads only the unstable key (and throws on a metadata change without it).
    metadata = {"s": StreamMetadata(purpose="m.usermedia", audio_muted=True, video_muted=False)}
    offer = SessionDescription(type="offer", sdp=SDP)
    for event in (
        CallInvite(call_id="c", party_id="p", offer=offer, sdp_stream_metadata=metadata),
        CallAnswer(
            call_id="c",
            party_id="q",
            answer=SessionDescription(type="answer", sdp=SDP),
            sdp_stream_metadata=metadata,
        ),
        CallNegotiate(call_id="c", party_id="p", description=offer, sdp_stream_metadata=metadata),
        CallSdpStreamMetadataChanged(call_id="c", party_id="p", sdp_stream_metadata=metadata),
    ):
        content = event.to_dict()["content"]
        expected = {"s": {"purpose": "m.usermedia", "audio_muted": True, "video_muted": False}}
        assert content["sdp_stream_metadata"] == content[UNSTABLE] == expected
        assert parse(json.loads(json.dumps(event.to_dict()))) == event


def test_stream_metadata_is_read_from_either_key_stable_first() -> None:
    only_unstable = {
        "type": "m.call.sdp_stream_metadata_changed",
        "content": {
            "call_id": "c",
            "party_id": "p",
            "version": "1",
            UNSTABLE: {"s": {"purpose": "m.usermedia", "audio_muted": True}},
        },
    }
    event = parse(only_unstable)
    assert isinstance(event, CallSdpStreamMetadataChanged)
    assert event.sdp_stream_metadata == {
        "s": StreamMetadata(purpose="m.usermedia", audio_muted=True)
    }
    assert event.to_dict() == only_unstable
    both = json.loads(json.dumps(only_unstable))
    both["content"]["sdp_stream_metadata"] = {"s": {"purpose": "m.screenshare"}}
    event = parse(both)
    assert event.sdp_stream_metadata == {"s": StreamMetadata(purpose="m.screenshare")}  # type: ignore[attr-defined]
    assert event.extra == {UNSTABLE: {"s": {"purpose": "m.usermedia", "audio_muted": True}}}
    assert json.dumps(event.to_dict()) == json.dumps(both)
    with pytest.raises(MissingFieldError):
        parse({**only_unstable, "content": {"call_id": "c", "party_id": "p", "version": "1"}})


def test_reject_reason_is_read_and_written() -> None:
    # js-sdk and the Famedly SDK put a reason on m.call.reject (user_busy for a busy callee).
    text = (
        '{"type":"m.call.reject","content":{"call_id":"c1","party_id":"B","version":"1",'
        '"reason":"user_busy"}}'
    )
    reject = parse(json.loads(text))
    assert isinstance(reject, CallReject)
    assert reject.reason == "user_busy"
    assert json.dumps(reject.to_dict(), separators=(",", ":")) == text
    assert "reason" not in CallReject(call_id="c", party_id="p").to_dict()["content"]

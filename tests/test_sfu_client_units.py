"""The SFU client's pieces without Synapse: the SFU's messages, admission answers, the offer
fix-up for removed m-lines, and the audio level on the wire (against the real SFU server with its
test admission)."""

import asyncio
import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealcall.group import MemberDevice
from sealcall.group.sfu_messages import (
    Floor,
    Joined,
    Layer,
    Muted,
    SfuMessageError,
    Speaking,
    Tracks,
    mute_message,
    parse_sfu_message,
    subscribe_message,
)
from sealcall.media import LOOPBACK, PatternVideoTrack, SyntheticAudioTrack
from sealcall.session import GroupSending, LocalMedia
from sealcall.session.sfu_link import SfuAdmissionError, SfuLinkSetup, _join_token
from sealcall.session.sfu_session import AiortcSfuLink, with_removed_codecs
from sealcall.sfu.server import OpenAdmission, SfuServer

from fuzz_helpers import json_values

ALICE = MemberDevice("@alice:x", "A")


def test_the_sfus_messages_are_read_into_their_types() -> None:
    tracks = parse_sfu_message(
        json.dumps(
            {
                "type": "tracks",
                "tracks": [{"mid": "f4", "ssrc": 7, "kind": "video", "member": "@alice:x|A"}],
            }
        )
    )
    assert isinstance(tracks, Tracks)
    assert tracks.tracks[0].member == ALICE
    assert parse_sfu_message('{"type": "layer", "publisher": "@alice:x|A", "quality": "full"}') == (
        Layer(ALICE, "full")
    )
    assert parse_sfu_message('{"type": "floor", "holder": null}') == Floor(None)
    assert parse_sfu_message('{"type": "speaking", "members": ["@alice:x|A"]}') == Speaking(
        (ALICE,)
    )
    # The contract's joined (id/answer) and the first server's (member/sdp).
    assert parse_sfu_message('{"type": "joined", "id": "m", "answer": "v=0"}') == Joined("m", "v=0")
    assert parse_sfu_message('{"type": "joined", "member": "m", "sdp": "v=0"}') == Joined(
        "m", "v=0"
    )
    muted = '{"type": "muted", "member": "@alice:x|A", "audio": false, "video": true}'
    assert parse_sfu_message(muted) == Muted(ALICE, audio=False, video=True)
    assert json.loads(mute_message(True, False)) == {"type": "mute", "audio": True, "video": False}
    assert json.loads(subscribe_message(ALICE, "full")) == {
        "type": "subscribe",
        "publisher": "@alice:x|A",
        "quality": "full",
    }


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"type": "nope"}',
        '{"type": "layer", "publisher": "@alice:x|A", "quality": "huge"}',
        '{"type": "layer", "publisher": "alice", "quality": "full"}',
        '{"type": "tracks", "tracks": [{"mid": "f", "ssrc": -1, "kind": "video"}]}',
        '{"type": "tracks", "tracks": [{"mid": "f", "ssrc": true, "kind": "video"}]}',
        '{"type": "speaking", "members": "@alice:x|A"}',
        '{"type": "offer"}',
        '{"type": "muted", "member": "@alice:x|A", "audio": 0, "video": true}',
        '{"type": "muted", "member": "@alice:x|A", "audio": false, "video": "no"}',
        '{"type": "muted", "member": "@alice:x|A", "audio": false}',
        '{"type": "muted", "member": "alice", "audio": false, "video": false}',
    ],
)
def test_a_message_that_is_not_the_protocols_is_refused(text: str) -> None:
    with pytest.raises(SfuMessageError):
        parse_sfu_message(text)


JSON = json_values()
KEYS = st.sampled_from(
    [
        "type",
        "tracks",
        "members",
        "publisher",
        "quality",
        "holder",
        "sdp",
        "member",
        "audio",
        "video",
    ]
)
TYPES = st.sampled_from(
    ["joined", "offer", "tracks", "left", "speaking", "layer", "floor", "muted", "error"]
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, JSON, max_size=4), TYPES)
def test_any_message_is_read_or_refused_with_the_specific_error(
    fields: dict[str, Any], kind: str
) -> None:
    with contextlib.suppress(SfuMessageError):
        parse_sfu_message(json.dumps({**fields, "type": kind}))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_any_bytes_are_read_or_refused_with_the_specific_error(data: bytes) -> None:
    with contextlib.suppress(SfuMessageError):
        parse_sfu_message(data)


def test_an_admission_answer_is_a_join_token_or_the_sfus_reason() -> None:
    assert _join_token(200, {"join_token": "abc", "expires_at": 1}) == "abc"
    for status, answer, reason in [
        (403, {"error": "not_member"}, "not_member"),
        (400, {"error": "bad_request"}, "bad_request"),
        (200, {"join_token": ""}, "bad_answer"),
        (502, "gateway", "bad_answer"),
        (403, {"error": "<script>"}, "bad_answer"),
    ]:
        with pytest.raises(SfuAdmissionError) as refused:
            _join_token(status, answer)
        assert refused.value.reason == reason


def test_a_removed_m_line_gets_its_codec_named_for_aiortc() -> None:
    offer = "\r\n".join(
        ["v=0", "m=audio 0 UDP/TLS/RTP/SAVPF 96", "a=mid:f4", "m=video 9 UDP/TLS/RTP/SAVPF 97"]
    )
    fixed = with_removed_codecs(offer).split("\r\n")
    assert fixed[2] == "a=rtpmap:96 opus/48000/2"
    assert "a=rtpmap:97" not in with_removed_codecs(offer)  # a live m-line is left alone
    named = offer.replace("a=mid:f4", "a=rtpmap:96 opus/48000/2\r\na=mid:f4")
    assert with_removed_codecs(named) == named  # already named: nothing added


class _Events:
    def __init__(self) -> None:
        self.speaking: list[list[MemberDevice]] = []

    def __getattr__(self, name: str) -> Any:
        if name == "sfu_speaking":
            return self.speaking.append
        return lambda *args: None


async def _link_config(audio_level: bool) -> tuple[Any, _Events]:
    """Join the real SFU (its test admission) with our link; the SFU's view of our audio."""
    server = SfuServer(OpenAdmission)
    await server.start()
    sending = GroupSending(
        LocalMedia(SyntheticAudioTrack, lambda: PatternVideoTrack(160, 120, fps=10)), video=True
    )
    sending.layers = True
    sending.send_keys.set_send_key(0, bytes(16))
    sending.start()
    events = _Events()
    setup = SfuLinkSetup(
        own=ALICE,
        room_id="!r",
        sending=sending,
        opener=lambda member: None,  # type: ignore[arg-type,return-value]
        audio_level=audio_level,
        host_addresses=LOOPBACK,
    )
    link = AiortcSfuLink(events, setup)  # type: ignore[arg-type]
    try:
        token: Any = {"room_id": "!r", "user_id": ALICE.user_id, "device_id": "A"}
        await link.open(f"http://127.0.0.1:{server.port}", token)
        for _ in range(100):
            if "!r" in server.rooms and (events.speaking or not audio_level):
                break
            await asyncio.sleep(0.1)
        config = server.rooms["!r"].forwarder._participants["@alice:x|A"].config
        senders = [t.sender._RTCRtpSender__started for t in link.pc.getTransceivers()[:3]]  # type: ignore[attr-defined]
        return (config, senders), events
    finally:
        await link.close()
        await server.close()
        await sending.stop()


async def test_audio_levels_reach_the_sfu_only_when_allowed() -> None:
    (config, senders), events = await _link_config(True)
    assert config.audio_level_id is not None
    assert senders == [True, True, True]  # audio, thumbnail and full resolution all go out
    assert [ALICE] in events.speaking  # the SFU read our levels: we are speaking
    (config, _), events = await _link_config(False)
    assert config.audio_level_id is None  # not even offered
    assert events.speaking == [] or all(not s for s in events.speaking)

"""The call engine's media actions as page commands, and the page's results as engine inputs."""

import base64
import json

import pytest
from aiortc import RTCIceServer

from sealcall.calls import (
    LocalCandidatesReady,
    LocalDescriptionReady,
    LocalMediaFailed,
    MediaClosed,
    MediaConnected,
    MediaFailed,
    MediaInterrupted,
)
from sealcall.calls import actions as act
from sealcall.calls.states import CallState
from sealcall.e2ee import CallKeys
from sealcall.signaling import Candidate, StreamPurpose
from sealcall.web import protocol as p
from sealcall.web.media_commands import media_command, media_input

SEND, RECEIVE = bytes(range(16)), bytes(range(16, 32))
TURN = RTCIceServer(urls="turn:127.0.0.1:3478", username="u", credential="c")


def test_every_media_action_has_its_command() -> None:
    candidate = Candidate(candidate="candidate:1 1 udp 1 127.0.0.1 9 typ host", sdp_mid="0")
    cases: list[tuple[act.Action, dict[str, object]]] = [
        (
            act.CreateOffer(video=True, screenshare=False, on_hold=True),
            {
                "op": "create_offer",
                "video": True,
                "screenshare": False,
                "on_hold": True,
                "ice_restart": False,
            },
        ),
        (
            act.CreateAnswer("v=0 offer", video=False),
            {"op": "create_answer", "sdp": "v=0 offer", "video": False, "on_hold": False},
        ),
        (act.ApplyAnswer("v=0 answer"), {"op": "apply_answer", "sdp": "v=0 answer"}),
        (act.RollbackLocalOffer(), {"op": "rollback"}),
        (
            act.AddRemoteCandidates((candidate,)),
            {
                "op": "add_candidates",
                "candidates": [
                    {"candidate": candidate.candidate, "sdpMid": "0", "sdpMLineIndex": None}
                ],
            },
        ),
        (
            act.SetLocalMute(audio_muted=True, video_muted=False),
            {"op": "set_mute", "audio_muted": True, "video_muted": False},
        ),
        (act.AllowUnencryptedMedia(), {"op": "allow_unencrypted"}),
        (act.ClosePeerConnection(), {"op": "close"}),
    ]
    for action, expected in cases:
        command = media_command(action, [TURN])
        assert command is not None
        assert {k: command[k] for k in expected} == expected
        if expected["op"] in ("create_offer", "create_answer"):
            assert command["ice_servers"] == [
                {"urls": "turn:127.0.0.1:3478", "username": "u", "credential": "c"}
            ]


def test_keys_go_as_base64_base_keys() -> None:
    command = media_command(act.UseMediaKeys(CallKeys(SEND, RECEIVE), suite=1))
    assert command == {
        "op": "keys",
        "suite": 1,
        "send": base64.b64encode(SEND).decode(),
        "receive": base64.b64encode(RECEIVE).decode(),
    }


@pytest.mark.parametrize(
    "action",
    [
        act.StateChanged(CallState.RINGING, CallState.ENDED),
        act.CallEnded("user_hangup", by_remote=True),
        act.RemoteHoldChanged(True),
    ],
)
def test_notifications_are_not_media_work(action: act.Action) -> None:
    assert media_command(action) is None


def result(text: str) -> p.MediaResult:
    parsed = p.parse_message(text)
    assert isinstance(
        parsed, (p.LocalDescription, p.LocalCandidates, p.ConnectionState, p.MediaFailed)
    )
    return parsed


def test_page_results_become_engine_inputs() -> None:
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"
    message = {
        "type": "local_description",
        "call_id": "c1",
        "sdp": sdp,
        "streams": {"s1": "m.usermedia", "s2": "m.screenshare"},
    }
    described = media_input(result(json.dumps(message)))
    assert isinstance(described, LocalDescriptionReady)
    assert described.sdp == sdp
    assert described.streams == {"s1": StreamPurpose.USERMEDIA, "s2": StreamPurpose.SCREENSHARE}

    candidates = media_input(
        result(
            '{"type": "local_candidates", "call_id": "c1", "candidates": ['
            '{"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0",'
            ' "sdpMLineIndex": 0}, {"candidate": "", "sdpMid": null, "sdpMLineIndex": null}]}'
        )
    )
    assert isinstance(candidates, LocalCandidatesReady)
    assert [c.candidate for c in candidates.candidates][1] == ""
    assert candidates.candidates[0].sdp_mline_index == 0

    for state, kind in (
        ("connected", MediaConnected),
        ("disconnected", MediaInterrupted),
        ("failed", MediaFailed),
        ("closed", MediaClosed),
    ):
        text = json.dumps({"type": "connection_state", "call_id": "c1", "state": state})
        assert isinstance(media_input(result(text)), kind)

    failed = media_input(
        result('{"type": "media_failed", "call_id": "c1", "detail": "NotAllowedError"}')
    )
    assert isinstance(failed, LocalMediaFailed)
    assert "NotAllowedError" in failed.detail

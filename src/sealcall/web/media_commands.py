"""The call engine's media work, as the page's peer connection takes it (sans-I/O).

A :class:`~sealcall.calls.Call` asks its media layer for offers, answers, candidates, keys and
mutes (:mod:`sealcall.calls.actions`); in the web client that layer is the page. This module
turns each such action into the page socket's ``media`` command and each media result the page
reports back into the engine's input, both as docs/web-protocol.md fixes them.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any

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
from sealcall.calls.inputs import LocalInput
from sealcall.signaling import Candidate, StreamPurpose

from .protocol import ConnectionState, LocalCandidates, LocalDescription, MediaResult
from .protocol import MediaFailed as PageFailed


def ice_servers_json(servers: Sequence[RTCIceServer]) -> list[dict[str, Any]]:
    """ICE servers as the browser's ``RTCConfiguration.iceServers`` takes them."""
    out: list[dict[str, Any]] = []
    for server in servers:
        entry: dict[str, Any] = {"urls": server.urls}
        if server.username is not None:
            entry["username"] = server.username
        if server.credential is not None:
            entry["credential"] = server.credential
        out.append(entry)
    return out


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def _candidates(candidates: Sequence[Candidate]) -> list[dict[str, Any]]:
    return [
        {"candidate": c.candidate, "sdpMid": c.sdp_mid, "sdpMLineIndex": c.sdp_mline_index}
        for c in candidates
    ]


def media_command(
    action: act.Action, ice_servers: Sequence[RTCIceServer] = (), *, relay_only: bool = False
) -> dict[str, Any] | None:
    """The ``media`` command's fields (``op`` and its own) for one engine action; None for an
    action that is not media work (notifications, sends). ``relay_only``: the page's
    connection uses relay candidates only (``iceTransportPolicy: "relay"``)."""
    relay = {"relay_only": True} if relay_only else {}
    if isinstance(action, act.CreateOffer):
        return {
            **relay,
            "op": "create_offer",
            "video": action.video,
            "screenshare": action.screenshare,
            "on_hold": action.on_hold,
            "ice_restart": action.ice_restart,
            "ice_servers": ice_servers_json(ice_servers),
        }
    if isinstance(action, act.CreateAnswer):
        return {
            **relay,
            "op": "create_answer",
            "sdp": action.offer_sdp,
            "video": action.video,
            "on_hold": action.on_hold,
            "ice_servers": ice_servers_json(ice_servers),
        }
    if isinstance(action, act.ApplyAnswer):
        return {"op": "apply_answer", "sdp": action.answer_sdp}
    if isinstance(action, act.RollbackLocalOffer):
        return {"op": "rollback"}
    if isinstance(action, act.AddRemoteCandidates):
        return {"op": "add_candidates", "candidates": _candidates(action.candidates)}
    if isinstance(action, act.SetLocalMute):
        return {
            "op": "set_mute",
            "audio_muted": action.audio_muted,
            "video_muted": action.video_muted,
        }
    if isinstance(action, act.UseMediaKeys):
        return {
            "op": "keys",
            "suite": action.suite,
            "send": _b64(action.keys.send),
            "receive": _b64(action.keys.receive),
        }
    if isinstance(action, act.AllowUnencryptedMedia):
        return {"op": "allow_unencrypted"}
    if isinstance(action, act.ClosePeerConnection):
        return {"op": "close"}
    return None


_CONNECTION_INPUTS: dict[str, Callable[[], LocalInput]] = {
    "connected": MediaConnected,
    "disconnected": MediaInterrupted,  # Chromium's ICE lost the path; it may come back
    "failed": MediaFailed,
    "closed": MediaClosed,
}


def media_input(result: MediaResult) -> LocalInput:
    """The engine's input for a media result the page reported."""
    if isinstance(result, LocalDescription):
        streams = {stream: StreamPurpose(purpose) for stream, purpose in result.streams.items()}
        return LocalDescriptionReady(result.sdp, streams)
    if isinstance(result, LocalCandidates):
        return LocalCandidatesReady(
            tuple(
                Candidate(
                    candidate=c.candidate, sdp_mid=c.sdp_mid, sdp_mline_index=c.sdp_mline_index
                )
                for c in result.candidates
            )
        )
    if isinstance(result, ConnectionState):
        return _CONNECTION_INPUTS[result.state]()
    if isinstance(result, PageFailed):
        return LocalMediaFailed(f"the page: {result.detail}")
    raise TypeError(f"not a media result: {type(result).__name__}")

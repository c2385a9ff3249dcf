"""``sealcall mesh-bench``: one participant's CPU in a 4-party video mesh next to a 1:1 call.

The measured participant runs in its own process (:mod:`sealcall.bench.mesh_peer`), so its CPU
time is its own: it encodes its 640x480 30 fps VP8 camera and Opus microphone once
(:class:`~sealcall.media.SharedEncoder`), sends them SFrame-protected over one
:class:`~sealcall.media.GroupPeerConnection` per peer, and decrypts and decodes every peer's
video and audio, reading every remote track. Media level only: no homeserver; the keys are
local :class:`~sealcall.media.MediaKeys`. The peers live in this process and send the same
kind of media; their frames come from one shared encoder here (one harness key), which changes
nothing in what the measured process receives, decrypts and decodes.

One run measures the same participant with 1 peer (a 1:1 call) and with 3 peers (a 4-party
mesh), each in a fresh process, and reports process CPU seconds per second of media for each
and their ratio. One encoder per connection would make the mesh cost about 3x the 1:1 call.
"""

import asyncio
import contextlib
import json
import os
import sys
from typing import Any

from aiortc import RTCSessionDescription

from sealcall.media import (
    LOOPBACK,
    GroupPeerConnection,
    MediaKeys,
    PatternVideoTrack,
    SenderTap,
    SharedEncoder,
    SyntheticAudioTrack,
)

from .mesh_peer import KID, opener

AIM = 1.6
FPS = 30
FULL_RATE = 0.9 * FPS  # below this, a process was starved and the figures are not comparable
CHILD_TIMEOUT = 60.0


class BenchError(RuntimeError):
    """The measured participant failed or its media did not flow."""


async def run_case(
    peers: int,
    seconds: float,
    width: int = 640,
    height: int = 480,
    *,
    encode_once: bool = True,
) -> dict[str, Any]:
    """Measure the participant process with ``peers`` peers for ``seconds`` of media; without
    ``encode_once`` it encodes for each connection, as browsers do."""
    own_key, harness_key = os.urandom(32), os.urandom(32)
    send_keys = MediaKeys(KID, harness_key)
    audio = SharedEncoder(SyntheticAudioTrack(), SenderTap(send_keys, "audio"))
    video = SharedEncoder(PatternVideoTrack(width, height, FPS), SenderTap(send_keys, "video"))
    pcs: list[GroupPeerConnection] = []
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sealcall.bench.mesh_peer",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 22,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    stdin, stdout = child.stdin, child.stdout

    def send(message: dict[str, Any]) -> None:
        stdin.write((json.dumps(message) + "\n").encode())

    async def receive() -> dict[str, Any]:
        line = await asyncio.wait_for(stdout.readline(), CHILD_TIMEOUT)
        if not line:
            raise BenchError("the measured participant exited early")
        message: dict[str, Any] = json.loads(line)
        return message

    try:
        setup = {
            "own_key": own_key.hex(),
            "peer_keys": [harness_key.hex()] * peers,
            "width": width,
            "height": height,
            "encode_once": encode_once,
        }
        send({"setup": setup})
        for _ in range(peers):
            offer = (await receive())["offer"]
            pc = GroupPeerConnection(opener(own_key), host_addresses=LOOPBACK)
            pcs.append(pc)
            await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
            pc.add_shared(audio, answering=True)
            pc.add_shared(video, answering=True)
            await pc.setLocalDescription(await pc.createAnswer())
            send({"answer": {"peer": offer["peer"], "sdp": pc.localDescription.sdp}})
        send({"measure": seconds})
        reply = await receive()
        if "error" in reply:
            raise BenchError(reply["error"])
        result: dict[str, Any] = reply["result"]
        return result
    finally:
        with contextlib.suppress(ConnectionError):
            send({"stop": True})
            stdin.close()
        try:
            await asyncio.wait_for(child.wait(), 20)
        except TimeoutError:
            child.kill()
            await child.wait()
        for pc in pcs:
            await pc.close()
        await audio.stop()
        await video.stop()


async def run(
    seconds: float = 10.0, width: int = 640, height: int = 480, *, compare: bool = False
) -> dict[str, Any]:
    """The same participant in a 1:1 call and in a 4-party mesh, one after the other; with
    ``compare`` also in the mesh with one encoder per connection."""
    one_to_one = await run_case(1, seconds, width, height)
    mesh = await run_case(3, seconds, width, height)
    cases = [one_to_one, mesh]
    report = {
        "benchmark": "mesh",
        "media": f"{width}x{height} {FPS} fps VP8 + Opus each way, SFrame, loopback",
        "measured": "process CPU seconds per second of the participant's own process",
        "one_to_one": one_to_one,
        "mesh_4": mesh,
        "ratio": round(mesh["cpu_per_second"] / one_to_one["cpu_per_second"], 3),
        "aim": AIM,
    }
    if compare:
        per_connection = await run_case(3, seconds, width, height, encode_once=False)
        cases.append(per_connection)
        report["mesh_4_encoder_per_connection"] = per_connection
        report["ratio_encoder_per_connection"] = round(
            per_connection["cpu_per_second"] / one_to_one["cpu_per_second"], 3
        )
    report["full_rate"] = all(
        case["video_fps_sent"] >= FULL_RATE and case["video_fps_received"] >= FULL_RATE
        for case in cases
    )
    return report

"""``sealcall media-bench``: CPU cost of a plain and an encrypted loopback call, side by side.

Each round runs the same call twice, plain then encrypted: two aiortc peer connections over
loopback, one sending 640x480 30 fps VP8 video and Opus audio from the synthetic sources, the
other decoding. The process CPU time (all threads: encoders, decoders, crypto, the event loop) is
divided by the seconds of media sent. The best round of each kind counts.
"""

import asyncio
import time
from dataclasses import asdict, dataclass

from aiortc import RTCPeerConnection

from sealcall.media import (
    LOOPBACK,
    EncryptedPeerConnection,
    FrameCounter,
    PatternVideoTrack,
    PeerConnection,
    SyntheticAudioTrack,
    local_call_keys,
    negotiate,
)


@dataclass(frozen=True)
class CallRun:
    """One measured call."""

    encrypted: bool
    media_seconds: float
    cpu_seconds: float
    cpu_per_media_second: float
    video_frames_decoded: int
    audio_frames_decoded: int


def _pair(encrypted: bool) -> tuple[RTCPeerConnection, RTCPeerConnection]:
    if not encrypted:
        return PeerConnection(host_addresses=LOOPBACK), PeerConnection(host_addresses=LOOPBACK)
    caller_keys, callee_keys = local_call_keys("bench")
    return (
        EncryptedPeerConnection(caller_keys, host_addresses=LOOPBACK),
        EncryptedPeerConnection(callee_keys, host_addresses=LOOPBACK),
    )


async def run_call(encrypted: bool, seconds: float, width: int = 640, height: int = 480) -> CallRun:
    """Run one call and measure it once media flows."""
    sender, receiver = _pair(encrypted)
    counters: dict[str, FrameCounter] = {}
    receiver.on("track", lambda track: counters.setdefault(track.kind, FrameCounter(track).start()))
    sender.addTrack(SyntheticAudioTrack())
    sender.addTrack(PatternVideoTrack(width, height, 30))
    try:
        await negotiate(sender, receiver)
        deadline = time.monotonic() + 20
        while "video" not in counters or counters["video"].frames < 5:
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark call did not start")
            await asyncio.sleep(0.05)
        video_start, audio_start = counters["video"].frames, counters["audio"].frames
        cpu_start, wall_start = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu = time.process_time() - cpu_start
        wall = time.monotonic() - wall_start
        return CallRun(
            encrypted=encrypted,
            media_seconds=round(wall, 3),
            cpu_seconds=round(cpu, 3),
            cpu_per_media_second=round(cpu / wall, 4),
            video_frames_decoded=counters["video"].frames - video_start,
            audio_frames_decoded=counters["audio"].frames - audio_start,
        )
    finally:
        for counter in counters.values():
            await counter.stop()
        await sender.close()
        await receiver.close()


async def run(seconds: float = 5.0, rounds: int = 3) -> dict[str, object]:
    """Alternate plain and encrypted calls; report every run and the best-of ratio."""
    runs: list[CallRun] = []
    for _ in range(rounds):
        runs.append(await run_call(False, seconds))
        runs.append(await run_call(True, seconds))
    plain = min(r.cpu_per_media_second for r in runs if not r.encrypted)
    encrypted = min(r.cpu_per_media_second for r in runs if r.encrypted)
    return {
        "benchmark": "media",
        "call": "640x480 30 fps VP8 + Opus, loopback, one direction",
        "plain_cpu_per_media_second": plain,
        "encrypted_cpu_per_media_second": encrypted,
        "ratio": round(encrypted / plain, 4),
        "runs": [asdict(r) for r in runs],
    }

"""The measured participant of ``sealcall mesh-bench``, in its own process.

Started by :func:`sealcall.bench.mesh_bench.run_case`; JSON lines on stdin/stdout. It gets its
own send key and one key per peer, encodes its camera and microphone once
(:class:`~sealcall.media.SharedEncoder`), offers one :class:`~sealcall.media.GroupPeerConnection`
per peer, reads every remote track it receives, and on request measures its own process CPU
time over a stretch of media.
"""

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from sealcall.media import (
    LOOPBACK,
    FrameCounter,
    GroupPeerConnection,
    MediaKeys,
    PatternVideoTrack,
    SenderTap,
    SharedEncoder,
    SyntheticAudioTrack,
)

KID = 1
START_TIMEOUT = 30.0


def opener(key: bytes) -> MediaKeys:
    """Keys that decrypt one sender's frames (its key under :data:`KID`)."""
    keys = MediaKeys()
    keys.add_receive_key(KID, key)
    return keys


def _counted(track: MediaStreamTrack) -> FrameCounter:
    return FrameCounter(track).start()


class Participant:
    """Our encoders, one connection per peer, a frame counter on every remote track."""

    def __init__(self, own_key: bytes, peer_keys: list[bytes], width: int, height: int) -> None:
        send_keys = MediaKeys(KID, own_key)
        self.audio = SharedEncoder(SyntheticAudioTrack(), SenderTap(send_keys, "audio"))
        self.video = SharedEncoder(
            PatternVideoTrack(width, height, 30), SenderTap(send_keys, "video")
        )
        self.pcs = [GroupPeerConnection(opener(k), host_addresses=LOOPBACK) for k in peer_keys]
        self.counters: list[dict[str, FrameCounter]] = [{} for _ in self.pcs]
        for pc, counters in zip(self.pcs, self.counters, strict=True):
            pc.on("track", lambda track, c=counters: c.setdefault(track.kind, _counted(track)))
            pc.add_shared(self.audio)
            pc.add_shared(self.video)

    async def offer(self, index: int) -> dict[str, Any]:
        pc = self.pcs[index]
        await pc.setLocalDescription(await pc.createOffer())
        return {"offer": {"peer": index, "sdp": pc.localDescription.sdp}}

    def decoded(self, kind: str) -> list[int]:
        return [c[kind].frames if kind in c else 0 for c in self.counters]

    async def measure(self, seconds: float) -> dict[str, Any]:
        deadline = time.monotonic() + START_TIMEOUT
        while min(self.decoded("video")) < 5:
            if time.monotonic() > deadline:
                return {"error": "media did not flow from every peer"}
            await asyncio.sleep(0.05)
        video, audio = self.decoded("video"), self.decoded("audio")
        encoded = self.video.counters.frames_encoded
        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        decrypted = sum(t.counters.frames_decrypted for pc in self.pcs for t in pc.receiver_taps())
        return {
            "result": {
                "peers": len(self.pcs),
                "seconds": round(wall, 3),
                "cpu_seconds": round(cpu, 3),
                "cpu_per_second": round(cpu / wall, 4),
                "video_frames_encoded": self.video.counters.frames_encoded - encoded,
                "video_frames_decoded": [
                    now - before for now, before in zip(self.decoded("video"), video, strict=True)
                ],
                "audio_frames_decoded": [
                    now - before for now, before in zip(self.decoded("audio"), audio, strict=True)
                ],
                "frames_decrypted_total": decrypted,
                "keyframes_forced": self.video.counters.keyframes_forced,
                "video_target_bitrate": self.video.target_bitrate,
            }
        }

    async def close(self) -> None:
        for counters in self.counters:
            for counter in counters.values():
                await counter.stop()
        for pc in self.pcs:
            await pc.close()
        await self.audio.stop()
        await self.video.stop()


def _send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def serve() -> None:
    """Follow the bench's messages until it says stop or closes stdin."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 22)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    participant: Participant | None = None
    try:
        while line := await reader.readline():
            message = json.loads(line)
            if "setup" in message:
                setup = message["setup"]
                participant = Participant(
                    bytes.fromhex(setup["own_key"]),
                    [bytes.fromhex(k) for k in setup["peer_keys"]],
                    setup["width"],
                    setup["height"],
                )
                offers = [participant.offer(i) for i in range(len(participant.pcs))]
                for offer in await asyncio.gather(*offers):
                    _send(offer)
            elif "answer" in message and participant is not None:
                answer = message["answer"]
                pc = participant.pcs[answer["peer"]]
                await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            elif "measure" in message and participant is not None:
                _send(await participant.measure(float(message["measure"])))
            elif "stop" in message:
                break
    finally:
        if participant is not None:
            with contextlib.suppress(Exception):
                await participant.close()


if __name__ == "__main__":
    asyncio.run(serve())

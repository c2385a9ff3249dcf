"""The measured participant of ``sealcall mesh-bench``, in its own process.

Started by :func:`sealcall.bench.mesh_bench.run_case`; JSON lines on stdin/stdout. It gets its
own send key and one key per peer, encodes its camera and microphone once
(:class:`~sealcall.media.SharedEncoder`), offers one :class:`~sealcall.media.GroupPeerConnection`
per peer, reads every remote track it receives, and on request measures its own process CPU
time over a stretch of media. For comparison it can also run as browsers do: one
:class:`~sealcall.media.EncryptedPeerConnection` per peer, each encoding and encrypting the same
camera and microphone (fed to all by aiortc's ``MediaRelay``).
"""

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from sealcall.media import (
    LOOPBACK,
    EncryptedPeerConnection,
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

    def __init__(
        self,
        own_key: bytes,
        peer_keys: list[bytes],
        width: int,
        height: int,
        *,
        encode_once: bool = True,
    ) -> None:
        microphone, camera = SyntheticAudioTrack(), PatternVideoTrack(width, height, 30)
        self.shared: list[SharedEncoder] = []
        self.pcs: list[RTCPeerConnection] = []
        self._relay = MediaRelay()
        self._video_taps: list[SenderTap] = []
        if encode_once:
            send_keys = MediaKeys(KID, own_key)
            audio = SharedEncoder(microphone, SenderTap(send_keys, "audio"))
            video = SharedEncoder(camera, SenderTap(send_keys, "video"))
            self.shared = [audio, video]
            self._video_taps = [video.tap]
            for key in peer_keys:
                group_pc = GroupPeerConnection(opener(key), host_addresses=LOOPBACK)
                group_pc.add_shared(audio)
                group_pc.add_shared(video)
                self.pcs.append(group_pc)
        else:
            for key in peer_keys:
                keys = MediaKeys(KID, own_key)
                keys.add_receive_key(KID, key)
                own_pc = EncryptedPeerConnection(keys, host_addresses=LOOPBACK)
                own_pc.addTrack(self._relay.subscribe(microphone, buffered=False))
                video_sender = own_pc.addTrack(self._relay.subscribe(camera, buffered=False))
                self._video_taps.append(own_pc.sender_tap(video_sender))
                self.pcs.append(own_pc)
        self.counters: list[dict[str, FrameCounter]] = [{} for _ in self.pcs]
        for pc, counters in zip(self.pcs, self.counters, strict=True):
            pc.on("track", lambda track, c=counters: c.setdefault(track.kind, _counted(track)))

    def _video_frames_encoded(self) -> int:
        return sum(tap.counters.frames_encrypted for tap in self._video_taps)

    def _frames_decrypted(self) -> int:
        total = 0
        for pc in self.pcs:
            assert isinstance(pc, GroupPeerConnection | EncryptedPeerConnection)
            total += sum(pc.receiver_tap(r).counters.frames_decrypted for r in pc.getReceivers())
        return total

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
        encoded = self._video_frames_encoded()
        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        decrypted = self._frames_decrypted()
        encoded = self._video_frames_encoded() - encoded
        decoded = [now - before for now, before in zip(self.decoded("video"), video, strict=True)]
        streams_encoded = 1 if self.shared else len(self.pcs)
        forced = sum(e.counters.keyframes_forced for e in self.shared)
        return {
            "result": {
                "peers": len(self.pcs),
                "seconds": round(wall, 3),
                "cpu_seconds": round(cpu, 3),
                "cpu_per_second": round(cpu / wall, 4),
                "encode_once": bool(self.shared),
                "video_frames_encoded": encoded,
                "video_frames_decoded": decoded,
                # Frames per second of one sent stream and of the slowest received one: below
                # the source's 30 fps the machine was too busy and the CPU figure is not comparable.
                "video_fps_sent": round(encoded / streams_encoded / wall, 1),
                "video_fps_received": round(min(decoded) / wall, 1),
                "audio_frames_decoded": [
                    now - before for now, before in zip(self.decoded("audio"), audio, strict=True)
                ],
                "frames_decrypted_total": decrypted,
                "keyframes_forced": forced,
            }
        }

    async def close(self) -> None:
        for counters in self.counters:
            for counter in counters.values():
                await counter.stop()
        for pc in self.pcs:
            await pc.close()
        for encoder in self.shared:
            await encoder.stop()


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
                    encode_once=setup.get("encode_once", True),
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

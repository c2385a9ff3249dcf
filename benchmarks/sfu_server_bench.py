"""CPU per forwarded packet of the sealcall SFU server, under the load of janus_baseline.py.

Starts the server (``SfuServer`` with ``OpenAdmission``: the load is not about admission) in a
process of its own on 127.0.0.1, puts P publishers x S subscribers through it with
``bench.sfu_load.measure_load`` (pre-encoded VP8 + Opus replayed; subscribers count RTP without
decoding) and prints CPU microseconds per forwarded packet, latency and RSS per participant. Run
``benchmarks/janus_baseline.py`` for Janus's figures under the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from typing import Any

import aiohttp
from aiortc import RTCSessionDescription

from sealcall.bench.sfu_load import EncodedClip, LoadReport, measure_load
from sealcall.media import PeerConnection
from sealcall.sfu.server import OpenAdmission, SfuServer

ROOM = "!bench:example.org"


async def serve() -> None:
    """The server process: print the port, serve until killed."""
    server = SfuServer(OpenAdmission, host="127.0.0.1", port=0)
    await server.start()
    print(server.port, flush=True)
    await asyncio.Event().wait()


class Signaling:
    """One participant's WebSocket: join, then answer every renegotiation offer."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.tasks: list[asyncio.Task[None]] = []

    async def join(self, pc: PeerConnection, name: str) -> None:
        ws = await self.session.ws_connect(self.url)
        await pc.setLocalDescription(await pc.createOffer())
        token = {"room_id": ROOM, "user_id": f"@{name}:bench", "device_id": "D"}
        await ws.send_json({"type": "join", "token": token, "offer": pc.localDescription.sdp})
        joined = asyncio.get_running_loop().create_future()

        async def read() -> None:
            async for msg in ws:
                data = json.loads(msg.data)
                if data["type"] == "joined":
                    await pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))
                    joined.set_result(None)
                elif data["type"] == "offer":
                    await pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "offer"))
                    await pc.setLocalDescription(await pc.createAnswer())
                    await ws.send_json({"type": "answer", "sdp": pc.localDescription.sdp})

        self.tasks.append(asyncio.ensure_future(read()))
        await asyncio.wait_for(joined, 30)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def sealcall_case(
    publishers: int, subscribers: int, seconds: float, clip: EncodedClip
) -> LoadReport:
    """One load through a fresh server process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), 30))
        async with aiohttp.ClientSession() as session:
            signaling = Signaling(session, f"http://127.0.0.1:{port}/ws")
            names = iter(range(1_000_000))

            async def publish(pc: PeerConnection, name: str) -> int:
                await signaling.join(pc, name)
                return 0

            async def subscribe(pc: PeerConnection, feeds: list[int]) -> None:
                pc.addTransceiver("audio", direction="recvonly")
                pc.addTransceiver("video", direction="recvonly")
                await signaling.join(pc, f"subscriber-{next(names)}")

            try:
                return await measure_load(
                    proc.pid, publish, subscribe, publishers, subscribers, seconds, clip
                )
            finally:
                await signaling.close()
    finally:
        proc.kill()
        await proc.wait()


async def run(loads: list[tuple[int, int]], seconds: float) -> list[dict[str, Any]]:
    clip = EncodedClip.make()
    return [
        {"sfu": "sealcall", **dataclasses.asdict(await sealcall_case(p, s, seconds, clip))}
        for p, s in loads
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per load")
    parser.add_argument("--loads", default="2x4,4x8", help="PxS pairs, comma-separated")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve())
        return 0
    loads = [tuple(int(n) for n in load.split("x")) for load in args.loads.split(",")]
    results = asyncio.run(run([(p, s) for p, s in loads], args.seconds))
    if args.json:
        json.dump({"sfu_server": results}, sys.stdout, indent=2)
        print()
    else:
        for r in results:
            print(
                f"sealcall {r['publishers']}x{r['subscribers']}: "
                f"{r['cpu_us_per_packet']} µs/packet ({r['forwarded_packets']} packets, "
                f"{r['expected_packets']} expected), latency p50 {r['latency_p50_ms']} ms "
                f"p99 {r['latency_p99_ms']} ms, RSS/participant "
                f"{r['rss_per_participant_bytes'] / 1e6:.2f} MB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``sealcall sfu-bench``: the sealcall SFU and Janus's VideoRoom under the same load, side by side.

For each load (P publishers x S subscribers) both SFUs run in one go, one after the other, with
the same pre-encoded clip (:class:`~sealcall.bench.sfu_load.EncodedClip`: VP8 + Opus encoded
once, replayed; subscribers count RTP and never decode), each in a process of its own: the
sealcall server (``SfuServer`` with ``OpenAdmission``: the load is not about admission) on
127.0.0.1, Janus (Debian package ``janus``) in a network namespace made for it
(:mod:`sealcall.bench.janus`). Both forward the same packets: the sealcall SFU sends each
member everyone else's streams on its one connection, so each Janus publisher also subscribes
to the other publishers (a second connection, as VideoRoom members do). Each reports CPU
microseconds per forwarded packet (the SFU process's user + system time over the run / all the
packets subscribers and publishers received; per subscriber packet alone too), latency p50/p99
and RSS per participant (:func:`~sealcall.bench.sfu_load.measure_load`); the ratio of the two
CPU figures is printed per load (the aim: at most 0.5).
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

from sealcall.media import PeerConnection
from sealcall.sfu.server import OpenAdmission, SfuServer

from .janus import JanusServer, JanusSession, publish_clip, subscribe_all, wait_connected
from .sfu_load import (
    EncodedClip,
    LoadReport,
    format_load_report,
    measure_load,
    parse_loads,
    rss_trend,
)

JANUS_ROOM = 1234
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
                    await pc.setRemoteDescription(RTCSessionDescription(data["answer"], "answer"))
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
    publishers: int,
    subscribers: int,
    seconds: float,
    clip: EncodedClip,
    rss_every: float | None = None,
) -> LoadReport:
    """One load through a fresh server process (its RSS sampled every ``rss_every`` s if set)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", __name__, "--serve", stdout=asyncio.subprocess.PIPE
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
                    proc.pid,
                    publish,
                    subscribe,
                    publishers,
                    subscribers,
                    seconds,
                    clip,
                    rss_every=rss_every,
                )
            finally:
                await signaling.close()
    finally:
        proc.kill()
        await proc.wait()


async def janus_case(
    publishers: int, subscribers: int, seconds: float, clip: EncodedClip
) -> LoadReport:
    """One load through a fresh Janus."""
    server = JanusServer()
    await server.start()
    try:
        async with JanusSession(server.url) as session:
            await session.create_room(await session.attach(), JANUS_ROOM, publishers)

            async def publish(pc: PeerConnection, name: str) -> int:
                feed = await publish_clip(session, JANUS_ROOM, pc, name)
                await wait_connected(pc)
                return feed

            async def subscribe(pc: PeerConnection, feeds: list[int]) -> None:
                await subscribe_all(session, JANUS_ROOM, pc, feeds)

            return await measure_load(
                server.pid,
                publish,
                subscribe,
                publishers,
                subscribers,
                seconds,
                clip,
                (server.load_address,),
                subscribe_publisher=subscribe,
            )
    finally:
        await server.stop()


async def run(loads: list[tuple[int, int]], seconds: float) -> dict[str, Any]:
    """Both SFUs under each load; the report (JSON-ready)."""
    clip = EncodedClip.make()
    cases: list[dict[str, Any]] = []
    for publishers, subscribers in loads:
        ours = await sealcall_case(publishers, subscribers, seconds, clip)
        janus = await janus_case(publishers, subscribers, seconds, clip)
        ratio = _ratio(ours.cpu_us_per_packet, janus.cpu_us_per_packet)
        subscriber_ratio = _ratio(
            ours.cpu_us_per_subscriber_packet, janus.cpu_us_per_subscriber_packet
        )
        cases.append(
            {
                "publishers": publishers,
                "subscribers": subscribers,
                "sealcall": dataclasses.asdict(ours),
                "janus": dataclasses.asdict(janus),
                "cpu_ratio_sealcall_to_janus": ratio,
                "cpu_ratio_per_subscriber_packet": subscriber_ratio,
            }
        )
    return {"seconds": seconds, "loads": cases}


async def soak(
    publishers: int, subscribers: int, seconds: float, rss_every: float, after: float
) -> dict[str, Any]:
    """A long load through the sealcall SFU alone: is its RSS flat after ``after`` seconds?"""
    report = await sealcall_case(publishers, subscribers, seconds, EncodedClip.make(), rss_every)
    trend = rss_trend(report.rss_samples, after)
    return {
        "soak": {
            **dataclasses.asdict(report),
            "rss_trend": dataclasses.asdict(trend) if trend is not None else None,
        }
    }


def soak_text(report: dict[str, Any]) -> str:
    """The soak report as lines of text."""
    load = report["soak"]
    trend = load["rss_trend"]
    lines = [
        f"sealcall SFU soak, {load['publishers']}x{load['subscribers']} for"
        f" {load['seconds']:g} s: " + format_load_report("sealcall", load),
        "  RSS MB: " + " ".join(f"{t:g}s={rss / 1e6:.1f}" for t, rss in load["rss_samples"]),
    ]
    if trend is None:
        lines.append("  too short for a trend after the first minute")
    else:
        lines.append(
            f"  after {trend['after_seconds']:g} s: slope"
            f" {trend['slope_bytes_per_minute'] / 1e3:.1f} kB/min, max-min"
            f" {trend['spread_bytes'] / 1e6:.2f} MB; flat: {trend['flat']}"
        )
    return "\n".join(lines)


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return round(ours / theirs, 3) if ours and theirs else None


def report_text(report: dict[str, Any]) -> str:
    """The report as lines of text."""
    lines = [f"SFU CPU per forwarded packet, {report['seconds']:g} s per load and SFU:"]
    for case in report["loads"]:
        for name in ("sealcall", "janus"):
            lines.append("  " + format_load_report(name, case[name]))
        lines.append(
            f"  ratio {case['publishers']}x{case['subscribers']}:"
            f" {case['cpu_ratio_sealcall_to_janus']} (aim: at most 0.5); per packet to"
            f" subscribers only: {case['cpu_ratio_per_subscriber_packet']}"
        )
    return "\n".join(lines)


_ALONE = {"sealcall": (sealcall_case, "sfu_server"), "janus": (janus_case, "janus_baseline")}


def main_alone(name: str, description: str, argv: list[str] | None = None) -> int:
    """One SFU (``sealcall`` or ``janus``) alone under the loads: the benchmarks/ scripts."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per load")
    parser.add_argument("--loads", default="2x4,4x8", help="PxS pairs, comma-separated")
    args = parser.parse_args(argv)
    case, key = _ALONE[name]

    async def run_alone() -> list[dict[str, Any]]:
        clip = EncodedClip.make()
        return [
            {"sfu": name, **dataclasses.asdict(await case(p, s, args.seconds, clip))}
            for p, s in parse_loads(args.loads)
        ]

    results = asyncio.run(run_alone())
    if args.json:
        print(json.dumps({key: results}, indent=2))
    else:
        for result in results:
            print(format_load_report(name, result))
    return 0


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    asyncio.run(serve())

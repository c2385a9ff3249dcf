"""Janus's VideoRoom under the sfu-bench load: the baseline our SFU has to beat.

Starts Janus (Debian package ``janus``) in a network namespace of its own, puts P
publishers (pre-encoded VP8 + Opus, replayed) and S subscribers (counting RTP, never decoding)
through one room, and prints, per load: Janus's CPU microseconds per forwarded packet (user +
system time of the Janus process over the run / packets all subscribers received), added
latency p50/p99 (abs-send-time stamped by the publishers' senders, read on arrival in the same
process), and Janus's RSS per participant. ``generator_cpu_seconds`` and ``expected_packets``
show whether the load generator kept up.

Run: ``python benchmarks/janus_baseline.py [--json] [--seconds S] [--loads 2x4,4x8]``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from typing import Any

from sealcall.bench.janus import (
    JanusServer,
    JanusSession,
    publish_clip,
    subscribe_all,
    wait_connected,
)
from sealcall.bench.sfu_load import EncodedClip, LoadReport, measure_load
from sealcall.media import PeerConnection

ROOM = 1234


async def janus_case(
    publishers: int, subscribers: int, seconds: float, clip: EncodedClip
) -> LoadReport:
    """One load through a fresh Janus."""
    server = JanusServer()
    await server.start()
    try:
        async with JanusSession(server.url) as session:
            await session.create_room(await session.attach(), ROOM, publishers)

            async def publish(pc: PeerConnection, name: str) -> int:
                feed = await publish_clip(session, ROOM, pc, name)
                await wait_connected(pc)
                return feed

            async def subscribe(pc: PeerConnection, feeds: list[int]) -> None:
                await subscribe_all(session, ROOM, pc, feeds)

            return await measure_load(
                server.pid,
                publish,
                subscribe,
                publishers,
                subscribers,
                seconds,
                clip,
                (server.load_address,),
            )
    finally:
        await server.stop()


async def run(loads: list[tuple[int, int]], seconds: float) -> list[dict[str, Any]]:
    clip = EncodedClip.make()
    return [
        {"sfu": "janus", **dataclasses.asdict(await janus_case(p, s, seconds, clip))}
        for p, s in loads
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per load")
    parser.add_argument("--loads", default="2x4,4x8", help="PxS pairs, comma-separated")
    args = parser.parse_args(argv)
    loads = [tuple(int(n) for n in load.split("x")) for load in args.loads.split(",")]
    results = asyncio.run(run([(p, s) for p, s in loads], args.seconds))
    if args.json:
        json.dump({"janus_baseline": results}, sys.stdout, indent=2)
        print()
    else:
        for r in results:
            print(
                f"janus {r['publishers']}x{r['subscribers']}: "
                f"{r['cpu_us_per_packet']} µs/packet ({r['forwarded_packets']} packets, "
                f"{r['expected_packets']} expected), latency p50 {r['latency_p50_ms']} ms "
                f"p99 {r['latency_p99_ms']} ms, RSS/participant "
                f"{r['rss_per_participant_bytes'] / 1e6:.2f} MB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The SFU's whole forwarding core (``sfu.forwarder.Forwarder``), in µs per forwarded packet.

P publishers each send audio (one 20 ms packet), a thumbnail (one packet) and a full-resolution
layer (four MTU-sized packets) per 20 ms, pre-built, key frames every 2 s; S receive-only
subscribers get everyone's audio and thumbnail, half of them the full layer of every publisher
(publishers also receive each other). Time per forwarded packet is wall-clock time through
``Forwarder.packet`` (and ``tick`` every 20 ms) divided by the packets it emitted, and the
process's CPU time likewise; best of R.

Run: ``python benchmarks/sfu_forwarder_bench.py [--json] [--frames N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time

from sealcall.sfu.forwarder import Forwarder, ParticipantConfig, SendRtp
from sealcall.sfu.rtcp import Remb, build_rtcp

LEVEL_ID = 1
KEY = bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0xE0, 0x01])
DELTA = bytes([0x11, 0x02, 0x00])


def publisher_config(i: int) -> ParticipantConfig:
    base = 0x10000 * (i + 1)
    return ParticipantConfig(
        audio_ssrc=base + 1, thumbnail_ssrc=base + 2, full_ssrc=base + 3, audio_level_id=LEVEL_ID
    )


def build_traffic(publishers: int, frames: int) -> list[tuple[str, bytes, float]]:
    """``(participant, packet, now)`` for every packet the publishers send, in order."""
    out: list[tuple[str, bytes, float]] = []
    seqs: dict[int, int] = {}
    for f in range(frames):
        now = f * 0.02
        for i in range(publishers):
            base = 0x10000 * (i + 1)  # as publisher_config
            audio, thumb, full = base + 1, base + 2, base + 3
            name = f"pub{i}"
            a = seqs[audio] = seqs.get(audio, 0) + 1
            header = struct.pack("!BBHII", 0x90, 111, a & 0xFFFF, 960 * a, audio)
            ext = b"\xbe\xde\x00\x01" + bytes([LEVEL_ID << 4, 0x80 | 40, 0, 0])
            out.append((name, header + ext + bytes(80), now))
            key = f % 100 == 0
            for ssrc, count, size in ((thumb, 1, 600), (full, 4, 1100)):
                for k in range(count):
                    s = seqs[ssrc] = seqs.get(ssrc, 0) + 1
                    header = struct.pack("!BBHII", 0x80, 96, s & 0xFFFF, 3000 * f, ssrc)
                    pid = f & 0x7FFF
                    desc = bytes([0x90 if k == 0 else 0x80, 0x80, 0x80 | pid >> 8, pid & 0xFF])
                    clear = (KEY if key else DELTA) if k == 0 else b""
                    out.append((name, header + desc + clear + bytes(size), now))
    return out


def room(publishers: int, subscribers: int) -> Forwarder:
    """A forwarder with the publishers and subscribers joined and subscribed."""
    fw = Forwarder(seed=1, max_participants=publishers + subscribers)
    for i in range(publishers):
        fw.join(f"pub{i}", publisher_config(i), 0.0)
    for j in range(subscribers):
        fw.join(f"sub{j}", ParticipantConfig(), 0.0)
        fw.rtcp(f"sub{j}", build_rtcp([Remb(1, 50_000_000, ())]), 0.0)
        if j % 2 == 0:
            for i in range(publishers):
                fw.subscribe(f"sub{j}", f"pub{i}", "full", 0.0)
    return fw


def run(
    publishers: int, subscribers: int, traffic: list[tuple[str, bytes, float]]
) -> tuple[float, int]:
    """Seconds spent and packets forwarded for one pass of ``traffic``."""
    fw = room(publishers, subscribers)
    forwarded = 0
    packet = fw.packet
    tick = fw.tick
    last = -1.0
    t0 = time.perf_counter()
    c0 = time.process_time()
    for name, data, now in traffic:
        if now != last:
            tick(now)
            last = now
        for o in packet(name, data, now):
            if type(o) is SendRtp:
                forwarded += 1
    return time.perf_counter() - t0, time.process_time() - c0, forwarded


def main(argv: list[str] | None = None) -> int:
    """Measure and print (or ``--json``) µs per forwarded packet at 2x4 and 4x8."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--frames", type=int, default=500, help="20 ms frames per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best one counts")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, float]] = {}
    for publishers, subscribers in ((2, 4), (4, 8)):
        traffic = build_traffic(publishers, args.frames)
        best = best_cpu = float("inf")
        forwarded = 0
        for _ in range(args.rounds):
            spent, cpu, forwarded = run(publishers, subscribers, traffic)
            best = min(best, spent)
            best_cpu = min(best_cpu, cpu)
        if forwarded == 0:
            raise SystemExit("nothing was forwarded")
        results[f"{publishers}x{subscribers}"] = {
            "us_per_forwarded_packet": round(best / forwarded * 1e6, 3),
            "cpu_us_per_forwarded_packet": round(best_cpu / forwarded * 1e6, 3),
            "us_per_received_packet": round(best / len(traffic) * 1e6, 3),
            "forwarded_packets": forwarded,
            "received_packets": len(traffic),
        }
    if args.json:
        print(json.dumps(results))
    else:
        for load, r in results.items():
            print(
                f"{load}: {r['us_per_forwarded_packet']:.2f} µs per forwarded packet "
                f"({r['cpu_us_per_forwarded_packet']:.2f} µs CPU) "
                f"({r['forwarded_packets']:.0f} forwarded from {r['received_packets']:.0f}; "
                f"{r['us_per_received_packet']:.2f} µs per received packet)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

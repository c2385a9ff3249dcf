"""The SFU's forwarding hot path, in µs per packet, side by side with a bare copy as the floor.

Per packet: parse the RTP header, look up a header extension (audio level for audio,
abs-send-time for video), parse the VP8 descriptor (video), copy into a bytearray, rewrite
SSRC/seq/timestamp (and picture id) for a subscriber, insert into the NACK cache. The floor is
``bytes(packet)`` (the one copy forwarding cannot avoid); aiortc's ``RtpPacket.parse`` +
``serialize`` is shown for reference.

Run: ``python benchmarks/sfu_packet_bench.py [--json] [--packets N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from collections.abc import Callable

from aiortc.rtp import RtpPacket

from sealcall.sfu.packet_cache import PacketCache
from sealcall.sfu.rewriter import FORWARDED, StreamRewriter
from sealcall.sfu.rtp import RtpView
from sealcall.sfu.vp8 import Vp8Descriptor

AUDIO_LEVEL_ID = 1
SEND_TIME_ID = 3


def audio_packets(n: int) -> list[bytes]:
    """Opus-sized packets with a one-byte extension block: audio level and abs-send-time."""
    out = []
    for i in range(n):
        header = struct.pack("!BBHII", 0x90, 111, i & 0xFFFF, 960 * i & 0xFFFFFFFF, 0x1234)
        ext = b"\xbe\xde\x00\x02" + bytes([0x10, 0x80 | 30, 0x32, 1, 2, 3, 0, 0])
        out.append(header + ext + bytes(80))
    return out


def video_packets(n: int) -> list[bytes]:
    """MTU-sized VP8 packets: abs-send-time extension, 15-bit picture id, key frame every 100."""
    out = []
    for i in range(n):
        header = struct.pack("!BBHII", 0x90, 96, i & 0xFFFF, 3000 * (i // 4) & 0xFFFFFFFF, 0x5678)
        ext = b"\xbe\xde\x00\x01" + bytes([0x32, 1, 2, 3])
        pid = (i // 4) & 0x7FFF
        start = i % 4 == 0
        desc = bytes([0x90 if start else 0x80, 0xC0, 0x80 | pid >> 8, pid & 0xFF, pid & 0xFF])
        if start and i % 100 == 0:
            clear = bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0xE0, 0x01])
        elif start:
            clear = bytes([0x11, 0x02, 0x00])
        else:
            clear = b""
        out.append(header + ext + desc + clear + bytes(1100))
    return out


def forward_audio(packets: list[bytes]) -> int:
    """The audio hot path over ``packets``."""
    view = RtpView()
    rw = StreamRewriter(0xA0A0, 111, 48_000, video=False)
    rw.select(0x1234)
    cache = PacketCache(max_packets=512)
    now = 0.0
    for packet in packets:
        view.load(packet)
        view.audio_level(AUDIO_LEVEL_ID)
        buf = bytearray(packet)
        if rw.rewrite(view, buf, now) == FORWARDED:
            cache.insert(rw.out_sequence, buf)
    return len(cache)


def forward_video(packets: list[bytes]) -> int:
    """The video hot path over ``packets``."""
    view = RtpView()
    vp8 = Vp8Descriptor()
    rw = StreamRewriter(0xB0B0, 96, 90_000, video=True)
    rw.select(0x5678)
    cache = PacketCache(max_packets=1024, max_bytes=2 << 20)
    now = 0.0
    for packet in packets:
        view.load(packet)
        view.extension_range(SEND_TIME_ID)
        vp8.load(packet, view.payload_offset, view.payload_end)
        buf = bytearray(packet)
        if rw.rewrite(view, buf, now, vp8.is_keyframe, vp8) == FORWARDED:
            cache.insert(rw.out_sequence, buf)
    return len(cache)


def copy_floor(packets: list[bytes]) -> None:
    """The floor: one copy per packet."""
    for packet in packets:
        bytes(packet)


def aiortc_reference(packets: list[bytes]) -> None:
    """aiortc's own parse + serialize, for reference."""
    for packet in packets:
        RtpPacket.parse(packet).serialize()


def best_us(fn: Callable[[list[bytes]], object], packets: list[bytes], rounds: int) -> float:
    """Best-of-``rounds`` µs per packet."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(packets)
        best = min(best, time.perf_counter() - t0)
    return best / len(packets) * 1e6


def main(argv: list[str] | None = None) -> int:
    """Measure and print (or ``--json``) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--packets", type=int, default=20_000, help="packets per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best one counts")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, float]] = {}
    for kind, packets, path in (
        ("audio", audio_packets(args.packets), forward_audio),
        ("video", video_packets(args.packets), forward_video),
    ):
        if path(packets) != min(len(packets), 512 if kind == "audio" else 1024):
            raise SystemExit(f"{kind}: the hot path did not forward every packet")
        hot = best_us(path, packets, args.rounds)
        floor = best_us(copy_floor, packets, args.rounds)
        ref = best_us(aiortc_reference, packets, args.rounds)
        results[kind] = {
            "hot_path_us": round(hot, 3),
            "copy_floor_us": round(floor, 3),
            "hot_over_floor": round(hot / floor, 1),
            "aiortc_parse_serialize_us": round(ref, 3),
            "packet_bytes": len(packets[1]),
        }
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{'':6} {'hot path':>10} {'bytes() floor':>14} {'ratio':>7} {'aiortc parse+ser':>17}")
    for kind, r in results.items():
        print(
            f"{kind:6} {r['hot_path_us']:>8.2f}µs {r['copy_floor_us']:>12.3f}µs "
            f"{r['hot_over_floor']:>6.1f}x {r['aiortc_parse_serialize_us']:>15.2f}µs"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Janus's VideoRoom alone under the sfu-bench load: the baseline our SFU has to beat
(``sealcall sfu-bench`` runs both side by side). Janus (Debian package ``janus``) runs in a
network namespace of its own; per load it prints Janus's CPU microseconds per forwarded packet,
latency and RSS per participant.

Run: ``python benchmarks/janus_baseline.py [--json] [--seconds S] [--loads 2x4,4x8]``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys

from sealcall.bench.sfu_bench import janus_case
from sealcall.bench.sfu_load import EncodedClip, format_load_report, parse_loads


async def run(loads: list[tuple[int, int]], seconds: float) -> list[dict[str, object]]:
    clip = EncodedClip.make()
    return [
        {"sfu": "janus", **dataclasses.asdict(await janus_case(p, s, seconds, clip))}
        for p, s in loads
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per load")
    parser.add_argument("--loads", default="2x4,4x8", help="PxS pairs, comma-separated")
    args = parser.parse_args(argv)
    results = asyncio.run(run(parse_loads(args.loads), args.seconds))
    if args.json:
        print(json.dumps({"janus_baseline": results}, indent=2))
    else:
        for result in results:
            print(format_load_report("janus", result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

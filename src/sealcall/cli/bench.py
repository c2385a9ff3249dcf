"""``sealcall sframe-bench``, ``sealcall media-bench`` and ``sealcall setup-bench``."""

import argparse
import asyncio
import json
import sys


def sframe_bench(args: argparse.Namespace) -> int:
    from sealcall.bench.sframe_bench import as_json_rows, run

    rows = run(number=args.number, rounds=args.rounds)
    if args.json:
        print(json.dumps({"benchmark": "sframe", "rows": as_json_rows(rows)}, indent=2))
        return 0
    print(
        "Frame protection (SFrame AES_128_GCM_SHA256_128) vs bare AES-GCM, microseconds per frame"
    )
    print(
        f"{'codec':<6} {'bytes':>6} {'protect':>9} {'aes-gcm':>9} {'ratio':>6}"
        f" {'unprotect':>10} {'aes-gcm':>9} {'ratio':>6}"
    )
    for r in rows:
        print(
            f"{r.codec:<6} {r.frame_bytes:>6} {r.protect_us:>9.2f} {r.aesgcm_encrypt_us:>9.2f}"
            f" {r.protect_ratio:>6.2f} {r.unprotect_us:>10.2f} {r.aesgcm_decrypt_us:>9.2f}"
            f" {r.unprotect_ratio:>6.2f}"
        )
    return 0


def media_bench(args: argparse.Namespace) -> int:
    from sealcall.bench.media_bench import run

    report = asyncio.run(run(seconds=args.seconds, rounds=args.rounds))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"Loopback call, {report['call']}: CPU seconds per media second")
    print(f"  plain      {report['plain_cpu_per_media_second']:.3f}")
    print(f"  encrypted  {report['encrypted_cpu_per_media_second']:.3f}")
    print(f"  ratio      {report['ratio']:.3f}")
    return 0


def setup_bench(args: argparse.Namespace) -> int:
    from sealcall.bench.setup_bench import report_text, run
    from sealcall.homeserver import HomeserverError

    if args.calls < 1:
        print("sealcall setup-bench: --calls must be at least 1", file=sys.stderr)
        return 2
    accounts = None
    if args.homeserver:
        if not (args.alice and args.bob):
            print("sealcall setup-bench: --homeserver needs --alice and --bob", file=sys.stderr)
            return 2
        accounts = (args.alice, args.bob)
    try:
        report = asyncio.run(run(args.calls, homeserver_url=args.homeserver, accounts=accounts))
    except (HomeserverError, TimeoutError, RuntimeError) as error:
        print(f"sealcall setup-bench: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else report_text(report))
    return 0

"""The ``sealcall`` command line. Entry points only: every capability lives in the library."""

import argparse
import json
import sys
from collections.abc import Sequence

from . import __version__


def _sframe_bench(args: argparse.Namespace) -> int:
    from .bench.sframe_bench import as_json_rows, run

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


def _media_bench(args: argparse.Namespace) -> int:
    import asyncio

    from .bench.media_bench import run

    report = asyncio.run(run(seconds=args.seconds, rounds=args.rounds))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"Loopback call, {report['call']}: CPU seconds per media second")
    print(f"  plain      {report['plain_cpu_per_media_second']:.3f}")
    print(f"  encrypted  {report['encrypted_cpu_per_media_second']:.3f}")
    print(f"  ratio      {report['ratio']:.3f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sealcall`` command."""
    parser = argparse.ArgumentParser(
        prog="sealcall",
        description="End-to-end encrypted voice and video calls (SFrame, RFC 9605).",
    )
    parser.add_argument("--version", action="version", version=f"sealcall {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = commands.add_parser(
        "sframe-bench",
        help="time frame protection against bare AES-GCM, side by side",
        description=(
            "Time protect/unprotect of Opus, VP8 and H.264 frames of 100 and 20,000 bytes "
            "(SFrame suite AES_128_GCM_SHA256_128) against bare AESGCM.encrypt/decrypt on the "
            "same sizes, alternating the two in one run, and print microseconds and ratios."
        ),
    )
    bench.add_argument("--json", action="store_true", help="print the results as JSON")
    bench.add_argument(
        "--number", type=int, default=1000, help="calls per timed batch (default 1000)"
    )
    bench.add_argument("--rounds", type=int, default=7, help="batches; the best counts (default 7)")
    bench.set_defaults(func=_sframe_bench)

    media = commands.add_parser(
        "media-bench",
        help="CPU of a plain and an encrypted loopback video call, side by side",
        description=(
            "Run the same 640x480 30 fps VP8 + Opus loopback call plain and end-to-end encrypted, "
            "alternating, and print CPU seconds per media second for each and their ratio."
        ),
    )
    media.add_argument("--json", action="store_true", help="print the results as JSON")
    media.add_argument(
        "--seconds", type=float, default=5.0, help="media seconds measured per call (default 5)"
    )
    media.add_argument(
        "--rounds", type=int, default=3, help="plain/encrypted pairs; the best counts (default 3)"
    )
    media.set_defaults(func=_media_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sealcall`` command line."""
    args = build_parser().parse_args(argv)
    if getattr(args, "number", 1) < 1 or getattr(args, "rounds", 1) < 1:
        print("sealcall: --number and --rounds must be at least 1", file=sys.stderr)
        return 2
    if getattr(args, "seconds", 1.0) <= 0:
        print("sealcall: --seconds must be positive", file=sys.stderr)
        return 2
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

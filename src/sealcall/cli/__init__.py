"""The ``sealcall`` command line. Entry points only: every capability lives in the library."""

import argparse
import logging
import sys
from collections.abc import Sequence

from sealcall import __version__

from . import app, bench, calls, group, server, sfu


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sealcall`` command."""
    parser = argparse.ArgumentParser(
        prog="sealcall",
        description="End-to-end encrypted voice and video calls over Matrix (SFrame, RFC 9605).",
    )
    parser.add_argument("--version", action="version", version=f"sealcall {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    server.add_parsers(commands)
    calls.add_parsers(commands)
    group.add_parsers(commands)
    app.add_parsers(commands)
    sfu.add_parsers(commands)

    sframe = commands.add_parser(
        "sframe-bench",
        help="time frame protection against bare AES-GCM, side by side",
        description=(
            "Time protect/unprotect of Opus, VP8 and H.264 frames of 100 and 20,000 bytes "
            "(SFrame suite AES_128_GCM_SHA256_128) against bare AESGCM.encrypt/decrypt on the "
            "same sizes, alternating the two in one run, and print microseconds and ratios."
        ),
    )
    sframe.add_argument("--json", action="store_true", help="print the results as JSON")
    sframe.add_argument(
        "--number", type=int, default=1000, help="calls per timed batch (default 1000)"
    )
    sframe.add_argument(
        "--rounds", type=int, default=7, help="batches; the best counts (default 7)"
    )
    sframe.set_defaults(func=bench.sframe_bench)
    bench.add_soak_parser(commands)
    bench.add_app_soak_parser(commands)
    bench.add_mesh_bench_parser(commands)
    bench.add_net_bench_parser(commands)
    bench.add_sfu_bench_parser(commands)

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
    media.set_defaults(func=bench.media_bench)

    setup = commands.add_parser(
        "setup-bench",
        help="time each step of setting up a video call between two sealcall clients",
        description=(
            "Start an embedded Synapse unless --homeserver is given, place --calls video calls "
            "between two sealcall clients in an encrypted DM, one after the other, and print "
            "the median, 90th percentile and minimum milliseconds from place_call to each step: "
            "offer created, invite sent and delivered, answer created, sent and received, ICE "
            "and DTLS connected on each side, call connected, first decrypted frame each way."
        ),
    )
    setup.add_argument("--json", action="store_true", help="print the results as JSON")
    setup.add_argument("--calls", type=int, default=10, help="calls to place (default 10)")
    setup.add_argument("--homeserver", metavar="URL", help="use this homeserver instead")
    setup.add_argument(
        "--alice", type=server._account, metavar="@USER:HS=PASSWORD", help="caller account"
    )
    setup.add_argument(
        "--bob", type=server._account, metavar="@USER:HS=PASSWORD", help="callee account"
    )
    setup.set_defaults(func=bench.setup_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sealcall`` command line."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # nio reports every Olm session it sets up as a warning; that is routine, not a problem.
    logging.getLogger("nio").setLevel(logging.ERROR)
    if getattr(args, "number", 1) < 1 or getattr(args, "rounds", 1) < 1:
        print("sealcall: --number and --rounds must be at least 1", file=sys.stderr)
        return 2
    if getattr(args, "seconds", 1.0) <= 0:
        print("sealcall: --seconds must be positive", file=sys.stderr)
        return 2
    result: int = args.func(args)
    return result

"""``sealcall sframe-bench``, ``media-bench``, ``setup-bench``, ``net-bench``, ``soak`` and
``app-soak``."""

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


def soak(args: argparse.Namespace) -> int:
    from sealcall.bench.soak import Sample, run

    def show(s: Sample) -> None:
        alice = f"alice RSS {s.alice_rss_mb:>6.1f} MB heap {s.alice_heap_mb:>5.2f} MB"
        bob = f"bob RSS {s.bob_rss_mb:>6.1f} MB heap {s.bob_heap_mb:>5.2f} MB"
        frames = f"decrypted a->b {s.frames_alice_to_bob:>6} b->a {s.frames_bob_to_alice:>6}"
        print(
            f"{s.seconds:>6.1f} s  {alice}  {bob}  {frames}  {s.connections}",
            flush=True,
        )

    if not args.json:
        print("Soak: an encrypted 640x480 VP8 + Opus call each way, two processes", flush=True)
    report = asyncio.run(
        run(
            args.minutes,
            interval=args.interval,
            loss=args.loss / 100,
            on_sample=(lambda _: None) if args.json else show,
        )
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"growth after the first {report['warmup_seconds']:.0f} s, MB per minute:")
    for side in ("alice", "bob"):
        growth = report[side]
        assert isinstance(growth, dict)
        print(
            f"  {side:<5}  RSS {growth['rss_mb_per_minute']}  heap {growth['heap_mb_per_minute']}"
        )
    if not report["media_flowing_at_end"]:
        print(f"media had stopped by the end (connections {report['connections_at_end']})")
    return 0


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _count(text: str) -> int:
    """A whole number, at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _percent(text: str) -> float:
    """A loss level in percent, 0 up to (not including) 100."""
    value = float(text)
    if not 0.0 <= value < 100.0:
        raise argparse.ArgumentTypeError(f"must be a percentage from 0 up to 100, got {text}")
    return value


def _soak_options(parser: argparse.ArgumentParser) -> None:
    """The options ``soak`` and ``app-soak`` share: --json, --minutes, --interval."""
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--minutes", type=_positive, default=5.0, help="call length; fractions allowed (default 5)"
    )
    parser.add_argument(
        "--interval", type=_positive, default=5.0, help="seconds between samples (default 5)"
    )


def add_soak_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``sealcall soak``."""
    parser = commands.add_parser(
        "soak",
        help="memory of a long encrypted video call, sampled as it goes",
        description=(
            "Hold one end-to-end encrypted 640x480 VP8 + Opus call each way between two VoIP "
            "devices, this process and a child (real call engine, call events over a pipe, real "
            "aiortc over loopback) for --minutes; sample each process's RSS and Python heap "
            "(tracemalloc), the frames decrypted each way and the connection states every "
            "--interval seconds, and print the growth per minute after the first minute (a third "
            "of the call if shorter). The caller reads its remote tracks, the callee does not."
        ),
    )
    _soak_options(parser)
    parser.add_argument(
        "--loss",
        type=_percent,
        default=0.0,
        metavar="PERCENT",
        help="drop this percentage of the call's packets each way at random (default 0)",
    )
    parser.set_defaults(func=soak)


def app_soak(args: argparse.Namespace) -> int:
    from sealcall.bench.app_soak import AppSoakError, Sample, run

    def show(s: Sample) -> None:
        python = f"python RSS {s.python_rss_mb:>6.1f} heap {s.python_heap_mb:>6.2f}"
        pages = (
            f"JS heap page {s.alice_js_heap_mb:>5.2f}/{s.bob_js_heap_mb:>5.2f}"
            f" worker {s.alice_worker_heap_mb:>5.2f}/{s.bob_worker_heap_mb:>5.2f}"
        )
        chromium = (
            f"chromium RSS {s.chromium_rss_mb:>7.1f} (renderers {s.chromium_renderer_rss_mb:>6.1f})"
        )
        frames = (
            f"video a->b {s.video_alice_to_bob:>6} b->a {s.video_bob_to_alice:>6}"
            f" audio a->b {s.audio_alice_to_bob:>6} b->a {s.audio_bob_to_alice:>6}"
        )
        print(
            f"{s.seconds:>6.1f} s  {python}  {pages}  {chromium} MB  {frames}  {s.call_states}",
            flush=True,
        )

    def say(line: str) -> None:
        print(line, flush=True)

    if not args.json:
        say("App soak: a video call between two sealcall app pages in Debian's Chromium")
    quiet = args.json
    try:
        report = asyncio.run(
            run(
                args.minutes,
                interval=args.interval,
                on_sample=(lambda _: None) if quiet else show,
                progress=(lambda _: None) if quiet else say,
            )
        )
    except AppSoakError as error:
        print(f"sealcall app-soak: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    growth = report["growth_per_minute"]
    rates = report["frames_per_second"]
    assert isinstance(growth, dict)
    assert isinstance(rates, dict)
    print(f"growth per minute after the first {report['warmup_seconds']:.0f} s:")
    for name, value in growth.items():
        unit = "CPU s/min" if name.endswith("cpu_seconds") else "MB/min"
        print(f"  {name:<22} {value} {unit}")
    print("frames decrypted per second: " + ", ".join(f"{k} {v}" for k, v in rates.items()))
    if report["media_flowing_throughout"]:
        print("frames flowed each way, audio and video, between every two samples")
    else:
        print(f"media stalled: {report['media_stalls']}")
    print(f"call states at the end (alice/bob): {report['call_states_at_end']}")
    return 0


def add_app_soak_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``sealcall app-soak``."""
    parser = commands.add_parser(
        "app-soak",
        help="memory and CPU of a long video call between two sealcall app pages",
        description=(
            "Start the embedded Synapse, two accounts with an encrypted DM, their sealcall app"
            " (CallApp and page server) in this process and their pages in Debian's Chromium"
            " (fake camera and microphone; needs Playwright, pip install -e '.[dev]', and"
            " apt-get install chromium; no browser is downloaded). One page calls the other with"
            " video through the page's buttons and the call is held for --minutes. Every"
            " --interval seconds it samples this process's RSS, Python heap (tracemalloc) and"
            " CPU, each page's JS heap, the Chromium processes' RSS and CPU, the frames each"
            " page's worker decrypted and both call states, and prints the growth per minute"
            " after the first minute (a third of the call if shorter)."
        ),
    )
    _soak_options(parser)
    parser.set_defaults(func=app_soak)


def sfu_bench(args: argparse.Namespace) -> int:
    from sealcall.bench.sfu_bench import report_text, run, soak, soak_text
    from sealcall.bench.sfu_load import parse_loads

    try:
        loads = parse_loads(args.loads)
    except ValueError as error:
        print(f"sealcall sfu-bench: --loads: {error}", file=sys.stderr)
        return 2
    if args.soak_seconds is not None:
        (publishers, subscribers), *_ = loads
        report = asyncio.run(
            soak(publishers, subscribers, args.soak_seconds, args.rss_every, args.flat_after)
        )
        print(json.dumps(report, indent=2) if args.json else soak_text(report))
        return 0
    report = asyncio.run(run(loads, args.seconds))
    print(json.dumps(report, indent=2) if args.json else report_text(report))
    return 0


def add_sfu_bench_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``sealcall sfu-bench``."""
    parser = commands.add_parser(
        "sfu-bench",
        help="CPU per forwarded packet: the sealcall SFU next to Janus's VideoRoom",
        description=(
            "Put the same load (P publishers replaying pre-encoded VP8 + Opus, S subscribers"
            " counting RTP without decoding) through the sealcall SFU server and through"
            " Janus's VideoRoom (Debian package janus, run in a network namespace of its own:"
            " needs root and iproute2), one after the other for each load, and print each"
            " one's CPU microseconds per forwarded packet, latency p50/p99, RSS per participant"
            " and the ratio of the CPU figures (the aim: at most 0.5)."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--seconds", type=_positive, default=20.0, help="measured seconds per load and SFU"
    )
    parser.add_argument(
        "--loads", default="2x4,4x8", help="publishers x subscribers, comma-separated"
    )
    parser.add_argument(
        "--soak-seconds",
        type=_positive,
        default=None,
        help=(
            "instead: a long run of the sealcall SFU alone under the first load, sampling its"
            " RSS (is it flat after the first minute?)"
        ),
    )
    parser.add_argument(
        "--rss-every", type=_positive, default=30.0, help="soak: seconds between RSS samples"
    )
    parser.add_argument(
        "--flat-after",
        type=_positive,
        default=60.0,
        help="soak: judge the RSS trend from this many seconds on (default 60)",
    )
    parser.set_defaults(func=sfu_bench)


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


def mesh_bench(args: argparse.Namespace) -> int:
    from sealcall.bench.mesh_bench import BenchError, run

    try:
        report = asyncio.run(
            run(seconds=args.seconds, width=args.width, height=args.height, compare=args.compare)
        )
    except (BenchError, TimeoutError) as error:
        print(f"sealcall mesh-bench: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"One participant's process CPU, {report['media']}")
    cases = [("1:1 call", "one_to_one"), ("4-party mesh", "mesh_4")]
    if args.compare:
        cases.append(("mesh, 1 encoder/peer", "mesh_4_encoder_per_connection"))
    for label, key in cases:
        case = report[key]
        video = ", ".join(str(n) for n in case["video_frames_decoded"])
        print(
            f"  {label:<21} {case['cpu_per_second']:.3f} CPU s/s"
            f"  (video frames encoded {case['video_frames_encoded']}, decoded per peer {video})"
        )
    print(f"  ratio mesh/1:1        {report['ratio']:.3f}  (aim <= {report['aim']})")
    if not report["full_rate"]:
        print("  (video fell below 27 fps in some case: the machine was too busy to compare)")
    if args.compare:
        ratio = report["ratio_encoder_per_connection"]
        print(f"  ratio without sharing {ratio:.3f}  (one encoder per peer / 1:1)")
    return 0


def add_mesh_bench_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``sealcall mesh-bench``."""
    parser = commands.add_parser(
        "mesh-bench",
        help="one participant's CPU in a 4-party video mesh next to a 1:1 call",
        description=(
            "Run one participant in its own process with end-to-end encrypted VP8 + Opus each way "
            "over loopback (media only, no homeserver), first with one peer (a 1:1 call), then "
            "with three (a 4-party full mesh, encoding once for all peers), and print its process "
            "CPU seconds per second of media in each case and their ratio. With --compare, also "
            "the mesh with one encoder per connection, as browsers run it."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--seconds",
        type=_positive,
        default=10.0,
        help="media seconds measured per case (default 10)",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also measure the mesh with one encoder per connection (as browsers do)",
    )
    parser.add_argument("--width", type=int, default=640, help="video width (default 640)")
    parser.add_argument("--height", type=int, default=480, help="video height (default 480)")
    parser.set_defaults(func=mesh_bench)


def net_bench(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from sealcall.bench.net_bench import report_text, run
    from sealcall.bench.net_call import PeerError
    from sealcall.bench.netns import LabError
    from sealcall.homeserver import HomeserverError
    from sealcall.turn import TurnError

    losses = [loss / 100 for loss in args.loss]
    try:
        with tempfile.TemporaryDirectory(prefix="sealcall-net-bench-") as work:
            report = asyncio.run(
                run(
                    Path(work),
                    seconds=args.seconds,
                    losses=losses,
                    outage_s=args.outage,
                    setup_calls=args.setup_calls,
                    reorder=not args.no_reorder,
                )
            )
    except (LabError, HomeserverError, TurnError, PeerError, TimeoutError) as error:
        print(f"sealcall net-bench: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else report_text(report))
    return 0


def add_net_bench_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``sealcall net-bench``."""
    parser = commands.add_parser(
        "net-bench",
        help="a call through TURN across network namespaces under loss, delay and an outage",
        description=(
            "Make a lab of network namespaces (hosts A and B that cannot reach each other, a "
            "router that impairs host A's link in user space, Synapse and coturn on a server), "
            "call from A to B through TURN, and for each loss level (with 100 +- 30 ms delay) "
            "print frames sent and decoded each way per kind, video freezes and the bitrate; "
            "then how long the picture takes to come back after a short outage, and the call "
            "setup time direct (A and B can reach each other) versus relayed (TURN over UDP; "
            "the homeserver's TURN URIs as listed; from a host A whose link drops all UDP, "
            "TURN over TCP). Needs root "
            "(network namespaces), iproute2, coturn and Synapse."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--seconds", type=_positive, default=10.0, help="seconds measured per loss level (10)"
    )
    parser.add_argument(
        "--loss",
        type=_percent,
        nargs="+",
        default=[0.0, 5.0, 20.0],
        help="loss levels in percent (default: 0 5 20)",
    )
    parser.add_argument(
        "--outage", type=_positive, default=1.0, help="seconds of the outage (default 1)"
    )
    parser.add_argument(
        "--setup-calls",
        type=_count,
        default=2,
        help="calls placed per mode (direct, relayed) for the setup time (default 2)",
    )
    parser.add_argument(
        "--no-reorder",
        action="store_true",
        help="jitter keeps packets in order (by default each packet's delay is drawn on its "
        "own, so packets overtake each other)",
    )
    parser.set_defaults(func=net_bench)

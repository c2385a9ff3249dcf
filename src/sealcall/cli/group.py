"""``sealcall group``: join (or start) a room's group call from a terminal or a bot."""

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from sealcall.bench.group_demo import report_json, report_text, run_group_demo
from sealcall.calls import CallState
from sealcall.demo import homeserver
from sealcall.group import LeftReason, Member, MemberDevice
from sealcall.group.focus import valid_sfu_url
from sealcall.media import LOOPBACK
from sealcall.session import GroupCallSession
from sealcall.transport.matrix import MatrixTransport

from .options import local_media, login, login_options, media_options, relay_only_option, run


def _name(device: MemberDevice) -> str:
    return f"{device.user_id} ({device.device_id})"


def _show_progress(session: GroupCallSession) -> None:
    def say(text: str) -> None:
        print(f"[group] {text}", flush=True)

    def joined(member: Member) -> None:
        say(f"{_name(member.device)} joined")

    def left(member: Member, reason: LeftReason) -> None:
        say(f"{_name(member.device)} left ({reason.value})")

    def state(device: MemberDevice, old: CallState, new: CallState) -> None:
        if new in (CallState.CONNECTED, CallState.RECONNECTING, CallState.ENDED):
            say(f"{_name(device)}: {new.value}")

    session.on("member_joined", joined)
    session.on("member_left", left)
    session.on("member_rejoined", lambda old, new: say(f"{_name(new.device)} rejoined"))
    session.on("peer_state_changed", state)
    session.on("send_key_changed", lambda index: say(f"now sending with media key {index}"))
    session.on(
        "active_speaker_changed",
        lambda device: say(f"speaking: {_name(device)}" if device else "silence"),
    )


async def _stay(seconds: float) -> None:
    """Wait ``seconds`` (0: until SIGINT or SIGTERM)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds or None)


async def _run_group(args: argparse.Namespace) -> int:
    if args.sfu is not None and not valid_sfu_url(args.sfu):
        print("sealcall group: --sfu must be http(s)://host[:port][/path]", file=sys.stderr)
        return 2
    transport = await login(args)
    try:
        await transport.start()
        room_id = args.room
        if args.create:
            room_id = await transport.create_group_room(args.room, invite=args.invite)
            print(f"created group room {room_id}", flush=True)
        else:
            await transport.enter_room(room_id)
        session = _session(args, transport, room_id, await transport.ice_servers())
        _show_progress(session)
        await session.join()
        print(f"[group] joined the call in {room_id}", flush=True)
        started = time.monotonic()
        await _stay(args.duration)
        stats = session.stats()
        await session.leave()
        if args.json:
            report = {"room_id": room_id, "seconds": time.monotonic() - started, **stats}
            print(json.dumps(report), flush=True)
        return 0
    finally:
        await transport.stop()


def _session(
    args: argparse.Namespace, transport: MatrixTransport, room_id: str, ice: Any
) -> GroupCallSession:
    return GroupCallSession(
        transport,
        room_id,
        video=args.video,
        media=local_media(args),
        ice_servers=ice,
        ice_source=transport.ice_servers,
        host_addresses=LOOPBACK if args.loopback else None,
        sfu_url=args.sfu,
        audio_level=not args.no_speaking,
        relay_only=args.relay_only,
    )


def group(args: argparse.Namespace) -> int:
    """``sealcall group``."""
    return run(_run_group(args))


async def _run_group_demo(args: argparse.Namespace) -> int:
    data = Path(args.data_dir).resolve() if args.data_dir else None

    def progress(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    async with homeserver(data) as server:
        progress(f"homeserver ready at {server.url}")
        report = await run_group_demo(
            server,
            participants=args.participants,
            seconds=args.seconds,
            video_size=args.video_size,
            interval=args.interval,
            progress=progress,
            sfu=args.sfu,
        )
    print(report_json(report) if args.json else report_text(report), flush=True)
    return 0


def group_demo(args: argparse.Namespace) -> int:
    """``sealcall group-demo``."""
    return run(_run_group_demo(args))


def add_parsers(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the group command."""
    parser = commands.add_parser(
        "group",
        help="join (or start) the group call of a room",
        description=(
            "Join ROOM's group call (a full mesh: every member device connects to every other;"
            " or, when the call's oldest membership names an SFU (--sfu names ours), one"
            " connection to that SFU; either way each sender's media is end-to-end encrypted"
            " with its own key, which changes whenever someone leaves), show who joins, leaves"
            " and speaks, and leave after --duration"
            " seconds (0: at Ctrl-C or SIGTERM). With --create, ROOM is the new room's name and"
            " --invite says whom to invite. The room must be end-to-end encrypted."
        ),
    )
    parser.add_argument("room", help="room id (or, with --create, the new room's name)")
    parser.add_argument("--video", action="store_true", help="send video too (default: voice)")
    parser.add_argument(
        "--duration", type=float, default=0.0, help="seconds to stay (0: until interrupted)"
    )
    parser.add_argument("--create", action="store_true", help="create an encrypted group room")
    parser.add_argument(
        "--invite", action="append", default=[], metavar="USER_ID", help="invite (with --create)"
    )
    parser.add_argument("--json", action="store_true", help="print frame statistics as JSON")
    parser.add_argument(
        "--sfu",
        metavar="URL",
        help="prefer this SFU (`sealcall sfu`, http(s)://host:port) in our call membership; the"
        " call goes through the SFU its oldest membership names, if any",
    )
    parser.add_argument(
        "--no-speaking",
        action="store_true",
        help="through an SFU: send no RFC 6464 audio levels (the SFU cannot tell who speaks)",
    )
    relay_only_option(parser)
    login_options(parser)
    media_options(parser)
    parser.set_defaults(func=group)

    parser = commands.add_parser(
        "group-demo",
        help="N participants in one group call on an embedded homeserver, measured",
        description=(
            "Start an embedded Synapse, register N accounts and run each participant in its own"
            " process: all join one end-to-end encrypted group call in a new room; at 40 % of"
            " --seconds one leaves (the others rotate their keys), at 60 % another is killed"
            " with SIGKILL (its delayed leave removes it). Reports each pair's setup time, the"
            " frames decrypted from each other member, for each departure how long it took to"
            " vanish from the others' view and for their new keys to be used and decrypted,"
            " CPU per participant and memory over time (RSS and Python heap, growth after the"
            " first minute)."
        ),
    )
    parser.add_argument("--participants", type=int, default=4, help="how many (default 4)")
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="how long the call lasts (default 60)"
    )
    parser.add_argument(
        "--video-size", default="320x240", help="each participant's video, WxH (default 320x240)"
    )
    parser.add_argument(
        "--interval", type=float, default=5.0, help="seconds between memory samples (default 5)"
    )
    parser.add_argument("--data-dir", help="keep the homeserver's data here (default: temporary)")
    parser.add_argument(
        "--sfu",
        action="store_true",
        help="call through a sealcall SFU started on 127.0.0.1 (real admission) instead of a mesh",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=group_demo)

"""``sealcall demo`` and ``sealcall homeserver up|down|add-user``."""

import argparse
import asyncio
import ipaddress
import sys
from pathlib import Path

from sealcall.demo import report_json, report_text, run_demo
from sealcall.homeserver import Homeserver, HomeserverError, stop_pid_file
from sealcall.turn import TurnError, TurnServer

DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "sealcall" / "homeserver"


def _account(text: str) -> tuple[str, str]:
    user, sep, password = text.partition("=")
    if not sep or not user.startswith("@") or not password:
        raise argparse.ArgumentTypeError("expected @user:server=password")
    return user, password


def demo(args: argparse.Namespace) -> int:
    accounts = None
    if args.homeserver:
        if not (args.alice and args.bob):
            print("sealcall demo: --homeserver needs --alice and --bob accounts", file=sys.stderr)
            return 2
        accounts = (args.alice, args.bob)
    progress = (lambda _: None) if args.json else (lambda line: print(line, flush=True))
    try:
        report = asyncio.run(
            run_demo(
                homeserver_url=args.homeserver,
                accounts=accounts,
                data_dir=args.data_dir,
                seconds=args.seconds,
                progress=progress,
            )
        )
    except (HomeserverError, TimeoutError, RuntimeError) as error:
        print(f"sealcall demo: {error}", file=sys.stderr)
        return 1
    print(report_json(report) if args.json else report_text(report))
    return 0


async def _up(server: Homeserver, turn: TurnServer | None) -> None:
    """Start coturn (if asked) and then Synapse, which hands out credentials for it."""
    if turn is not None:
        await turn.start()
    try:
        await server.start()
    except BaseException:
        if turn is not None:
            await turn.stop()
        raise


def turn_server(data_dir: Path, args: argparse.Namespace) -> TurnServer:
    """coturn as ``homeserver up --turn`` asks: on ``--turn-ip`` (relaying from it too); relays
    into private, loopback and link-local ranges are refused, except loopback when it listens
    on loopback (its only clients are on this machine)."""
    ip = ipaddress.ip_address(args.turn_ip)
    return TurnServer(
        data_dir,
        listening_ips=[str(ip)],
        allowed_peer_networks=["127.0.0.0/8"] if ip.is_loopback else [],
        external_ip=args.turn_external_ip,
        port=args.turn_port,
    )


def homeserver(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir)
    # coturn lives in the homeserver's folder: `down` finds and stops both.
    turn = None
    if args.turn:
        try:
            turn = turn_server(data_dir / "turn", args)
        except ValueError as error:
            print(f"sealcall homeserver: {error}", file=sys.stderr)
            return 2
    server = Homeserver(data_dir, port=args.port, turn=turn)
    try:
        if args.action == "up":
            asyncio.run(_up(server, turn))
            print(f"homeserver running at {server.url} (data in {server.data_dir})")
            if turn is not None:
                print(f"TURN server (coturn) at {', '.join(turn.uris)}")
            print(f"stop it with: sealcall homeserver down --data-dir {server.data_dir}")
        elif args.action == "down":
            stopped = stop_pid_file(server.pid_path)
            print("homeserver stopped" if stopped else "no homeserver was running there")
            if stop_pid_file(TurnServer(data_dir / "turn").pid_path):
                print("TURN server stopped")
        else:
            if not args.username:
                raise HomeserverError("add-user needs a username")
            server.load()
            account = asyncio.run(server.register(args.username, args.password, admin=args.admin))
            print(f"{account.user_id} password: {account.password}")
    except (HomeserverError, TurnError) as error:
        print(f"sealcall homeserver: {error}", file=sys.stderr)
        return 1
    return 0


def add_parsers(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the demo and homeserver commands."""
    parser = commands.add_parser(
        "demo",
        help="two accounts place an encrypted video call through a local Synapse",
        description=(
            "Start an embedded Synapse (SQLite, 127.0.0.1) unless --homeserver is given, create "
            "two accounts and an end-to-end encrypted DM, and run a video call with encrypted "
            "media: a mute, a camera off/on and a hang-up. Print the setup time, frames each "
            "way, bitrate and the call history as the room records it."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--data-dir", type=Path, help="keep the homeserver's folder here")
    parser.add_argument("--homeserver", metavar="URL", help="use this homeserver instead")
    parser.add_argument(
        "--alice", type=_account, metavar="@USER:HS=PASSWORD", help="caller account"
    )
    parser.add_argument("--bob", type=_account, metavar="@USER:HS=PASSWORD", help="callee account")
    parser.add_argument("--seconds", type=float, default=2.0, help="call length (default 2)")
    parser.set_defaults(func=demo)

    parser = commands.add_parser(
        "homeserver",
        help="run a private Synapse on this machine",
        description=(
            "Start (up) or stop (down) a Synapse on 127.0.0.1, or add an account to it. With "
            "--turn, up also starts a TURN server (coturn) beside it, whose time-limited "
            "credentials Synapse hands to clients; down stops both."
        ),
    )
    parser.add_argument("action", choices=["up", "down", "add-user"])
    parser.add_argument("username", nargs="?", help="for add-user: the new account's name")
    parser.add_argument("--password", help="for add-user (default: a random one, printed)")
    parser.add_argument("--admin", action="store_true", help="for add-user: a server admin")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="its folder")
    parser.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument(
        "--turn",
        action="store_true",
        help="for up: also run coturn (UDP and TCP on --turn-ip; it refuses to relay into "
        "private, loopback and link-local addresses, except loopback when on 127.0.0.1)",
    )
    parser.add_argument("--turn-port", type=int, help="coturn's port (default: a free one)")
    parser.add_argument(
        "--turn-ip",
        default="127.0.0.1",
        metavar="ADDR",
        help="coturn's listening and relay address (default 127.0.0.1: calls on this machine "
        "only; give an address the callers can reach for calls across networks)",
    )
    parser.add_argument(
        "--turn-external-ip",
        metavar="ADDR",
        help="the public address of --turn-ip behind 1:1 NAT (handed out in the TURN URIs)",
    )
    parser.set_defaults(func=homeserver)

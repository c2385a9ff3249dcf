"""``sealcall demo`` and ``sealcall homeserver up|down|add-user``."""

import argparse
import asyncio
import sys
from pathlib import Path

from sealcall.demo import report_json, report_text, run_demo
from sealcall.homeserver import Homeserver, HomeserverError, stop_pid_file

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


def homeserver(args: argparse.Namespace) -> int:
    server = Homeserver(args.data_dir, port=args.port)
    try:
        if args.action == "up":
            asyncio.run(server.start())
            print(f"homeserver running at {server.url} (data in {server.data_dir})")
            print(f"stop it with: sealcall homeserver down --data-dir {server.data_dir}")
        elif args.action == "down":
            stopped = stop_pid_file(server.pid_path)
            print("homeserver stopped" if stopped else "no homeserver was running there")
        else:
            if not args.username:
                raise HomeserverError("add-user needs a username")
            if not server.config_path.exists():
                raise HomeserverError(
                    f"no homeserver in {server.data_dir}: run 'sealcall homeserver up'"
                )
            server.configure()
            account = asyncio.run(server.register(args.username, args.password, admin=args.admin))
            print(f"{account.user_id} password: {account.password}")
    except HomeserverError as error:
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
        description="Start (up) or stop (down) a Synapse on 127.0.0.1, or add an account to it.",
    )
    parser.add_argument("action", choices=["up", "down", "add-user"])
    parser.add_argument("username", nargs="?", help="for add-user: the new account's name")
    parser.add_argument("--password", help="for add-user (default: a random one, printed)")
    parser.add_argument("--admin", action="store_true", help="for add-user: a server admin")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="its folder")
    parser.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")
    parser.set_defaults(func=homeserver)

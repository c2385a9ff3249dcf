"""Options and helpers shared by the commands: logging in, the store, media files, running."""

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from sealcall.calls import RelayUnavailableError
from sealcall.media import file_source
from sealcall.session import LocalMedia
from sealcall.transport.matrix import Credentials, MatrixTransport, MatrixTransportError

STORE_ROOT = Path.home() / ".local" / "share" / "sealcall" / "clients"


def store_path(args: argparse.Namespace) -> Path:
    """The folder for this account's keys, sessions and sync state (``--store`` or per user)."""
    if args.store:
        return Path(args.store)
    return STORE_ROOT / (args.user or "default").strip("@").replace(":", "_")


async def login(args: argparse.Namespace) -> MatrixTransport:
    """A transport for the account the login options name (token, password or saved login)."""
    store = store_path(args)
    if args.access_token:
        if not (args.user and args.device_id):
            raise MatrixTransportError("--access-token needs --user and --device-id")
        credentials = Credentials(args.homeserver, args.user, args.device_id, args.access_token)
        transport = MatrixTransport.from_credentials(credentials, store)
    elif args.password:
        if not args.user:
            raise MatrixTransportError("--password needs --user")
        transport = await MatrixTransport.login(args.homeserver, args.user, args.password, store)
    else:
        saved = MatrixTransport.saved_credentials(store)
        if saved is None:
            raise MatrixTransportError(
                f"no saved login in {store}: give --user and --password (or SEALCALL_PASSWORD)"
            )
        transport = MatrixTransport.from_credentials(saved, store)
    return transport


def local_media(args: argparse.Namespace) -> LocalMedia:
    """What we send: ``--media`` looped, or synthetic audio and video without it."""
    if not getattr(args, "media", None):
        return LocalMedia()
    path = args.media

    def audio() -> Any:
        return file_source(path, loop=True).audio

    def video() -> Any:
        return file_source(path, loop=True).video

    return LocalMedia(microphone=audio, camera=video)


def run(coroutine: Coroutine[Any, Any, Any]) -> int:
    """Run a command's coroutine; its result is the exit status (login errors and timeouts: 1)."""
    try:
        return int(asyncio.run(coroutine))
    except (MatrixTransportError, TimeoutError, RelayUnavailableError) as error:
        print(f"sealcall: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def relay_only_option(parser: argparse.ArgumentParser) -> None:
    """Add --relay-only."""
    parser.add_argument(
        "--relay-only",
        action="store_true",
        help=(
            "connect only through the TURN relay the homeserver offers, so the other side never"
            " learns your IP address (fails if it offers none)"
        ),
    )


def login_options(parser: argparse.ArgumentParser) -> None:
    """Add --homeserver, --user, --password, --access-token, --device-id and --store."""
    env = os.environ.get
    parser.add_argument(
        "--homeserver",
        default=env("SEALCALL_HOMESERVER", "http://127.0.0.1:8008"),
        help="homeserver URL (env SEALCALL_HOMESERVER)",
    )
    parser.add_argument(
        "--user", default=env("SEALCALL_USER"), help="our user id, @name:server (env SEALCALL_USER)"
    )
    parser.add_argument(
        "--password",
        default=env("SEALCALL_PASSWORD"),
        help="password (env SEALCALL_PASSWORD); not needed once logged in",
    )
    parser.add_argument(
        "--access-token",
        default=env("SEALCALL_ACCESS_TOKEN"),
        help="log in with a token instead (with --device-id)",
    )
    parser.add_argument(
        "--device-id", default=env("SEALCALL_DEVICE_ID"), help="the token's device id"
    )
    parser.add_argument(
        "--store",
        help="folder for keys, sessions and sync state"
        " (default: per user under ~/.local/share/sealcall/clients)",
    )


def media_options(parser: argparse.ArgumentParser) -> None:
    """Add --media, --record and --loopback."""
    parser.add_argument(
        "--media", metavar="FILE", help="send this media file (default: synthetic audio and video)"
    )
    parser.add_argument("--record", metavar="FILE", help="save the received media to this file")
    parser.add_argument(
        "--loopback", action="store_true", help="ICE on 127.0.0.1 only (both ends on this machine)"
    )

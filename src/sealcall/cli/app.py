"""``sealcall app``: the calling app in a local browser page."""

import argparse
import asyncio
import contextlib
import html
import os
import signal
import sys
import tempfile
import webbrowser
from collections.abc import Callable
from pathlib import Path

from sealcall.calls import CallPolicy
from sealcall.web.app import CallApp
from sealcall.web.page_sfu import sfu_socket_url
from sealcall.web.server import PageServer

from .options import login, login_options, relay_only_option, run, store_path


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def open_page(url: str, folder: Path, browse: Callable[[str], object] = webbrowser.open) -> Path:
    """Open the page in the browser through a file only we can read (0600, in ``folder``) that
    forwards to ``url``: the secret in ``url`` never goes on a command line (other local users
    can read those, and ``webbrowser`` starts the browser with its URL as an argument).
    Returns the file (remove it when the app stops)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="sealcall-open-", suffix=".html", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        target = html.escape(url, quote=True)
        file.write(
            '<!doctype html><meta charset="utf-8"><meta name="referrer" content="no-referrer">'
            f'<meta http-equiv="refresh" content="0;url={target}"><title>sealcall</title>\n'
        )
    forward = Path(name)
    browse(forward.as_uri())
    return forward


async def _run_app(args: argparse.Namespace) -> int:
    sfu_socket = None if args.sfu is None else sfu_socket_url(args.sfu)
    if args.sfu is not None and sfu_socket is None:
        print("sealcall app: --sfu must be http(s)://host[:port][/path]", file=sys.stderr)
        return 2
    transport = await login(args)
    try:
        await transport.start()
        app = CallApp(
            transport,
            ice_servers=await transport.ice_servers(),
            policy=CallPolicy(ask_unencrypted=True, relay_only=args.relay_only),
            state_dir=str(store_path(args)),
            sfu_url=args.sfu,
            # (Group calls take relay-only from the policy, the page's setting.)
            group_options={"audio_level": False} if args.no_speaking else None,
        )
        server = PageServer(
            app, port=args.port, connect=() if sfu_socket is None else (sfu_socket,)
        )
        url = await server.start()
        forward: Path | None = None
        try:
            # The URL carries this launch's secret: it goes to this terminal and the browser,
            # nowhere else (no log, no command line).
            print(f"sealcall app for {transport.user_id}: {url}", flush=True)
            if not args.no_browser:
                forward = open_page(url, store_path(args))
            await _until_stopped()
        finally:
            if forward is not None:
                forward.unlink(missing_ok=True)
            await app.close()
            await server.stop()
    finally:
        await transport.stop()
    return 0


def app(args: argparse.Namespace) -> int:
    return run(_run_app(args))


def add_parsers(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the app command."""
    parser = commands.add_parser(
        "app",
        help="open the calling app in a browser page",
        description=(
            "Log in (or use the stored login), serve the calling page on 127.0.0.1 and open it:"
            " rooms and their call history, audio and video calls with ringing, call waiting,"
            " mute, camera, screen share, hold, stats, and group calls. The browser does the"
            " media and encrypts every frame (SFrame, in a worker); this process speaks Matrix."
            " The page's address carries a secret made for this launch: only that page is"
            " served. Stop with Ctrl-C."
        ),
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)"
    )
    parser.add_argument(
        "--no-browser", action="store_true", help="print the page's address, do not open it"
    )
    parser.add_argument(
        "--sfu",
        metavar="URL",
        help="group calls through this SFU (`sealcall sfu`, http(s)://host:port): named in our"
        " call memberships; the page connects to it (and to no other SFU)",
    )
    parser.add_argument(
        "--no-speaking",
        action="store_true",
        help="in SFU calls: the page sends no RFC 6464 audio levels (the SFU cannot tell who"
        " speaks)",
    )
    relay_only_option(parser)
    login_options(parser)
    parser.set_defaults(func=app)

"""``sealcall sfu``: serve SFU rooms, admitting current call members through a Matrix account."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from sealcall.sfu.admission_service import AdmissionGate
from sealcall.sfu.server import SfuServer
from sealcall.transport.matrix import MatrixTransportError

from .options import login, login_options


async def _serve(args: argparse.Namespace) -> None:
    transport = await login(args)
    await transport.start()
    url = args.url or f"http://{args.host}:{args.port}"
    gate = AdmissionGate(transport, homeserver_url=args.homeserver, sfu_url=url)
    server = SfuServer(gate, host=args.host, port=args.port)
    await server.start()
    print(
        f"sealcall sfu: serving on http://{args.host}:{server.port} (/admit, /ws) as {url},"
        f" admitting members through {transport.user_id}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.close()
        await gate.close()
        await transport.stop()


def sfu(args: argparse.Namespace) -> int:
    """Run the SFU until SIGINT/SIGTERM."""
    try:
        asyncio.run(_serve(args))
    except (MatrixTransportError, OSError) as error:
        print(f"sealcall sfu: {error}", file=sys.stderr)
        return 1
    return 0


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the sfu command."""
    parser = commands.add_parser(
        "sfu",
        help="forward group calls' encrypted media (an SFU; being built)",
        description=(
            "Serve SFU rooms: a member gets a join token from POST /admit (its Matrix OpenID "
            "token and current call membership, checked through this account, which must be in "
            "the room), then joins over the WebSocket /ws with one WebRTC connection. The SFU "
            "forwards SFrame-encrypted media it cannot read."
        ),
    )
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (and for ICE)")
    parser.add_argument(
        "--url",
        help="this SFU's URL as members name it in foci_preferred (default http://HOST:PORT)",
    )
    login_options(parser)
    parser.set_defaults(func=sfu)

"""``sealcall call``, ``answer`` and ``history``: calls from a terminal or a bot."""

import argparse
import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from sealcall.calls import CallState
from sealcall.calls.room_history import calls_from_timeline
from sealcall.demo import RemoteMediaReader, wait_for
from sealcall.media import LOOPBACK, FileRecorder, file_source
from sealcall.session import CallSession, LocalMedia, VoIP
from sealcall.transport.matrix import Credentials, MatrixTransport, MatrixTransportError

STORE_ROOT = Path.home() / ".local" / "share" / "sealcall" / "clients"


def _store(args: argparse.Namespace) -> Path:
    if args.store:
        return Path(args.store)
    return STORE_ROOT / (args.user or "default").strip("@").replace(":", "_")


async def _login(args: argparse.Namespace) -> MatrixTransport:
    store = _store(args)
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


def _media(args: argparse.Namespace) -> LocalMedia:
    if not getattr(args, "media", None):
        return LocalMedia()
    path = args.media

    def audio() -> Any:
        return file_source(path, loop=True).audio

    def video() -> Any:
        return file_source(path, loop=True).video

    return LocalMedia(microphone=audio, camera=video)


def _show_progress(voip: VoIP, name: str) -> None:
    voip.on(
        "state_changed",
        lambda s, old, new: print(f"[{name}] {s.call_id[:8]}: {new.value}", flush=True),
    )
    voip.on(
        "remote_mute_changed",
        lambda s, audio, video: print(
            f"[{name}] far side: microphone {'off' if audio else 'on'},"
            f" camera {'off' if video else 'on'}",
            flush=True,
        ),
    )
    voip.on("call_ended", lambda s, reason, remote: print(f"[{name}] ended: {reason}", flush=True))


async def _record(session: CallSession, path: str | None) -> FileRecorder | None:
    if not path:
        return None
    recorder = FileRecorder(path)
    for track in session.remote_tracks.values():
        recorder.add_track(track)
    await recorder.start()
    return recorder


def _voip(args: argparse.Namespace, transport: MatrixTransport, ice: Any, name: str) -> VoIP:
    voip = VoIP(
        transport,
        media=_media(args),
        ice_servers=ice,
        host_addresses=LOOPBACK if args.loopback else None,
        state_dir=_store(args),
    )
    _show_progress(voip, name)
    if not args.record:
        RemoteMediaReader(voip)  # play what arrives into nothing; --record reads it instead
    return voip


async def _stay(session: CallSession, voip: VoIP, record: str | None, seconds: float) -> None:
    """Record while connected, hang up after ``seconds`` (0: wait for the far side), close."""
    recorder = await _record(session, record) if session.state is CallState.CONNECTED else None
    deadline = time.monotonic() + (seconds or float("inf"))
    while session.state is not CallState.ENDED and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    if session.state is not CallState.ENDED:
        await session.hangup()
    if recorder is not None:
        await recorder.stop()
    await voip.close()


async def _run_call(args: argparse.Namespace) -> int:
    transport = await _login(args)
    try:
        # The VoIP instance listens before the first sync, so no call event can slip past it.
        voip = _voip(args, transport, await transport.ice_servers(), "call")
        await transport.start()
        room_id = args.room or transport.encrypted_dm_with(args.user_id)
        if room_id is None:
            room_id = await transport.create_dm(args.user_id)
            print(
                f"created an encrypted DM {room_id}; waiting for {args.user_id} to join", flush=True
            )
            await wait_for(
                lambda: args.user_id in transport.room_members(room_id), 120, "the callee to join"
            )
        print(f"room {room_id}", flush=True)
        if not await transport.wait_for_member_devices(room_id):
            print(f"{args.user_id} has no device to encrypt to yet; calling anyway", flush=True)
        session = await voip.place_call(room_id, args.user_id, video=args.video)
        await wait_for(
            lambda: session.state in (CallState.CONNECTED, CallState.ENDED),
            args.ring_timeout,
            "an answer",
        )
        if session.state is not CallState.CONNECTED:
            await voip.close()
            return 1
        await _stay(session, voip, args.record, args.duration)
        return 0
    finally:
        await transport.stop()


async def _run_answer(args: argparse.Namespace) -> int:
    transport = await _login(args)
    answered: list[CallSession] = []
    joiner: asyncio.Future[None] | None = None
    try:
        voip = _voip(args, transport, await transport.ice_servers(), "answer")
        await transport.start()
        joiner = asyncio.ensure_future(_join_invites(transport))

        async def ring(session: CallSession) -> None:
            kind = "video" if session.call.video else "voice"
            print(f"incoming {kind} call from {session.call.peer}", flush=True)
            if not args.auto:
                reply = await asyncio.to_thread(input, "answer? [y/N] ")
                if reply.strip().lower() not in ("y", "yes"):
                    await session.reject()
                    return
            await session.answer(video=session.call.video)
            answered.append(session)

        voip.on("incoming_call", ring)
        try:
            await wait_for(lambda: bool(answered), args.timeout, "an incoming call")
        except TimeoutError:
            print(
                f"no call came: {transport.undecryptable} events could not be decrypted, "
                f"{transport.dropped_plaintext} plaintext call events were dropped, "
                f"{voip.malformed_events} malformed, calls seen: {len(voip.manager.calls)}",
                file=sys.stderr,
            )
            raise
        joiner.cancel()
        session = answered[0]
        await wait_for(
            lambda: session.state in (CallState.CONNECTED, CallState.ENDED), 30, "the connection"
        )
        await _stay(session, voip, args.record, args.duration)
        return 0
    finally:
        if joiner is not None:
            joiner.cancel()
        await transport.stop()


async def _join_invites(transport: MatrixTransport) -> None:
    """Accept room invites as they come (a bot answering calls joins its DMs)."""
    while True:
        for room_id in transport.invites():
            with contextlib.suppress(MatrixTransportError):
                await transport.join(room_id)
        await asyncio.sleep(0.5)


async def _run_history(args: argparse.Namespace) -> int:
    transport = await _login(args)
    try:
        await transport.start()
        entries = calls_from_timeline(await transport.timeline(args.room))
    finally:
        await transport.stop()
    for entry in entries:
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.started_at))
        print(f"{stamp}  {entry.describe()}")
    if not entries:
        print("no calls in this room")
    return 0


def _run(coroutine: Any) -> int:
    try:
        return int(asyncio.run(coroutine))
    except (MatrixTransportError, TimeoutError) as error:
        print(f"sealcall: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def call(args: argparse.Namespace) -> int:
    return _run(_run_call(args))


def answer(args: argparse.Namespace) -> int:
    return _run(_run_answer(args))


def history(args: argparse.Namespace) -> int:
    return _run(_run_history(args))


def _login_options(parser: argparse.ArgumentParser) -> None:
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


def _media_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--media", metavar="FILE", help="send this media file (default: synthetic audio and video)"
    )
    parser.add_argument("--record", metavar="FILE", help="save the received media to this file")
    parser.add_argument(
        "--loopback", action="store_true", help="ICE on 127.0.0.1 only (both ends on this machine)"
    )


def add_parsers(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the call, answer and history commands."""
    parser = commands.add_parser(
        "call",
        help="call a user (an encrypted DM is created if needed)",
        description=(
            "Place an end-to-end encrypted call to USER_ID, show its progress, hang up after"
            " --duration seconds. Exit status 0 if the call was answered."
        ),
    )
    parser.add_argument("user_id", help="whom to call, @name:server")
    parser.add_argument("--video", action="store_true", help="a video call (default: voice)")
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds to stay connected (default 10)"
    )
    parser.add_argument(
        "--ring-timeout", type=float, default=70.0, help="seconds to wait for an answer"
    )
    parser.add_argument("--room", help="the DM room to use (default: found or created)")
    _login_options(parser)
    _media_options(parser)
    parser.set_defaults(func=call)

    parser = commands.add_parser(
        "answer",
        help="wait for a call and answer it",
        description=(
            "Join pending DM invites, wait for an incoming call, ask whether to answer (or"
            " answer at once with --auto), and stay until the call ends (or --duration seconds)."
        ),
    )
    parser.add_argument("--auto", action="store_true", help="answer without asking")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a call")
    parser.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="hang up after this many seconds (0: wait for the caller)",
    )
    _login_options(parser)
    _media_options(parser)
    parser.set_defaults(func=answer)

    parser = commands.add_parser(
        "history",
        help="list the calls in a room",
        description=(
            "Render the call events of ROOM as a call list: who called whom, voice or video,"
            " outcome, duration."
        ),
    )
    parser.add_argument("room", help="room id")
    _login_options(parser)
    parser.set_defaults(func=history)

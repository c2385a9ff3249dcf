"""``sealcall call``, ``answer`` and ``history``: calls from a terminal or a bot."""

import argparse
import asyncio
import contextlib
import sys
import time
from typing import Any

from sealcall.calls import (
    ENCRYPTION_REQUIRED,
    CallError,
    CallPolicy,
    CallState,
    Direction,
    HistoryItem,
    RelayUnavailableError,
)
from sealcall.calls.relay_only import RELAY_UNAVAILABLE
from sealcall.calls.room_history import calls_from_timeline
from sealcall.demo import RemoteMediaReader, wait_for
from sealcall.media import LOOPBACK, FileRecorder
from sealcall.session import CallSession, VoIP
from sealcall.transport.matrix import MatrixTransport, MatrixTransportError

from .options import (
    local_media,
    login,
    login_options,
    media_options,
    relay_only_option,
    run,
    store_path,
)

HOP_BY_HOP = (
    "protected only hop by hop, by the connection's DTLS-SRTP,"
    " not by sealcall's end-to-end frame encryption"
)


def _media_protection(session: CallSession) -> str:
    if session.encrypted:
        return "media: end-to-end encrypted (SFrame)"
    return "media: NOT end-to-end encrypted, protected only hop by hop (DTLS-SRTP)"


def _show_progress(voip: VoIP, name: str) -> None:
    def state_changed(session: CallSession, old: CallState, new: CallState) -> None:
        print(f"[{name}] {session.call_id[:8]}: {new.value}", flush=True)
        if new is CallState.CONNECTED and old is CallState.CONNECTING:
            print(f"[{name}] {_media_protection(session)}", flush=True)

    voip.on("state_changed", state_changed)
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


def _voip(
    args: argparse.Namespace,
    transport: MatrixTransport,
    ice: Any,
    name: str,
    policy: CallPolicy,
) -> VoIP:
    voip = VoIP(
        transport,
        policy=policy,
        media=local_media(args),
        ice_servers=ice,
        ice_source=transport.ice_servers,  # asked again per call: the credentials expire
        host_addresses=LOOPBACK if args.loopback else None,
        state_dir=store_path(args),
    )
    _show_progress(voip, name)
    if not args.record:
        RemoteMediaReader(voip)  # play what arrives into nothing; --record reads it instead
    return voip


async def _stay(session: CallSession, record: str | None, seconds: float) -> None:
    """Record while connected, hang up after ``seconds`` (0: wait for the far side)."""
    recorder = await _record(session, record) if session.state is CallState.CONNECTED else None
    deadline = time.monotonic() + (seconds or float("inf"))
    while session.state is not CallState.ENDED and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    if session.state is not CallState.ENDED:
        with contextlib.suppress(CallError):  # it may end on its own meanwhile
            await session.hangup()
    if recorder is not None:
        await recorder.stop()
    print(_received_summary(session), flush=True)


def _received_summary(session: CallSession) -> str:
    """What arrived from the far side: frames decrypted per kind, and frames dropped."""
    decrypted = {"audio": 0, "video": 0}
    dropped = 0
    pc = session.pc
    for transceiver in pc.getTransceivers() if pc is not None else ():
        counters = pc.receiver_tap(transceiver.receiver).counters  # type: ignore[union-attr]
        decrypted[transceiver.kind] = decrypted.get(transceiver.kind, 0) + counters.frames_decrypted
        dropped += counters.frames_dropped
    return (
        f"[call] received: {decrypted['audio']} audio and {decrypted['video']} video frames"
        f" decrypted, {dropped} dropped"
    )


def _explain_outgoing_refusal(peer: str, by_remote: bool) -> None:
    if by_remote:
        print(
            f"sealcall: {peer} refused the call: its device and ours share no media encryption"
            " (a different sealcall version?)",
            file=sys.stderr,
        )
        return
    print(
        f"sealcall: refused: {peer} answered from an app that cannot encrypt media end to end"
        f" (such as Element). To call anyway, with media {HOP_BY_HOP}, pass"
        " --allow-unencrypted.",
        file=sys.stderr,
    )


async def _run_call(args: argparse.Namespace) -> int:
    transport = await login(args)
    try:
        # The VoIP instance listens before the first sync, so no call event can slip past it.
        policy = CallPolicy(allow_unencrypted=args.allow_unencrypted, relay_only=args.relay_only)
        voip = _voip(args, transport, await transport.ice_servers(), "call", policy)
        if not voip.relay_available():
            raise RelayUnavailableError(RELAY_UNAVAILABLE)  # before any room or ring
        ends: list[tuple[str, bool]] = []
        voip.on("call_ended", lambda s, reason, by_remote: ends.append((reason, by_remote)))
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
            if ends and ends[-1][0] == ENCRYPTION_REQUIRED:
                _explain_outgoing_refusal(args.user_id, ends[-1][1])
            return 1
        await _stay(session, args.record, args.duration)
        await voip.close()
        return 0
    finally:
        await transport.stop()


async def _run_answer(args: argparse.Namespace) -> int:
    transport = await login(args)
    joiner: asyncio.Future[None] | None = None
    try:
        # Without --auto the user is asked, so a call that cannot be encrypted rings for them.
        policy = CallPolicy(
            allow_unencrypted=args.allow_unencrypted,
            ask_unencrypted=not args.auto,
            relay_only=args.relay_only,
        )
        voip = _voip(args, transport, await transport.ice_servers(), "answer", policy)
        if not voip.relay_available():
            raise RelayUnavailableError(RELAY_UNAVAILABLE)  # say so now, not when it rings
        inbox: asyncio.Queue[CallSession | HistoryItem] = asyncio.Queue()
        rung: set[str] = set()

        def ring(session: CallSession, *_: Any) -> None:
            rung.add(session.call_id)
            inbox.put_nowait(session)

        def refused(item: HistoryItem) -> None:
            # Refused on arrival (it never rang): say so rather than wait on.
            if (
                item.direction is Direction.INCOMING
                and item.end_reason == ENCRYPTION_REQUIRED
                and item.call_id not in rung
            ):
                inbox.put_nowait(item)

        voip.on("incoming_call", ring)
        voip.on("call_waiting", ring)  # taken once the current call ends
        voip.on("history_item", refused)
        await transport.start()
        joiner = asyncio.ensure_future(_join_invites(transport))
        try:
            return await _answer_calls(args, voip, inbox)
        except TimeoutError:
            print(
                f"no call came: {transport.undecryptable} events could not be decrypted, "
                f"{transport.dropped_plaintext} plaintext call events were dropped, "
                f"{voip.malformed_events} malformed, calls seen: {len(voip.manager.calls)}",
                file=sys.stderr,
            )
            raise
        finally:
            await voip.close()
    finally:
        if joiner is not None:
            joiner.cancel()
        await transport.stop()


async def _answer_calls(
    args: argparse.Namespace, voip: VoIP, inbox: "asyncio.Queue[CallSession | HistoryItem]"
) -> int:
    """Answer (or ask about) each call that rings; after a call, take one that is still ringing
    (call waiting) and stop when none is. 0 once a call was answered, 1 if the first was not."""
    deadline = time.monotonic() + args.timeout
    answered = False
    while True:
        if answered:
            if inbox.empty():
                return 0
            item = inbox.get_nowait()
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out waiting for an incoming call")
            try:
                item = await asyncio.wait_for(inbox.get(), remaining)
            except TimeoutError:
                raise TimeoutError("timed out waiting for an incoming call") from None
        if isinstance(item, HistoryItem):
            print(
                f"refused a call from {item.peer}: it cannot be encrypted end to end (the"
                " caller's app, such as Element, has no sealcall frame encryption). To take"
                f" such calls anyway, with media {HOP_BY_HOP}, pass --allow-unencrypted.",
                flush=True,
            )
            if not answered:
                return 1
            continue
        session = item
        if session.state is not CallState.RINGING:
            continue  # the caller gave up meanwhile
        take = await _decide(args, session)
        try:
            if take:
                await session.answer(video=session.call.video, allow_unencrypted=True)
            else:
                await session.reject(encryption_required=not session.encrypted)
        except CallError:
            print("[answer] the call ended before it was answered", flush=True)
            continue
        if not take:
            print(f"declined the call from {session.call.peer}", flush=True)
            return 0 if answered else 1
        await _until_settled(session)
        await _stay(session, args.record, args.duration)
        answered = True


async def _until_settled(session: CallSession) -> None:
    await wait_for(
        lambda: session.state in (CallState.CONNECTED, CallState.ENDED), 30, "the connection"
    )


async def _decide(args: argparse.Namespace, session: CallSession) -> bool:
    """Whether to take a ringing call: --auto takes what the policy let ring; otherwise ask.

    Only calls the policy let ring get here: a call that cannot be encrypted rings only when
    the user may opt in (asked here) or did (--allow-unencrypted), so answering it with
    ``allow_unencrypted`` is their decision.
    """
    kind = "video" if session.call.video else "voice"
    print(f"incoming {kind} call from {session.call.peer}", flush=True)
    if not session.encrypted:
        print(
            f"  this call cannot be encrypted end to end: if answered, its media is {HOP_BY_HOP}",
            flush=True,
        )
    if args.auto:
        return True
    question = (
        "answer? [y/N] " if session.encrypted else "answer without end-to-end encryption? [y/N] "
    )
    reply = await asyncio.to_thread(input, question)
    return reply.strip().lower() in ("y", "yes")


async def _join_invites(transport: MatrixTransport) -> None:
    """Accept room invites as they come (a bot answering calls joins its DMs)."""
    while True:
        for room_id in transport.invites():
            with contextlib.suppress(MatrixTransportError):
                await transport.join(room_id)
        await asyncio.sleep(0.5)


async def _run_history(args: argparse.Namespace) -> int:
    transport = await login(args)
    try:
        await transport.start()
        events = await transport.timeline(args.room)
        entries = calls_from_timeline(events, transport.user_id, transport.room_members(args.room))
    finally:
        await transport.stop()
    for entry in entries:
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.started_at))
        print(f"{stamp}  {entry.describe()}")
    if not entries:
        print("no calls in this room")
    return 0


def call(args: argparse.Namespace) -> int:
    return run(_run_call(args))


def answer(args: argparse.Namespace) -> int:
    return run(_run_answer(args))


def history(args: argparse.Namespace) -> int:
    return run(_run_history(args))


def _unencrypted_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--allow-unencrypted",
        action="store_true",
        help=f"{what}; media is then protected only hop by hop (DTLS-SRTP)",
    )


def add_parsers(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the call, answer and history commands."""
    parser = commands.add_parser(
        "call",
        help="call a user (an encrypted DM is created if needed)",
        description=(
            "Place an end-to-end encrypted call to USER_ID, show its progress, hang up after"
            " --duration seconds. Exit status 0 if the call was answered. An answer from an app"
            " that cannot encrypt media end to end (such as Element) is refused, saying so,"
            " unless --allow-unencrypted."
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
    relay_only_option(parser)
    _unencrypted_option(
        parser, "accept a callee whose app cannot encrypt media end to end, such as Element"
    )
    login_options(parser)
    media_options(parser)
    parser.set_defaults(func=call)

    parser = commands.add_parser(
        "answer",
        help="wait for a call and answer it",
        description=(
            "Join pending DM invites, wait for an incoming call, ask whether to answer (or"
            " answer at once with --auto), and stay until the call ends (or --duration seconds);"
            " then take a call that is still ringing (call waiting) the same way, and exit when"
            " none is. A call that cannot be encrypted end to end is asked about (or, with"
            " --auto, refused unless --allow-unencrypted). Exit status 0 if a call was"
            " answered; a declined or refused call exits 1 at once."
        ),
    )
    parser.add_argument("--auto", action="store_true", help="answer without asking")
    _unencrypted_option(
        parser,
        "take calls from apps that cannot encrypt media end to end, such as Element (without"
        " it, each such call is asked about, or refused with --auto)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a call")
    relay_only_option(parser)
    parser.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="hang up after this many seconds (0: wait for the caller)",
    )
    login_options(parser)
    media_options(parser)
    parser.set_defaults(func=answer)

    parser = commands.add_parser(
        "history",
        help="list the calls in a room",
        description=(
            "Render the call events of ROOM as a call list: who called whom, voice or video,"
            " outcome (from our side: a call we placed and gave up on is cancelled, one placed"
            " to us is missed), duration."
        ),
    )
    parser.add_argument("room", help="room id")
    login_options(parser)
    parser.set_defaults(func=history)

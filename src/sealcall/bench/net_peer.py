"""One side of a 1:1 call in the network lab, in its own process inside a host's namespace.

Started by :class:`sealcall.bench.net_call.LabPeer` as
``ip netns exec NS python -m sealcall.bench.net_peer --homeserver URL --user ID --store DIR
--host-address ADDR [--relay-only] [--no-turn | --turn-transport tcp|all] [--forbid ADDR]...
[--ice-timeout S] [--reconnect-timeout S]`` (the password in the environment,
``SEALCALL_PASSWORD``). It logs in (ICE servers from the homeserver's ``/voip/turnServer``),
answers every call, and follows JSON commands on stdin, one per line:

- ``{"open_dm": USER}`` / ``{"join_dm": USER}``: make the encrypted DM with USER, or join the
  one USER invites us to; reports ``{"room": ID}`` once both devices can encrypt to each other;
- ``{"call": {"room": ID, "peer": USER}}``: place a video call;
- ``{"sample": true}``: reports ``{"sample": ...}`` (see :meth:`NetPeer.sample`); with
  ``{"sample": {"since": T}}`` also each kind's frames, freezes and first frame after wall-clock
  time T (see :meth:`FrameClock.since`);
- ``{"hangup": true}``, ``{"stop": true}`` (or the end of stdin: stop).

A malformed line (not JSON, not an object, a command with arguments of the wrong shape) is
dropped and counted (``dropped_commands`` in each sample), never fatal.

It reports ``{"ready": USER}``, every call state (``{"state": NEW, "old": OLD}``) and
``{"ended": REASON}``, each line stamped with the wall-clock time ``t``. For the address-leak
check it counts, per event type, the call events it received whose decrypted content names a
``--forbid`` address; it never prints SDP, candidates or keys. Its log goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from aiortc import RTCIceServer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from sealcall.calls import CallPolicy
from sealcall.demo import wait_for
from sealcall.media import (
    EncryptedPeerConnection,
    PatternVideoTrack,
    SyntheticAudioTrack,
    loss_counters,
)
from sealcall.session import CallSession, LocalMedia, VoIP
from sealcall.transport import RoomEvent
from sealcall.transport.matrix import MatrixTransport

from .decoder_audit import audit
from .group_peer import say

logger = logging.getLogger(__name__)
FREEZE_S = 0.2  # a gap between decoded video frames longer than this is a freeze
KEPT_FRAME_TIMES = 4096  # bounded: about two minutes of video


class FrameClock:
    """Reads a remote track as a player would; counts its frames and the gaps between them."""

    def __init__(self, track: MediaStreamTrack) -> None:
        self.track = track
        self.frames = 0
        self.max_gap = 0.0
        self.frozen = 0.0  # seconds spent in gaps longer than FREEZE_S
        self.times: collections.deque[float] = collections.deque(maxlen=KEPT_FRAME_TIMES)
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await self.track.recv()
                now = time.time()
                if self.times:
                    gap = now - self.times[-1]
                    self.max_gap = max(self.max_gap, gap)
                    if gap > FREEZE_S:
                        self.frozen += gap
                self.times.append(now)
                self.frames += 1

    def since(self, moment: float) -> dict[str, Any]:
        """Frames decoded after wall-clock time ``moment``, the longest gap without a new frame
        and the time spent in gaps over :data:`FREEZE_S` since then (up to now), and the time
        from ``moment`` to the first frame (None: none yet)."""
        times = [t for t in self.times if t > moment]
        gaps = [b - a for a, b in zip([moment, *times], [*times, time.time()], strict=True)]
        return {
            "decoded": len(times),
            "max_gap_s": round(max(gaps), 3),
            "frozen_s": round(sum(g for g in gaps if g > FREEZE_S), 3),
            "first_s": round(times[0] - moment, 3) if times else None,
        }

    async def stop(self) -> None:
        """Stop reading."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def address_pattern(addresses: list[str]) -> re.Pattern[str] | None:
    """A pattern matching any of ``addresses`` as a whole (10.0.0.2 does not match 10.0.0.20)."""
    if not addresses:
        return None
    alternatives = "|".join(re.escape(a) for a in addresses)
    return re.compile(rf"(?<![\d.])(?:{alternatives})(?![\d])")


def selected_pair(pc: EncryptedPeerConnection | None) -> dict[str, Any] | None:
    """The candidate types (and the far address) of the ICE pair the call's media uses now."""
    if pc is None:
        return None
    for transceiver in pc.getTransceivers():
        connection: Any = transceiver.receiver.transport.transport._connection
        pairs = list(getattr(connection, "_nominated", {}).values())
        if pairs:
            pair = pairs[0]
            return {
                "local": pair.local_candidate.type,
                "remote": pair.remote_candidate.type,
                "remote_address": pair.remote_candidate.host,
                "protocol": pair.local_candidate.transport,
            }
    return None


class CommandError(ValueError):
    """A command line that is not one of the commands above."""


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise CommandError(f"{what} must be a non-empty string")
    return value


def parse_command(line: bytes) -> dict[str, Any]:
    """One command line as its JSON object; :class:`CommandError` for anything else (not
    JSON, not an object, a known command with arguments of the wrong shape)."""
    try:
        message = json.loads(line)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise CommandError("not JSON") from error
    if not isinstance(message, dict):
        raise CommandError("not a JSON object")
    for key in ("open_dm", "join_dm"):
        if key in message:
            _text(message[key], key)
    if "call" in message:
        call = message["call"]
        if not isinstance(call, dict):
            raise CommandError("call must be an object")
        _text(call.get("room"), "call.room")
        _text(call.get("peer"), "call.peer")
    if "sample" in message and message["sample"] is not True:
        sample = message["sample"]
        since = sample.get("since") if isinstance(sample, dict) else None
        if not isinstance(since, int | float) or isinstance(since, bool):
            raise CommandError("sample must be true or {since: a number}")
    return message


class NetPeer:
    """The peer's call, its remote media readers and what it has seen."""

    def __init__(self, transport: MatrixTransport, voip: VoIP, forbid: list[str]) -> None:
        self.transport = transport
        self.voip = voip
        self.session: CallSession | None = None
        self.clocks: dict[str, FrameClock] = {}
        self.states: list[str] = []
        self.placed_at: float | None = None
        self.connected_at: float | None = None
        self.forbidden: collections.Counter[str] = collections.Counter()
        self.call_events = 0
        self.dropped_commands = 0
        self._forbid = address_pattern(forbid)
        transport.add_listener(self._check_event)
        voip.on("incoming_call", self._answer)
        voip.on("state_changed", self._state)
        voip.on("call_ended", self._ended)
        voip.on("remote_media_added", self._media)

    def _check_event(self, room_event: RoomEvent) -> None:
        event = room_event.event
        kind = str(event.get("type", ""))
        if room_event.sender == self.transport.user_id or not kind.startswith("m.call."):
            return
        self.call_events += 1
        if self._forbid is not None and self._forbid.search(json.dumps(event.get("content"))):
            self.forbidden[kind] += 1

    def command(self, line: bytes) -> dict[str, Any] | None:
        """The command on ``line``, or None: a malformed one is dropped and counted (one log
        line with the reason, never the line)."""
        try:
            return parse_command(line)
        except CommandError as error:
            self.dropped_commands += 1
            logger.warning(
                "dropped a malformed command (%s); %d so far", error, self.dropped_commands
            )
            return None

    async def _answer(self, session: CallSession) -> None:
        self.session = session
        await session.answer(video=True)

    def _state(self, session: CallSession, old: Any, new: Any) -> None:
        self.states.append(new.value)
        if new.value == "connected" and self.connected_at is None:
            self.connected_at = time.monotonic()
        say({"state": new.value, "old": old.value})

    def _ended(self, session: CallSession, reason: Any, by_remote: bool) -> None:
        say({"ended": str(getattr(reason, "value", reason)), "by_remote": by_remote})

    def _media(self, session: CallSession, track: MediaStreamTrack, purpose: Any) -> None:
        self.clocks[track.kind] = FrameClock(track)
        if session.pc is not None:
            for receiver in session.pc.getReceivers():
                audit(receiver)

    async def place(self, room_id: str, peer: str) -> None:
        """Call ``peer`` with video."""
        self.placed_at = time.monotonic()
        self.session = await self.voip.place_call(room_id, peer, video=True)

    def sample(self, since: float | None = None) -> dict[str, Any]:
        """Frames sent and received per kind (received, decrypted, dropped by reason, the
        receiver's loss counters: concealed, lost, NACKs and PLIs sent; decoded; the decoder
        audit of :mod:`sealcall.bench.decoder_audit`), key-frame requests answered,
        video freezes, the selected candidate pair, states seen, setup time and
        forbidden-address hits."""
        kinds: dict[str, Any] = {}
        sent: dict[str, int] = {}
        keyframe_requests_received: dict[str, int] = {}  # PLIs from the far side, answered
        pc = self.session.pc if self.session is not None else None
        if pc is not None:
            for sender in pc.getSenders():
                frames = pc.sender_tap(sender).counters.frames_encrypted
                sent[sender.kind] = sent.get(sender.kind, 0) + frames
                answered = pc.sender_tap(sender).counters.keyframe_requests_received
                keyframe_requests_received[sender.kind] = (
                    keyframe_requests_received.get(sender.kind, 0) + answered
                )
            for receiver in pc.getReceivers():
                counters = pc.receiver_tap(receiver).counters
                decoder = audit(receiver)
                kinds[receiver.track.kind] = {
                    "decoder_inputs": decoder.inputs if decoder else 0,
                    "unvetted_decoder_inputs": decoder.unvetted if decoder else 0,
                    "deltas_after_gap": decoder.deltas_after_gap if decoder else 0,
                    "keyframes_decrypted": counters.keyframes_decrypted,
                    "skipped": counters.frames_skipped,
                    "received": counters.frames_received,
                    "decrypted": counters.frames_decrypted,
                    "bytes": counters.bytes_received,
                    "dropped": dict(counters.drop_reasons),
                    "keyframe_requests": counters.keyframe_requests,
                    "loss": dataclasses.asdict(loss_counters(receiver)),
                }
        for kind, clock in self.clocks.items():
            entry = kinds.setdefault(kind, {})
            entry["decoded"] = clock.frames
            entry["max_gap_s"] = round(clock.max_gap, 3)
            entry["frozen_s"] = round(clock.frozen, 3)
            if since is not None:
                entry["since"] = clock.since(since)
        setup = None
        if self.placed_at is not None and self.connected_at is not None:
            setup = round(self.connected_at - self.placed_at, 3)
        return {
            "state": self.session.state.value if self.session is not None else None,
            "states": self.states,
            "kinds": kinds,
            "sent": sent,
            "keyframe_requests_received": keyframe_requests_received,
            "pair": selected_pair(pc),
            "setup_s": setup,
            "call_events": self.call_events,
            "forbidden": dict(self.forbidden),
            "dropped_commands": self.dropped_commands,
        }


async def open_dm(transport: MatrixTransport, other: str, create: bool) -> str:
    """Create the encrypted DM with ``other`` (or join the one it invites us to) and wait
    until both devices are in it and can encrypt to each other."""
    if create:
        room_id = await transport.create_dm(other)
    else:
        await wait_for(lambda: bool(transport.invites()), 60, "the invite")
        room_id = transport.invites()[0]
        await transport.join(room_id)

    def ready() -> bool:
        room = transport.client.rooms.get(room_id)
        return bool(room and room.encrypted and other in room.users)

    await wait_for(ready, 60, "both sides in the encrypted room")
    await transport.wait_for_member_devices(room_id, 60)
    return room_id


async def ice_servers(transport: MatrixTransport, turn: str | None) -> list[RTCIceServer]:
    """The homeserver's TURN servers, their URIs for transport ``turn`` (``udp``, ``tcp``) only,
    or all of them as the homeserver lists them (``all``); none if ``turn`` is None."""
    if turn is None:
        return []
    if turn == "all":
        return list(await transport.ice_servers())
    servers = []
    for server in await transport.ice_servers():
        urls = [server.urls] if isinstance(server.urls, str) else list(server.urls)
        kept = [url for url in urls if url.endswith(f"transport={turn}")]
        if kept:
            servers.append(RTCIceServer(kept, server.username, server.credential))
    return servers


async def serve(args: argparse.Namespace) -> None:
    """Log in, report, follow the commands on stdin until told to stop."""
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("sealcall").setLevel(logging.INFO)
    password = os.environ["SEALCALL_PASSWORD"]
    transport = await MatrixTransport.login(args.homeserver, args.user, password, args.store)
    await transport.start()
    policy_options: dict[str, Any] = {"ice_restart_timeout": args.ice_timeout}
    if args.reconnect_timeout is not None:
        policy_options["reconnect_timeout"] = args.reconnect_timeout
    if args.relay_only:
        policy_options["relay_only"] = True
    width, height = (int(x) for x in args.size.split("x"))
    voip = VoIP(
        transport,
        policy=CallPolicy(**policy_options),
        media=LocalMedia(
            microphone=SyntheticAudioTrack,
            camera=lambda: PatternVideoTrack(width, height, fps=args.fps),
        ),
        ice_servers=await ice_servers(transport, None if args.no_turn else args.turn_transport),
        host_addresses=[args.host_address],
    )
    peer = NetPeer(transport, voip, args.forbid)
    say({"ready": transport.user_id, "ice_servers": len(voip.ice_servers)})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            message = peer.command(line)
            if message is None:
                continue
            if "open_dm" in message or "join_dm" in message:
                other = message.get("open_dm") or message["join_dm"]
                say({"room": await open_dm(transport, other, "open_dm" in message)})
            elif "call" in message:
                await peer.place(message["call"]["room"], message["call"]["peer"])
            elif "sample" in message:
                since = message["sample"].get("since") if message["sample"] is not True else None
                say({"sample": peer.sample(since)})
            elif "hangup" in message and peer.session is not None:
                await peer.session.hangup()
            elif "stop" in message:
                break
    finally:
        for clock in peer.clocks.values():
            await clock.stop()
        await voip.close()
        await transport.stop()
        say({"stopped": True})


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and serve."""
    parser = argparse.ArgumentParser(prog="python -m sealcall.bench.net_peer")
    parser.add_argument("--homeserver", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--host-address", required=True)
    parser.add_argument("--relay-only", action="store_true")
    parser.add_argument("--no-turn", action="store_true", help="ignore the homeserver's TURN")
    parser.add_argument("--turn-transport", choices=("udp", "tcp", "all"), default="udp")
    parser.add_argument("--forbid", action="append", default=[])
    parser.add_argument("--ice-timeout", type=float, default=10.0)
    parser.add_argument("--reconnect-timeout", type=float, default=None)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--fps", type=float, default=15.0)
    asyncio.run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()

"""The SFU server: rooms of participants, each one WebRTC connection plus one signaling WebSocket.

The asyncio binding of the sans-I/O :class:`~.forwarder.Forwarder`: one per room, fed with the raw
RTP/RTCP each participant's :class:`~.transport.ParticipantTransport` decrypts (``now`` is the event
loop's clock), its ``SendRtp``/``SendRtcp`` outputs sent on the right transports, ``tick`` run at
its deadline. When someone joins, the streams the forwarder creates for each subscriber are added to
that subscriber's connection (the SFU offers, the participant answers) and announced with the member
each carries (``tracks``), so that receivers can pick the sender's key. Packets of a stream go out
only once the subscriber's answer has made it known there. When someone leaves, its streams'
m-lines are removed (port 0) by the next offer, and ``tracks`` follows again.

Each participant's ``control`` data channel (:mod:`.channel`) carries ``subscribe`` and ``floor``
in, ``speaking``, ``layer`` (when the forwarder actually switches) and ``floor`` out
(docs/sfu-protocol.md). ``GET /metrics`` serves Prometheus metrics (:mod:`.metrics`).

Admission is pluggable (:class:`Gate`): :class:`~.admission_service.AdmissionService` in
production, :class:`OpenAdmission` (anyone who names a room gets in) for tests that say so. When a
gate reports that someone's admission ended, that participant is dropped at once: out of the
forwarder (no further packet), its WebSocket and connection closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import WSMsgType, web
from aiortc.rtcdatachannel import RTCDataChannel

from .admission import JoinRequest, JoinRequestError, Participant
from .channel import CONTROL_LABEL, ControlChannel
from .control import ControlError, ControlMessage, Floor, Subscribe
from .floor import FloorChange, FloorState
from .forwarder import (
    Forwarder,
    LayerChanged,
    Output,
    ParticipantConfig,
    RoomFullError,
    SendRtcp,
    SendRtp,
)
from .metrics import COUNTERS, MetricsSnapshot, SfuMetrics
from .negotiation import MediaSection, NegotiationError
from .rtcp import Pli, build_rtcp
from .signaling import (
    MAX_MESSAGE,
    Answer,
    Candidate,
    Join,
    Leave,
    SignalingError,
    message,
    parse_client_message,
)
from .transport import ParticipantTransport, TransportClosedError

__all__ = ["Gate", "OpenAdmission", "SfuServer"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0
ANSWER_TIMEOUT = 10.0
KEYFRAME_RETRY = (
    1.2  # after a stream becomes known; the forwarder sends a PLI at most once a second
)
MAX_ERRORS = 20  # bad messages tolerated on one WebSocket before it is closed
DisconnectCallback = Callable[[Participant], None]


class Gate(Protocol):
    """Who may join: turns a join token into a :class:`Participant` (None: refused)."""

    def verify(self, join_token: object) -> Participant | None:
        """Whom ``join_token`` admits now."""
        ...


class OpenAdmission:
    """Admits anyone whose token is ``{"room_id", "user_id", "device_id"}``: for tests only.

    ``end(participant)`` plays a membership ending (the gate's ``on_disconnect``).
    """

    def __init__(self, on_disconnect: DisconnectCallback) -> None:
        self.on_disconnect = on_disconnect

    def verify(self, join_token: object) -> Participant | None:
        """The participant the token names, or None if it names none."""
        if not isinstance(join_token, dict):
            return None
        values = [join_token.get(k) for k in ("room_id", "user_id", "device_id")]
        if not all(isinstance(v, str) and v for v in values):
            return None
        room_id, user_id, device_id = (str(v) for v in values)
        return Participant(room_id, user_id, device_id, membership_id="open")

    def end(self, participant: Participant) -> None:
        """The participant's admission ends now."""
        self.on_disconnect(participant)


def _counters(room: Room) -> dict[str, int]:
    stats = room.forwarder.stats
    return {key: int(getattr(stats, key)) for key in COUNTERS}


def member_id(participant: Participant) -> str:
    """The id a participant has in its room's forwarder and in announcements."""
    return f"{participant.user_id}|{participant.device_id}"


@dataclass(eq=False)
class Member:
    """One participant in a room: its connection, WebSocket and forwarded streams."""

    id: str
    participant: Participant
    ws: web.WebSocketResponse
    transport: ParticipantTransport
    sections: dict[int, MediaSection] = field(default_factory=dict)
    """Forwarded streams planned on its connection, by outgoing SSRC."""
    active: set[int] = field(default_factory=set)
    """Outgoing SSRCs the participant's answer made known: only these are sent."""
    rtx: dict[int, int] = field(default_factory=dict)
    """RTX SSRC -> media SSRC of the streams whose NACKs are answered as RTX."""
    publishers: dict[int, tuple[str, str]] = field(default_factory=dict)
    answer: asyncio.Future[str] | None = None
    dirty: bool = False
    renegotiation: asyncio.Task[None] | None = None
    joined: bool = False
    control: ControlChannel | None = None

    def send_control(self, text: str) -> None:
        """Send ``text`` on the member's control channel (dropped if it has none open)."""
        if self.control is not None:
            self.control.send(text)


class Room:
    """One room: its forwarder, members, and the timer of the forwarder's deadline."""

    def __init__(self, room_id: str, on_empty: Callable[[Room], None]) -> None:
        self.room_id = room_id
        self.forwarder = Forwarder()
        self.members: dict[str, Member] = {}
        self.unsent = 0
        """SendRtp dropped because the stream was not yet known to its subscriber or it was gone."""
        self.floor = FloorState()
        self.gone_drops: dict[str, int] = {}
        """Drops counted by the transports and control channels of members who left."""
        self._on_empty = on_empty
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[object]] = set()

    # -- packets -----------------------------------------------------------------------------------

    def on_rtp(self, member: str, data: bytes) -> None:
        """RTP decrypted from ``member``'s connection."""
        if member in self.members:
            self.dispatch(self.forwarder.packet(member, data, self._loop.time()))

    def on_rtcp(self, member: str, data: bytes) -> None:
        """RTCP decrypted from ``member``'s connection."""
        if member in self.members:
            self.dispatch(self.forwarder.rtcp(member, data, self._loop.time()))
            self.arm()

    def dispatch(self, outputs: list[Output]) -> None:
        """Send the forwarder's outputs; speaking changes go to every member's WebSocket."""
        members = self.members
        for out in outputs:
            if type(out) is SendRtp:
                m = members.get(out.participant)
                data = out.data
                if m is None:
                    self.unsent += 1
                    continue
                ssrc = int.from_bytes(data[8:12])
                if ssrc not in m.active and m.rtx.get(ssrc) not in m.active:
                    self.unsent += 1
                    continue
                try:
                    m.transport.send_rtp(data)
                except TransportClosedError:
                    self.unsent += 1
            elif type(out) is SendRtcp:
                m = members.get(out.participant)
                if m is not None:
                    with contextlib.suppress(TransportClosedError):
                        m.transport.send_rtcp(out.data)
            elif type(out) is LayerChanged:
                m = members.get(out.subscriber)
                if m is not None:
                    m.send_control(message("layer", publisher=out.publisher, quality=out.quality))
            else:
                speakers = self.forwarder.speaking()
                self.broadcast_control(message("speaking", members=speakers))

    def broadcast_control(self, text: str) -> None:
        """Send ``text`` on every member's control channel."""
        for m in self.members.values():
            m.send_control(text)

    def floor_changed(self, change: FloorChange | None) -> None:
        """Tell everyone the floor's new holder, if it changed."""
        if change is not None:
            self.broadcast_control(message("floor", holder=change.holder))

    def control(self, m: Member, request: ControlMessage) -> None:
        """A control message from ``m``; ``ControlError`` if it names no one it can."""
        if isinstance(request, Subscribe):
            if request.publisher == m.id or request.publisher not in self.members:
                raise ControlError("unknown publisher")
            now = self._loop.time()
            self.dispatch(self.forwarder.subscribe(m.id, request.publisher, request.quality, now))
        elif isinstance(request, Floor):
            if request.action == "request":
                change = self.floor.request(m.id)
            else:
                change = self.floor.release(m.id)
            if change is None:  # refused or nothing to release: the asker learns who holds it
                m.send_control(message("floor", holder=self.floor.holder))
            self.floor_changed(change)

    def attach_control(self, m: Member, channel: RTCDataChannel) -> None:
        """``m`` opened a data channel: its control channel if it is the first ``control``."""
        if channel.label != CONTROL_LABEL or m.control is not None or m.id not in self.members:
            channel.close()
            return
        m.control = ControlChannel(channel, lambda request: self.control(m, request))
        # What it missed before the channel was up: who holds the floor, the layers it receives.
        if self.floor.holder is not None:
            m.send_control(message("floor", holder=self.floor.holder))
        for publisher in self.members:
            quality = self.forwarder.layer(m.id, publisher)
            if quality is not None:
                m.send_control(message("layer", publisher=publisher, quality=quality))

    def drops(self) -> dict[str, int]:
        """Drops by reason: the forwarder's, unsent packets, transports' and control channels'."""
        out = dict(self.gone_drops)
        for reason, value in self.forwarder.stats.drops.items():
            out[reason] = out.get(reason, 0) + value
        out["unsent"] = out.get("unsent", 0) + self.unsent
        for m in self.members.values():
            _member_drops(m, out)
        return out

    def broadcast(self, text: str) -> None:
        """Send ``text`` to every joined member's WebSocket (in the background)."""
        for m in self.members.values():
            if m.joined and not m.ws.closed:
                self.spawn(m.ws.send_str(text))

    def spawn(self, work: Awaitable[object]) -> None:
        """Run a coroutine in the background, kept until it ends."""
        task: asyncio.Task[object] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("sfu: background task failed: %s", type(task.exception()).__name__)

    def arm(self) -> None:
        """(Re)start the timer for the forwarder's next deadline."""
        deadline = self.forwarder.next_deadline()
        if deadline is None:
            return
        if self._timer is not None:
            if self._timer.when() <= deadline:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.dispatch(self.forwarder.tick(self._loop.time()))
        self.arm()

    # -- membership --------------------------------------------------------------------------------

    def join(self, m: Member, config: ParticipantConfig) -> None:
        """Add a connected member: forward its streams to everyone, everyone's to it."""
        outputs = self.forwarder.join(m.id, config, self._loop.time())
        self.members[m.id] = m
        m.joined = True
        self.dispatch(outputs)
        for other in self.members.values():
            self.renegotiate(other)
        self.arm()

    def leave(self, member: str) -> None:
        """Remove a member at once: no further packet to or from it."""
        m = self.members.pop(member, None)
        if m is None:
            return
        m.active.clear()
        _member_drops(m, self.gone_drops)
        if m.control is not None:
            m.control.close()
        if member in self.forwarder.participants():
            self.dispatch(self.forwarder.leave(member, self._loop.time()))
        self.floor_changed(self.floor.leave(member))
        if m.renegotiation is not None:
            m.renegotiation.cancel()
        if m.answer is not None and not m.answer.done():
            m.answer.cancel()
        for other in self.members.values():
            gone = [s for s, (pub, _) in other.publishers.items() if pub == member]
            for ssrc in gone:
                other.active.discard(ssrc)
                other.publishers.pop(ssrc, None)
        self.broadcast(message("left", member=member))
        for other in self.members.values():
            self.renegotiate(other)  # removes the leaver's m-lines
        self.spawn(m.transport.close())
        if not self.members:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._on_empty(self)

    def renegotiate(self, m: Member) -> None:
        """Bring ``m``'s connection up to the forwarder's streams for it (one round at a time)."""
        m.dirty = True
        if m.renegotiation is None or m.renegotiation.done():
            m.renegotiation = asyncio.ensure_future(self._renegotiate(m))

    async def _renegotiate(self, m: Member) -> None:
        while m.dirty and m.id in self.members:
            m.dirty = False
            outgoing = self.forwarder.outgoing(m.id)
            new = [s for s in outgoing if s not in m.sections]
            gone = [s for s in m.sections if s not in outgoing]
            for ssrc in gone:
                section = m.sections.pop(ssrc)
                m.rtx.pop(section.local_rtx_ssrc or 0, None)
                m.transport.remove_send_section(section)
                m.active.discard(ssrc)
                m.publishers.pop(ssrc, None)
            for ssrc in new:
                _, kind = outgoing[ssrc]
                section = m.transport.add_send_section(kind)
                # The forwarder picked the SSRC it rewrites to; the SDP must announce that one.
                section.local_ssrc = ssrc
                m.sections[ssrc] = section
            if new or gone:
                try:
                    offer = await m.transport.create_offer()
                    m.answer = asyncio.get_running_loop().create_future()
                    await m.ws.send_str(message("offer", sdp=offer))
                    answer = await asyncio.wait_for(m.answer, ANSWER_TIMEOUT)
                    m.transport.set_answer(answer)
                except (NegotiationError, TimeoutError, ConnectionError) as error:
                    log.info("sfu: renegotiation failed (%s); dropping", type(error).__name__)
                    self.spawn(m.ws.close())
                    self.leave(m.id)  # cancels this task
                    return
                finally:
                    m.answer = None
            outgoing = self.forwarder.outgoing(m.id)
            for ssrc in new:
                if ssrc in outgoing and m.sections[ssrc].direction == "sendonly":
                    m.active.add(ssrc)
                    m.publishers[ssrc] = outgoing[ssrc]
                    section = m.sections[ssrc]
                    # NACKs answered as RTX where the answer kept it, plainly elsewhere.
                    rtx = section.local_rtx_ssrc
                    if self.forwarder.use_rtx(m.id, ssrc, rtx, section.rtx_payload_type):
                        m.rtx[rtx or 0] = ssrc
                    # What was forwarded before the answer never left: start at a key frame.
                    self.dispatch(self.forwarder.restart(m.id, ssrc, self._loop.time()))
            self._ask_keyframes(m, new)
            await m.ws.send_str(message("tracks", tracks=self.tracks(m)))

    def _ask_keyframes(self, m: Member, ssrcs: list[int]) -> None:
        """The subscriber missed the key frames sent before its answer: ask the publishers."""
        video = [s for s in ssrcs if m.publishers.get(s, ("", ""))[1] == "video"]
        if not video:
            return

        def ask() -> None:
            if m.id not in self.members:
                return
            plis = [Pli(1, s) for s in video if s in m.active]
            if plis:
                feedback = build_rtcp(tuple(plis))
                self.dispatch(self.forwarder.rtcp(m.id, feedback, self._loop.time()))

        ask()
        self._loop.call_later(KEYFRAME_RETRY, ask)

    def tracks(self, m: Member) -> list[dict[str, object]]:
        """The announcement of ``m``'s forwarded streams: mid, SSRC, kind, member."""
        out: list[dict[str, object]] = []
        for ssrc in sorted(m.active, key=lambda s: m.sections[s].mid):
            publisher, kind = m.publishers[ssrc]
            out.append(
                {"mid": m.sections[ssrc].mid, "ssrc": ssrc, "kind": kind, "member": publisher}
            )
        return out

    async def close(self) -> None:
        """Drop every member and wait for background work."""
        for member in list(self.members):
            self.leave(member)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _member_drops(m: Member, into: dict[str, int]) -> None:
    """Add ``m``'s transport and control-channel drops to ``into``."""
    counts = {"transport": m.transport.dropped}
    if m.control is not None:
        counts["bad_control"] = m.control.errors
        counts["control_unsent"] = m.control.dropped
    for reason, value in counts.items():
        if value:
            into[reason] = into.get(reason, 0) + value


def participant_config(transport: ParticipantTransport) -> ParticipantConfig:
    """What a participant publishes and receives, from its accepted m-lines.

    Its first audio m-line is its audio; its first video m-line the thumbnail, a second one the
    full resolution.
    """
    audio = [s for s in transport.sections if s.kind == "audio"]
    video = [s for s in transport.sections if s.kind == "video"]

    def source(sections: list[MediaSection], i: int) -> int | None:
        if len(sections) <= i or sections[i].direction not in ("recvonly", "sendrecv"):
            return None
        ssrcs = sections[i].remote_ssrcs
        return ssrcs[0] if ssrcs else None

    return ParticipantConfig(
        audio_ssrc=source(audio, 0),
        thumbnail_ssrc=source(video, 0),
        full_ssrc=source(video, 1),
        audio_level_id=audio[0].audio_level_id if audio else None,
        audio_payload_type=audio[0].payload_type if audio else 111,
        video_payload_type=video[0].payload_type if video else 96,
        rtx_payload_type=None,
        extensions=tuple(sorted({(e.uri, e.id) for s in transport.sections for e in s.extensions})),
        rtx_ssrcs=tuple(
            (s.remote_ssrcs[1], s.remote_ssrcs[0])
            for s in video[:2]
            if s.rtx_payload_type is not None and len(s.remote_ssrcs) == 2
        ),
    )


class SfuServer:
    """``sealcall sfu``: serves many rooms over ``GET /ws`` (signaling) and ``POST /admit``.

    ``make_gate(on_disconnect)`` builds the admission; ``POST /admit`` is served when the gate has
    an ``admit(JoinRequest)`` coroutine (the :class:`~.admission_service.AdmissionService`).
    """

    def __init__(
        self,
        make_gate: Callable[[DisconnectCallback], Gate],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        addresses: tuple[str, ...] | None = None,
    ) -> None:
        self.gate = make_gate(self.disconnect)
        self.host = host
        self.port = port
        self.addresses = addresses or (host,)
        self.rooms: dict[str, Room] = {}
        self.bad_messages = 0
        self.metrics = SfuMetrics(self._metrics)
        self._retired = MetricsSnapshot()
        """The counters of rooms that have closed."""
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()

    async def start(self) -> None:
        """Listen; ``port`` is the bound port afterwards."""
        app = web.Application(client_max_size=MAX_MESSAGE)
        app.router.add_get("/ws", self._websocket)
        app.router.add_post("/admit", self._admit)
        app.router.add_get("/metrics", self._serve_metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Drop everyone and stop listening."""
        for room in list(self.rooms.values()):
            await room.close()
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def disconnect(self, participant: Participant) -> None:
        """The gate says ``participant``'s admission ended: drop it at once."""
        room = self.rooms.get(participant.room_id)
        if room is None:
            return
        m = room.members.get(member_id(participant))
        if m is None or m.participant != participant:
            return
        room.leave(m.id)
        room.spawn(m.ws.send_str(message("error", reason="admission_ended")))
        room.spawn(m.ws.close())

    def _room(self, room_id: str) -> Room:
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = Room(room_id, self._room_empty)
        return room

    def _room_empty(self, room: Room) -> None:
        if self.rooms.get(room.room_id) is room:
            del self.rooms[room.room_id]
            self._retired.add(_counters(room), room.drops())

    def _metrics(self) -> MetricsSnapshot:
        snap = MetricsSnapshot()
        snap.add(self._retired.counters, self._retired.drops)
        snap.add({}, {"bad_signaling": self.bad_messages})
        for room in self.rooms.values():
            snap.add(_counters(room), room.drops())
            snap.participants[room.room_id] = len(room.members)
        return snap

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": self.metrics.content_type}
        )

    async def _admit(self, request: web.Request) -> web.Response:
        admit = getattr(self.gate, "admit", None)
        if admit is None:
            return web.json_response({"error": "no_admission"}, status=404)
        try:
            join = JoinRequest.parse(await request.json())
        except (ValueError, JoinRequestError) as error:
            log.info("sfu: bad join request (%s)", type(error).__name__)
            return web.json_response({"error": "bad_request"}, status=400)
        verdict = await admit(join)
        token = getattr(verdict, "join_token", None)
        if token is None:
            reason = str(getattr(verdict, "reason", "refused"))
            return web.json_response({"error": reason}, status=403)
        return web.json_response({"join_token": token, "expires_at": verdict.expires_at})

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=30)
        await ws.prepare(request)
        self._sockets.add(ws)
        member: Member | None = None
        room: Room | None = None
        errors = 0
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                try:
                    parsed = parse_client_message(msg.data)
                    if isinstance(parsed, Join):
                        if member is not None:
                            raise SignalingError("already joined")
                        room, member = await self._join(ws, parsed)
                    elif member is None or room is None:
                        raise SignalingError("join first")
                    elif member.id not in room.members:
                        break  # dropped meanwhile
                    elif isinstance(parsed, Answer):
                        if member.answer is None or member.answer.done():
                            raise SignalingError("no offer is waiting for an answer")
                        member.answer.set_result(parsed.sdp)
                    elif isinstance(parsed, Candidate):
                        await member.transport.add_remote_candidate(parsed.candidate)
                    elif isinstance(parsed, Leave):
                        break
                except (SignalingError, NegotiationError, RoomFullError, ValueError) as error:
                    errors += 1
                    self.bad_messages += 1
                    reason = error.reason if isinstance(error, SignalingError) else str(error)
                    if errors == 1:
                        log.info("sfu: bad signaling message (%s)", type(error).__name__)
                    await ws.send_str(message("error", reason=reason[:200]))
                    if errors >= MAX_ERRORS:
                        break
        finally:
            self._sockets.discard(ws)
            if member is not None and room is not None:
                room.leave(member.id)
            await ws.close()
        return ws

    async def _join(self, ws: web.WebSocketResponse, join: Join) -> tuple[Room, Member]:
        participant = self.gate.verify(join.token)
        if participant is None:
            raise SignalingError("refused")
        mid = member_id(participant)
        existing = self.rooms.get(participant.room_id)
        if existing is not None and mid in existing.members:
            raise SignalingError("already in the room")
        holder: list[Room] = []
        joined: list[Member] = []
        channels: list[RTCDataChannel] = []

        # Packets may arrive between DTLS coming up and the join into the room: dropped.
        def on_rtp(data: bytes) -> None:
            if holder:
                holder[0].on_rtp(mid, data)

        def on_rtcp(data: bytes) -> None:
            if holder:
                holder[0].on_rtcp(mid, data)

        def on_datachannel(channel: RTCDataChannel) -> None:
            if holder and joined:
                holder[0].attach_control(joined[0], channel)
            elif len(channels) < 4:  # before the join into the room: attached then
                channels.append(channel)
            else:
                channel.close()

        transport = ParticipantTransport(
            on_rtp, on_rtcp, addresses=self.addresses, on_datachannel=on_datachannel
        )
        try:
            answer = await transport.answer(join.offer)
            await ws.send_str(message("joined", id=mid, answer=answer))
            try:
                await asyncio.wait_for(transport.wait_connected(), CONNECT_TIMEOUT)
            except (TimeoutError, TransportClosedError):
                raise SignalingError("connection failed") from None
            if self.gate.verify(join.token) is None:  # admission ended while connecting
                raise SignalingError("refused")
            room = self._room(participant.room_id)
            holder.append(room)
            member = Member(mid, participant, ws, transport)
            room.join(member, participant_config(transport))
            joined.append(member)
            for channel in channels:
                room.attach_control(member, channel)
            channels.clear()
        except BaseException:
            await transport.close()
            left = self.rooms.get(participant.room_id)
            if left is not None and not left.members:
                self._room_empty(left)  # a failed first join leaves no room behind
            raise
        return room, member

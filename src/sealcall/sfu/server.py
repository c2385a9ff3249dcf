"""The SFU server's network side: ``POST /admit``, ``GET /metrics`` and the signaling WebSocket.

Serves many rooms (:mod:`.room`, one :class:`~.forwarder.Forwarder` each). A member gets a join
token from ``/admit``, then opens ``/ws`` and sends ``join`` with its offer: the server answers,
waits for its connection, and puts it into its room; ``answer``, ``candidate`` and ``leave``
follow on the same socket (docs/sfu-protocol.md). ``GET /metrics`` serves Prometheus metrics
(:mod:`.metrics`).

Admission is pluggable (:class:`Gate`): :class:`~.admission_service.AdmissionService` in
production, :class:`OpenAdmission` (anyone who names a room gets in) for tests that say so. When a
gate reports that someone's admission ended, that participant is dropped at once: out of the
forwarder (no further packet), its WebSocket and connection closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from aiohttp import WSMsgType, web
from aiortc.rtcdatachannel import RTCDataChannel

from .admission import JoinRequest, JoinRequestError, Participant
from .forwarder import RoomFullError
from .metrics import MetricsSnapshot, SfuMetrics
from .negotiation import NegotiationError
from .room import Member, Room, member_id, participant_config, room_counters
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

__all__ = ["Gate", "OpenAdmission", "SfuServer", "member_id"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0
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
            self._retired.add(room_counters(room), room.drops())

    def _metrics(self) -> MetricsSnapshot:
        snap = MetricsSnapshot()
        snap.add(self._retired.counters, self._retired.drops)
        snap.add({}, {"bad_signaling": self.bad_messages})
        for room in self.rooms.values():
            snap.add(room_counters(room), room.drops())
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

"""A room of the SFU: its forwarder, its members' connections and their renegotiation.

The asyncio binding of the sans-I/O :class:`~.forwarder.Forwarder`: one per room, fed with the raw
RTP/RTCP each participant's :class:`~.transport.ParticipantTransport` decrypts (``now`` is the event
loop's clock), its ``SendRtp``/``SendRtcp`` outputs sent on the right transports, ``tick`` run at
its deadline. When someone joins, the streams the forwarder creates for each subscriber are added to
that subscriber's connection (the SFU offers, the participant answers) and announced with the member
each carries (``tracks``), so that receivers can pick the sender's key. Packets of a stream go out
only once the subscriber's answer has made it known there. When someone leaves, its streams'
m-lines are removed (port 0) by the next offer, and ``tracks`` follows again.

Each participant's ``control`` data channel (:mod:`.channel`) carries ``subscribe``, ``floor`` and
``mute`` in, ``speaking``, ``layer`` (when the forwarder actually switches), ``floor`` and
``muted`` (:mod:`.mute`) out
(docs/sfu-protocol.md). The HTTP side (``/admit``, ``/metrics``, the WebSocket) is :mod:`.server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiortc.rtcdatachannel import RTCDataChannel

from .admission import Participant
from .channel import CONTROL_LABEL, ControlChannel
from .control import ControlError, ControlMessage, Floor, Mute, Subscribe
from .floor import FloorChange, FloorState
from .forwarder import (
    Forwarder,
    LayerChanged,
    Output,
    ParticipantConfig,
    SendRtcp,
    SendRtp,
)
from .metrics import COUNTERS
from .mute import MuteChange, MuteStates
from .negotiation import MediaSection, NegotiationError
from .rtcp import Pli, build_rtcp
from .signaling import message
from .transport import ParticipantTransport, TransportClosedError

__all__ = ["Member", "Room", "member_id", "participant_config", "room_counters"]

log = logging.getLogger(__name__)

ANSWER_TIMEOUT = 10.0
KEYFRAME_RETRY = (
    1.2  # after a stream becomes known; the forwarder sends a PLI at most once a second
)


def room_counters(room: Room) -> dict[str, int]:
    """The forwarder's counters of ``room``, for the metrics."""
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
        self.mutes = MuteStates()
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
        elif isinstance(request, Mute) and m.id in self.members:
            self.mute_changed(m, self.mutes.set(m.id, request.audio, request.video))

    def mute_changed(self, m: Member, change: MuteChange | None) -> None:
        """Tell everyone but ``m`` its new mute state, if it changed."""
        if change is None:
            return
        text = _muted(change)
        for other in self.members.values():
            if other is not m:
                other.send_control(text)

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
        for state in self.mutes.current(excluding=m.id):
            m.send_control(_muted(state))

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
        self.mutes.leave(member)
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


def _muted(change: MuteChange) -> str:
    return message("muted", member=change.member, audio=change.audio, video=change.video)


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

"""The default :class:`~sealcall.session.sfu_link.SfuLink`: aiortc, in this process.

:class:`AiortcSfuLink` speaks docs/sfu-protocol.md: the WebSocket ``{url}/ws`` for the join and
SDP (the SFU offers each time forwarded streams come or go; we answer), the data channel
``control`` for subscriptions, who is speaking, layers and the floor. Our media goes out on an
:class:`~sealcall.media.sfu_connection.SfuPeerConnection` from the group call's shared encoders
(audio, thumbnail, full resolution). Each forwarded stream is decrypted with the key of the
member the SFU's ``tracks`` names for its m-line, and handed to the call as that member's media
once both the track and its announcement are known.

Control messages go on the data channel only: those asked for before it opens wait (at most
:data:`MAX_QUEUED_CONTROL`) and go out when it does; a control message on the WebSocket is a bad
message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
from aiortc import RTCDataChannel, RTCSessionDescription
from aiortc.exceptions import InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamTrack

from sealcall.group import MemberDevice
from sealcall.group.sfu_messages import (
    Error,
    Floor,
    Joined,
    Layer,
    Left,
    Muted,
    Offer,
    SfuMessage,
    SfuMessageError,
    Speaking,
    Tracks,
    floor_message,
    mute_message,
    parse_sfu_message,
    subscribe_message,
)
from sealcall.media import FrameOpener, ReceiverTap
from sealcall.media.sfu_connection import SfuPeerConnection
from sealcall.signaling import StreamPurpose

from .sfu_link import ForwardedTrack, Quality, SfuLinkError, SfuLinkEvents, SfuLinkSetup

logger = logging.getLogger(__name__)

JOIN_TIMEOUT = 20.0
MAX_BAD_MESSAGES = 20  # after this many bad messages from the SFU we leave it
MAX_QUEUED_CONTROL = 64  # control messages waiting for the channel to open; the oldest go first
PUBLISHED_ROLES = ("microphone", "camera", "camera_full")  # audio, thumbnail, full: in this order


_REMOVED_CODECS = {"audio": "opus/48000/2", "video": "VP8/90000"}


def with_removed_codecs(sdp: str) -> str:
    """The SFU's offer with a codec named in each removed m-line (port 0: a leaver's stream).

    JSEP keeps only the formats of a removed m-line; aiortc refuses an m-line whose formats it
    cannot name, so a format without its ``a=rtpmap`` gets the kind's codec (the line stays
    inactive). Our SFU names them itself; this keeps us working with one that does not.
    """
    lines = sdp.split("\r\n")
    out: list[str] = []
    section: list[str] = []
    for line in [*lines, "m=end"]:
        if line.startswith("m="):
            out.extend(_named(section))
            section = []
        section.append(line)
    return "\r\n".join(out)  # (the sentinel's own section is dropped)


def _named(section: list[str]) -> list[str]:
    parts = section[0].split(" ") if section else []
    if len(parts) < 4 or parts[1] != "0" or not parts[0].startswith("m="):
        return section
    codec = _REMOVED_CODECS.get(parts[0][2:])
    prefix = "a=rtpmap:"
    named = {line.split(" ")[0][len(prefix) :] for line in section if line.startswith(prefix)}
    missing = [pt for pt in parts[3:] if pt.isdigit() and pt not in named]
    if codec is None or not missing:
        return section
    return [section[0], *(f"a=rtpmap:{pt} {codec}" for pt in missing), *section[1:]]


class AiortcSfuLink:
    """One group call's link to its SFU, on aiortc (see the module docstring).

    ``setup.options["remb_cap"]`` (bits per second) starts the link with a simulated bandwidth
    cap; :meth:`set_remb_cap` changes it.
    """

    def __init__(self, events: SfuLinkEvents, setup: SfuLinkSetup) -> None:
        self.events = events
        self.setup = setup
        self.member: str | None = None
        self.bad_messages = 0
        self.announced: dict[str, ForwardedTrack] = {}  # mid -> what the SFU says it carries
        self._openers: dict[MemberDevice, FrameOpener] = {}
        self._remote: dict[str, MediaStreamTrack] = {}  # mid -> remote track
        self._added: dict[str, tuple[MemberDevice, MediaStreamTrack]] = {}  # told to the call
        cap = setup.options.get("remb_cap")
        self.pc = SfuPeerConnection(
            self._opener_for_mid,
            audio_level=setup.audio_level,
            remb_cap=cap if isinstance(cap, int) else None,
            ice_servers=setup.ice_servers,
            host_addresses=setup.host_addresses,
        )
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_connection_state)
        self.control: RTCDataChannel | None = None
        self._queued_control: list[str] = []
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._joined: asyncio.Future[str] | None = None
        self._closing = False
        self._ending: asyncio.Task[None] | None = None

    # -- SfuLink ---------------------------------------------------------------------------

    async def open(self, url: str, join_token: str) -> None:
        """Connect to the SFU at ``url`` and publish (see :class:`SfuLink`)."""
        encoders = self.setup.sending.encoders
        for role in PUBLISHED_ROLES:
            if role in encoders:
                self.pc.publish(encoders[role])
        control = self.control = self.pc.createDataChannel("control", ordered=True)
        control.on("message", self._on_control)
        control.on("close", self._on_control_closed)
        control.on("open", self._on_control_open)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self._http = aiohttp.ClientSession()
        ws_url = url.rstrip("/").replace("http", "ws", 1) + "/ws"
        try:
            self._ws = await self._http.ws_connect(ws_url, heartbeat=30)
            self._joined = asyncio.get_running_loop().create_future()
            self._reader = asyncio.ensure_future(self._read())
            await self._ws.send_json(
                {"type": "join", "token": join_token, "offer": self.pc.localDescription.sdp}
            )
            answer = await asyncio.wait_for(asyncio.shield(self._joined), JOIN_TIMEOUT)
            await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as error:
            await self.close()
            raise SfuLinkError(f"cannot join the SFU ({type(error).__name__})") from None
        except SfuLinkError:
            await self.close()
            raise

    async def subscribe(self, publisher: MemberDevice, quality: Quality) -> None:
        """Ask for ``publisher``'s video at ``quality``."""
        self._send_control(subscribe_message(publisher, quality))

    async def floor(self, request: bool) -> None:
        """Ask for the focus, or give it up."""
        self._send_control(floor_message(request))

    def mute(self, audio: bool, video: bool) -> None:
        """Tell the others whether our microphone / camera are muted."""
        with contextlib.suppress(SfuLinkError):  # the channel closed: nobody to tell
            self._send_control(mute_message(audio, video))

    def receiver_taps(self) -> dict[MemberDevice, list[ReceiverTap]]:
        """What each member's forwarded streams decrypted and dropped."""
        out: dict[MemberDevice, list[ReceiverTap]] = {}
        seen: set[str] = set()
        # A recycled m-line leaves its old transceiver under the new mid too: the newest is live.
        for transceiver in reversed(self.pc.getTransceivers()):
            mid = transceiver.mid or ""
            track = self.announced.get(mid)
            if track is not None and mid not in seen:
                seen.add(mid)
                tap = self.pc.receiver_tap(transceiver.receiver)
                out.setdefault(track.member, []).append(tap)
        return out

    def set_remb_cap(self, bps: int | None) -> None:
        """Simulate (or stop simulating) a bandwidth limit towards the SFU."""
        self.pc.set_remb_cap(bps)

    async def close(self) -> None:
        """Leave the SFU; nothing is told to the call after this."""
        if self._closing:
            return
        self._closing = True
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await self._ws.send_json({"type": "leave"})
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.pc.close()
        if self._http is not None:
            await self._http.close()

    # -- reading ---------------------------------------------------------------------------

    async def _read(self) -> None:
        assert self._ws is not None
        reason = "closed"
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                try:
                    ended = await self._take(msg.data)
                except (ValueError, OperationError, InvalidStateError) as error:
                    # An offer aiortc cannot take: counted as a bad message.
                    ended = self._bad(f"renegotiation failed ({type(error).__name__})")
                if ended is not None:
                    reason = ended
                    break
        except (ConnectionError, aiohttp.ClientError) as error:
            reason = f"connection_{type(error).__name__}"
        if self._joined is not None and not self._joined.done():
            self._joined.set_exception(SfuLinkError(reason))
            self._joined.exception()  # retrieved here when open() gave up waiting
        await self._end(reason)

    def _on_connection_state(self) -> None:
        # ICE consent expired (or DTLS failed): the link is dead even if the WebSocket is not.
        state = self.pc.connectionState
        if state in ("failed", "closed") and not self._closing:
            self._ending = asyncio.ensure_future(self._end(f"connection_{state}"))

    async def _end(self, reason: str) -> None:
        """The link ended without our :meth:`close`: release it, take its forwarded media
        back from the call, then say why (the call decides whether to open another)."""
        if self._closing:
            return
        self._closing = True
        for member, track in self._added.values():
            self.events.sfu_media_removed(member, track, StreamPurpose.USERMEDIA)
        self._added.clear()
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await self._ws.close()  # the SFU drops us from the room at once
        with contextlib.suppress(Exception):
            await self.pc.close()
        if self._http is not None:
            await self._http.close()
        self.events.sfu_closed(reason)

    async def _take(self, text: Any) -> str | None:
        """Act on one message; a reason to stop when the SFU ended the link."""
        try:
            message = parse_sfu_message(text)
        except SfuMessageError as error:
            return self._bad(str(error))
        if isinstance(message, Joined):
            self.member = message.member
            if self._joined is not None and not self._joined.done():
                self._joined.set_result(message.sdp)
        elif isinstance(message, Offer):
            await self._answer(message.sdp)
        elif isinstance(message, Tracks):
            self._announce(message)
        elif isinstance(message, Error):
            if message.reason in ("admission_ended", "refused"):
                return message.reason
            logger.info("sfu: refused a message of ours")
        elif not isinstance(message, Left):  # a leaver's m-lines go in the next offer
            return self._bad("a control message on the signaling socket")
        return None

    def _bad(self, reason: str) -> str | None:
        self.bad_messages += 1
        if self.bad_messages == 1:
            logger.info("sfu: dropped a bad message (%s)", reason[:80])
        return "bad_messages" if self.bad_messages >= MAX_BAD_MESSAGES else None

    async def _answer(self, sdp: str) -> None:
        assert self._ws is not None
        offer = RTCSessionDescription(with_removed_codecs(sdp), "offer")
        await self.pc.setRemoteDescription(offer)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await self._ws.send_json({"type": "answer", "sdp": self.pc.localDescription.sdp})

    def _on_control(self, text: object) -> None:
        if self._closing or not isinstance(text, str):
            return
        try:
            message = parse_sfu_message(text)
        except SfuMessageError as error:
            self._bad(str(error))
            return
        if isinstance(message, (Speaking, Layer, Floor, Muted)):
            self._control(message)
        elif isinstance(message, Error):
            logger.info("sfu: refused a control message of ours")
        else:
            self._bad("not a control message")

    def _on_control_open(self) -> None:
        queued, self._queued_control = self._queued_control, []
        for text in queued:
            self._send_control(text)

    def _on_control_closed(self) -> None:
        if not self._closing:
            logger.warning("sfu: the control channel closed")

    def _control(self, message: SfuMessage) -> None:
        if isinstance(message, Speaking):
            self.events.sfu_speaking(list(message.members))
        elif isinstance(message, Layer) and message.quality in ("thumbnail", "full"):
            quality: Quality = "full" if message.quality == "full" else "thumbnail"
            self.events.sfu_layer(message.publisher, quality)
        elif isinstance(message, Floor):
            self.events.sfu_floor(message.holder)
        elif isinstance(message, Muted):
            self.events.sfu_muted(message.member, message.audio, message.video)

    def _send_control(self, text: str) -> None:
        control = self.control
        if control is not None and control.readyState == "open":
            control.send(text)
        elif control is not None and control.readyState == "connecting" and not self._closing:
            if len(self._queued_control) >= MAX_QUEUED_CONTROL:
                del self._queued_control[0]
            self._queued_control.append(text)
        else:
            raise SfuLinkError("the SFU's control channel is not open")

    # -- forwarded media -------------------------------------------------------------------

    def _opener_for_mid(self, mid: str) -> FrameOpener | None:
        track = self.announced.get(mid)
        if track is None or track.member == self.setup.own:
            return None
        opener = self._openers.get(track.member)
        if opener is None:
            opener = self._openers[track.member] = self.setup.opener(track.member)
        return opener

    def _on_track(self, track: MediaStreamTrack) -> None:
        for transceiver in self.pc.getTransceivers():
            if transceiver.receiver.track is track and transceiver.mid is not None:
                self._remote[transceiver.mid] = track
                self._tell()

    def _announce(self, message: Tracks) -> None:
        current = {
            t.mid: ForwardedTrack(t.mid, t.ssrc, t.kind, t.member)
            for t in message.tracks
            if t.member != self.setup.own
        }
        self.announced = current
        for member in list(self._openers):
            if all(t.member != member for t in current.values()):
                del self._openers[member]
        self.events.sfu_tracks(list(current.values()))
        self._tell()

    def _tell(self) -> None:
        """Tell the call of each forwarded track once both it and its member are known, and
        of each that is gone or now carries someone else."""
        for mid, (member, track) in list(self._added.items()):
            announced = self.announced.get(mid)
            if (
                announced is None
                or announced.member != member
                or self._remote.get(mid) is not track
            ):
                del self._added[mid]
                self.events.sfu_media_removed(member, track, StreamPurpose.USERMEDIA)
        for mid, track in self._remote.items():
            announced = self.announced.get(mid)
            if announced is not None and mid not in self._added and announced.kind == track.kind:
                self._added[mid] = (announced.member, track)
                self.events.sfu_media_added(announced.member, track, StreamPurpose.USERMEDIA)

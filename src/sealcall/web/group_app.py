"""The web client's group calls: :class:`CallApp` delegates the ``group_*`` requests here.

One :class:`~sealcall.session.GroupCallSession` per room whose call we are in, its media in the
page that sent ``group_join`` (its *driver*: :class:`PagePairSession` per pair,
:class:`PageGroupSending` for our key); every page gets the call's ``group`` snapshots, only the
driver its ``media`` commands and ``group_keys``. One :class:`~sealcall.session.GroupRinger`
for the device rings the pages (``group_ring``) when someone starts a room's call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCIceServer

from sealcall.calls import CallState, HistoryItem
from sealcall.group import GroupRing, NoRingError, RingEndReason
from sealcall.session import GroupCallSession, GroupRinger
from sealcall.session.sfu_link import SfuLinkError
from sealcall.signaling import StreamPurpose
from sealcall.transport.matrix import MatrixTransport

from . import protocol as p
from .media_commands import media_input
from .page_group import PageGroupSending, PagePairSession, receive_key_message, sender_id
from .page_sfu import PageSfuLink, sfu_socket_url
from .page_socket import PageError
from .rooms import item_json
from .sfu_results import SfuLeft, SfuResult, SfuTracks

logger = logging.getLogger(__name__)

Send = Callable[[Any, dict[str, Any]], None]
"""Sends one message to one page (the app's page handle)."""

SESSION_EVENTS = (
    "sfu_closed",
    "member_joined",
    "member_left",
    "member_rejoined",
    "peer_state_changed",
    "peer_ended",
    "remote_mute_changed",
    "remote_streams_changed",
)
"""The session's events after which the pages get a new ``group`` snapshot."""


@dataclass
class _GroupCall:
    session: GroupCallSession
    driver: Any  # the page that drives the media
    joined: bool = False
    snapshot_due: bool = False


def _page_link(session: GroupCallSession) -> PageSfuLink | None:
    link = session.link
    return link if isinstance(link, PageSfuLink) else None


def group_snapshot(session: GroupCallSession, joined: bool) -> dict[str, Any]:
    """The ``group`` event: our side of the room's call and each member device's (through an
    SFU: a member whose streams the SFU forwards to the page is ``connected``)."""
    link = _page_link(session)
    pairs = session.peer_sessions()
    forwarded = frozenset() if link is None else link.forwarded
    members = []
    for member in session.members():
        pair = pairs.get(member.device)
        if pair is None:  # through an SFU: as its `muted` said
            audio_muted, video_muted = session.sfu_mutes.get(member.device, (False, False))
        else:
            audio_muted, video_muted = pair.remote_mute_state()
        purposes = set() if pair is None else {m.purpose for m in pair.call.remote_streams.values()}
        state = None if pair is None else pair.call.state.value
        if pair is None and member.device in forwarded:
            state = "connected"
        members.append(
            {
                "user_id": member.device.user_id,
                "device_id": member.device.device_id,
                "sender": sender_id(member.device),
                "pair_id": None if pair is None else pair.call_id,
                "state": state,
                "audio_muted": audio_muted,
                "video_muted": video_muted,
                "screensharing": StreamPurpose.SCREENSHARE.value in purposes,
            }
        )
    return {
        "type": "group",
        "room_id": session.room_id,
        "joined": joined,
        "video": session.video,
        "audio_muted": session.audio_muted,
        "video_muted": session.video_muted,
        "screensharing": session.screensharing,
        "sfu": session.focus is not None,
        "members": members,
    }


def left_snapshot(room_id: str) -> dict[str, Any]:
    """The ``group`` event that says the room's call is over for us."""
    return {
        "type": "group",
        "room_id": room_id,
        "joined": False,
        "video": False,
        "audio_muted": False,
        "video_muted": False,
        "screensharing": False,
        "sfu": False,
        "members": [],
    }


class GroupApp:
    """The group calls of one device, driven by local pages (see the module's docstring)."""

    def __init__(
        self,
        transport: MatrixTransport,
        *,
        ice_servers: tuple[RTCIceServer, ...],
        send: Send,
        pages: Callable[[], list[Any]],
        session_options: dict[str, Any] | None = None,
        sfu_url: str | None = None,
        relay_only: Callable[[], bool] | None = None,
    ) -> None:
        self.transport = transport
        # The app's setting, read at each join (a call in progress keeps what it began with).
        self._relay_only = relay_only
        self.sfu_url = sfu_url
        """The SFU we name in our memberships (``foci_preferred``); None: mesh calls only."""
        socket_url = None if sfu_url is None else sfu_socket_url(sfu_url)
        if sfu_url is not None and socket_url is None:
            raise ValueError("the SFU's URL must be http(s)://host[:port][/path]")
        # The page's CSP lets it open this SFU's socket only: a call whose selected SFU is
        # another one is refused by the link (sfu_not_allowed).
        self._sfu_sockets = frozenset() if socket_url is None else frozenset({socket_url})
        self.ice_servers = ice_servers
        self.calls: dict[str, _GroupCall] = {}  # room id -> our call there
        self.ringer = GroupRinger(transport)
        self.dropped_media_results = 0
        self._send = send
        self._pages = pages
        self._options = dict(session_options or {})
        self.ringer.on("ring_started", self._on_ring)
        self.ringer.on("ring_ended", self._on_ring_ended)

    def _broadcast(self, message: dict[str, Any]) -> None:
        for page in self._pages():
            self._send(page, message)

    # -- pages -----------------------------------------------------------------------------

    async def page_opened(self, page: Any) -> None:
        """A page connected: the ringer runs from the first one on; tell it what rings and
        which calls we are in."""
        await self.ringer.start()
        for ring in self.ringer.ringing():
            self._send(page, self._ring_message(ring))
        for call in self.calls.values():
            self._send(page, group_snapshot(call.session, call.joined))

    async def page_closed(self, page: Any) -> None:
        """A page went away: the calls whose media it drove cannot go on; we leave them."""
        for room_id, call in list(self.calls.items()):
            if call.driver is page:
                await self._leave(room_id)

    def media_result(self, page: Any, result: p.MediaResult) -> None:
        """A pair's media result from the page: to its call's mesh, if this page drives it."""
        for call in self.calls.values():
            pair = call.session.pairs.get(result.pair_id or "")
            if pair is not None and call.driver is page and pair.state is not CallState.ENDED:
                call.session.feed(pair.peer, pair.call_id, media_input(result))
                return
        self.dropped_media_results += 1
        logger.info("dropped a media result for a pair this page does not carry")

    def sfu_result(self, page: Any, result: SfuResult) -> None:
        """What the page reports of a call's SFU link: to the link, if this page drives it."""
        call = self.calls.get(result.room_id)
        link = None if call is None or call.driver is not page else _page_link(call.session)
        if link is None:
            self.dropped_media_results += 1
            logger.info("dropped an SFU result for a call this page does not carry")
            return
        link.feed(result)
        if isinstance(result, (SfuTracks, SfuLeft)):
            self._snapshot_soon(result.room_id)

    async def close(self) -> None:
        """Leave every call, stop ringing."""
        for room_id in list(self.calls):
            await self._leave(room_id)
        await self.ringer.close()

    # -- requests ----------------------------------------------------------------------------

    async def join(self, page: Any, request: p.GroupJoin) -> dict[str, Any]:
        """Join (or start) the room's call; ``page`` drives its media."""
        room_id = request.room_id
        if room_id not in self.transport.client.rooms:
            raise PageError("not_found", "no such room")
        if room_id in self.calls:
            raise PageError("illegal", "already in this room's call")

        def to_page(message: dict[str, Any]) -> None:
            self._send(page, message)  # also the pairs' close after we left

        # The link is always the page's: a call through an SFU the page may not reach fails
        # (sfu_not_allowed) rather than running its media in this process.
        options: dict[str, Any] = {
            **self._options,
            "sfu_link_factory": PageSfuLink.factory(to_page, allowed=self._sfu_sockets),
        }
        if self.sfu_url is not None:
            options["sfu_url"] = self.sfu_url
        if self._relay_only is not None:
            options["relay_only"] = self._relay_only()
        session = GroupCallSession(
            self.transport,
            room_id,
            video=request.video,
            # Asked again per join: TURN credentials expire.
            ice_servers=await self.transport.ice_servers(),
            ice_source=self.transport.ice_servers,
            ringer=self.ringer,
            pair_factory=PagePairSession.factory(to_page),
            sending=PageGroupSending(room_id, to_page, video=request.video),
            **options,
        )
        call = self.calls[room_id] = _GroupCall(session, page)
        for name in SESSION_EVENTS:
            session.on(name, lambda *_: self._snapshot_soon(room_id))
        session.on("key_received", lambda *args: self._forward_key(room_id, *args))
        session.on("history_item", lambda item: self._history(room_id, item))
        try:
            await session.join()
        except Exception as error:
            if self.calls.get(room_id) is call:  # (not left meanwhile)
                del self.calls[room_id]
            self._broadcast(left_snapshot(room_id))
            if isinstance(error, SfuLinkError):
                # The SFU's reason (admission's: not_member, wrong_focus, ...) is ours to show.
                raise PageError("failed", f"the SFU: {error.reason[:80]}") from None
            raise
        call.joined = True
        self._snapshot(room_id)
        return {}

    async def leave(self, page: Any, request: p.GroupLeave) -> dict[str, Any]:
        """Leave the room's call."""
        self._call(request.room_id)
        await self._leave(request.room_id)
        return {}

    async def mute(self, page: Any, request: p.GroupMute) -> dict[str, Any]:
        """Mute or unmute our microphone / camera for every member."""
        session = self._call(request.room_id).session
        if request.audio is not None:
            await session.set_microphone_muted(request.audio)
        if request.video is not None:
            await session.set_camera_muted(request.video)
        self._snapshot(request.room_id)
        return {}

    async def screen_share(self, page: Any, request: p.GroupScreenShare) -> dict[str, Any]:
        """Start or stop sharing the screen with every member."""
        await self._call(request.room_id).session.set_screen_share(request.on)
        self._snapshot(request.room_id)
        return {}

    async def decline(self, page: Any, request: p.GroupDecline) -> dict[str, Any]:
        """Decline the room's ring (MSC4310, as ``sealcall group`` does)."""
        try:
            await self.ringer.decline(request.room_id)
        except NoRingError:
            raise PageError("not_found", "this room's call does not ring") from None
        return {}

    def _call(self, room_id: str) -> _GroupCall:
        call = self.calls.get(room_id)
        if call is None:
            raise PageError("not_found", "not in this room's call")
        return call

    async def _leave(self, room_id: str) -> None:
        call = self.calls.pop(room_id, None)
        if call is None:
            return
        try:
            await call.session.leave()
        finally:
            self._broadcast(left_snapshot(room_id))

    # -- events ------------------------------------------------------------------------------

    def _snapshot(self, room_id: str) -> None:
        call = self.calls.get(room_id)
        if call is not None:
            call.snapshot_due = False
            self._broadcast(group_snapshot(call.session, call.joined))

    def _snapshot_soon(self, room_id: str) -> None:
        """One snapshot for the changes of one turn of the loop (a join changes many)."""
        call = self.calls.get(room_id)
        if call is not None and not call.snapshot_due:
            call.snapshot_due = True
            asyncio.get_running_loop().call_soon(self._snapshot, room_id)

    def _forward_key(self, room_id: str, user_id: str, device_id: str, index: int) -> None:
        call = self.calls.get(room_id)
        keys = None if call is None else call.session.keys
        if call is None or keys is None:
            return
        message = receive_key_message(
            room_id, keys.ring.suite, keys.receive_key, user_id, device_id, index
        )
        if message is not None:
            self._send(call.driver, message)

    def _history(self, room_id: str, item: HistoryItem) -> None:
        self._broadcast(
            {
                "type": "history_item",
                "room_id": room_id,
                "item": {**item_json(item, self.transport.user_id), "group": True},
            }
        )

    @staticmethod
    def _ring_message(ring: GroupRing) -> dict[str, Any]:
        return {"type": "group_ring", "room_id": ring.room_id, "sender": ring.sender}

    def _on_ring(self, ring: GroupRing) -> None:
        self._broadcast(self._ring_message(ring))

    def _on_ring_ended(self, ring: GroupRing, reason: RingEndReason) -> None:
        self._broadcast(
            {"type": "group_ring_ended", "room_id": ring.room_id, "reason": str(reason)}
        )

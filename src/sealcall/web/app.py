"""The web client's controller: the call engine on one side, the page sockets on the other.

:class:`CallApp` is the :class:`~sealcall.web.server.PageApp` behind ``sealcall app``. It runs
the calls of one Matrix device (:class:`~sealcall.session.VoIP`, whose sessions hand their media
to a page: :class:`PageCallSession`), answers the page's requests and tells every open page what
happens. The page that places or answers a call drives its media (its *owner*); media commands
that come before a call has an owner (an incoming call's candidates) wait for it, bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiortc import RTCIceServer

from sealcall.calls import (
    Call,
    CallPolicy,
    CallState,
    Direction,
    HistoryItem,
    IllegalTransitionError,
    RelayUnavailableError,
    UnencryptedCallError,
)
from sealcall.calls.call import REPLACED
from sealcall.calls.inputs import LocalMediaFailed
from sealcall.calls.relay_only import RELAY_UNAVAILABLE, offers_turn
from sealcall.media.connection import ice_urls
from sealcall.session import CallSession, VoIP
from sealcall.signaling import StreamMetadata
from sealcall.transport.matrix import MatrixTransport, MatrixTransportError

from . import protocol as p
from .group_app import GroupApp
from .media_commands import media_input
from .page_call import PageCallSession
from .page_socket import PageError, PageSocket
from .rooms import item_json, room_history, room_list
from .sfu_results import SfuResult, SfuResultBase

logger = logging.getLogger(__name__)

MAX_PENDING_MEDIA = 256  # media commands kept for a call that has no page yet
MEDIA_TIMEOUT = 60.0
"""Seconds the page gets to report the offer or answer it was asked for before the call ends
as one whose media failed (a page that hangs; a minute, as a ring: the browser may ask the
user for the microphone first)."""
_AWAITING_PAGE = (CallState.CREATE_OFFER, CallState.CREATE_ANSWER)


class _Page:
    """What we know of one open page socket."""

    def __init__(self, socket: PageSocket) -> None:
        self.socket = socket
        self.e2ee = False


class CallApp:
    """Calls of one Matrix device, driven by and shown in local pages."""

    def __init__(
        self,
        transport: MatrixTransport,
        *,
        ice_servers: Sequence[RTCIceServer] = (),
        policy: CallPolicy | None = None,
        state_dir: str | None = None,
        group_options: dict[str, Any] | None = None,
        media_timeout: float = MEDIA_TIMEOUT,
        sfu_url: str | None = None,
    ) -> None:
        self.transport = transport
        self.media_timeout = media_timeout
        self.ice_servers = tuple(ice_servers)
        self.voip = VoIP(
            transport,
            # Someone looks at the page: a call that cannot be encrypted rings with a warning
            # and is answered only by the user's explicit choice (never by default).
            policy=policy or CallPolicy(ask_unencrypted=True),
            ice_servers=self.ice_servers,
            ice_source=transport.ice_servers,  # asked again per call: the credentials expire
            state_dir=state_dir,
            session_factory=self._new_session,
        )
        self.dropped_media_results = 0
        self._pages: dict[int, _Page] = {}
        self._owners: dict[str, _Page] = {}  # call id -> the page that drives its media
        self._pending: dict[str, deque[dict[str, Any]]] = {}
        self._on_hold: dict[str, bool] = {}
        self._known_rooms: list[dict[str, Any]] = []
        self._joining: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._media_timers: dict[str, asyncio.TimerHandle] = {}  # call id -> its deadline
        self.group = GroupApp(
            transport,
            ice_servers=self.ice_servers,
            send=self._send,
            pages=lambda: list(self._pages.values()),
            session_options=group_options,
            sfu_url=sfu_url,
            relay_only=lambda: self.relay_only,
        )
        group = self.group
        self._handlers: dict[type, Callable[[_Page, Any], Awaitable[dict[str, Any]]]] = {
            p.Hello: self._hello,
            p.ListRooms: self._list_rooms,
            p.GetHistory: self._get_history,
            p.OpenDm: self._open_dm,
            p.PlaceCall: self._place_call,
            p.Answer: self._answer,
            # A call refused because it cannot be encrypted says so to the caller.
            p.Reject: lambda page, r: self._command(
                r.call_id, lambda s: s.reject(encryption_required=not s.encrypted)
            ),
            p.HangUp: lambda page, r: self._command(r.call_id, lambda s: s.hangup()),
            p.Hold: lambda page, r: self._command(r.call_id, lambda s: s.hold(r.on_hold)),
            p.Mute: self._mute,
            p.ScreenShare: lambda page, r: self._command(
                r.call_id, lambda s: s.set_screen_share(r.on)
            ),
            p.UpgradeVideo: lambda page, r: self._command(
                r.call_id, lambda s: s.upgrade_to_video()
            ),
            p.GroupJoin: self._group_join,
            p.GroupLeave: group.leave,
            p.GroupMute: group.mute,
            p.GroupScreenShare: group.screen_share,
            p.GroupDecline: group.decline,
            p.SetRelayOnly: self._set_relay_only,
        }
        voip = self.voip
        voip.on("incoming_call", self._on_incoming)
        voip.on("call_waiting", self._on_waiting)
        voip.on("state_changed", self._on_state)
        voip.on("remote_streams_changed", lambda s, streams: self._remote_media(s))
        voip.on("remote_hold_changed", self._on_remote_hold)
        voip.on("call_ended", self._on_ended)
        voip.on("history_item", self._on_history_item)
        add_batch_listener = getattr(transport, "add_batch_listener", None)
        if add_batch_listener is not None:
            add_batch_listener(self._after_sync)

    async def close(self) -> None:
        """Hang up every call and release everything."""
        for timer in self._media_timers.values():
            timer.cancel()
        self._media_timers.clear()
        await self.group.close()
        await self.voip.close()

    @property
    def relay_only(self) -> bool:
        """The relay-only setting: the engine's policy holds it (``--relay-only`` sets it at
        start, the page's ``set_relay_only`` after); group calls read it when they are joined."""
        return self.voip.manager.policy.relay_only

    # -- the page server's side (PageApp) ------------------------------------------------------

    async def page_opened(self, socket: PageSocket) -> None:
        """A page connected."""
        page = self._pages[socket.number] = _Page(socket)
        await self.group.page_opened(page)
        # A reload or a second tab: the calls going on (a ringing one rings here too).
        for session in list(self.voip.sessions.values()):
            if session.state is not CallState.ENDED:
                self._send(page, self._snapshot(session, page))
                if session.call.remote_streams or self._on_hold.get(session.call_id):
                    self._send(page, self._remote_media_message(session))
                if (
                    session.call.direction is Direction.INCOMING
                    and session.state is CallState.RINGING
                ):
                    self._send(page, {"type": "incoming_call", "call_id": session.call_id})

    async def page_closed(self, socket: PageSocket) -> None:
        """A page went away: the calls whose media it carried cannot go on."""
        page = self._pages.pop(socket.number, None)
        if page is not None:
            await self.group.page_closed(page)
        for call_id, owner in list(self._owners.items()):
            if owner is page:
                del self._owners[call_id]
                session = self.voip.sessions.get(call_id)
                if session is not None and session.state is not CallState.ENDED:
                    self.voip.feed(call_id, LocalMediaFailed("the page that carried it closed"))

    async def page_request(self, socket: PageSocket, request: p.Request) -> dict[str, Any]:
        """Answer one request of a page."""
        page = self._pages.get(socket.number)
        if page is None:
            raise PageError("failed", "this page socket is closing")
        handler = self._handlers.get(type(request))
        if handler is None:
            raise PageError("bad_request", f"{type(request).__name__} is not served yet")
        try:
            return await handler(page, request)
        except UnencryptedCallError as error:
            raise PageError("unencrypted", str(error)) from None
        except RelayUnavailableError as error:
            raise PageError("failed", str(error)) from None
        except IllegalTransitionError as error:
            raise PageError("illegal", str(error)) from None
        except MatrixTransportError as error:
            raise PageError("failed", str(error)) from None

    def page_media_result(self, socket: PageSocket, result: p.MediaResult | SfuResult) -> None:
        """A media result of the page's peer connection: give it to the engine (if the page
        drives that call's media); an ``sfu_*`` one to its group call's SFU link."""
        page = self._pages.get(socket.number)
        if isinstance(result, SfuResultBase):
            self.group.sfu_result(page, result)
            return
        call_id = result.call_id
        if result.pair_id is not None:
            self.group.media_result(page, result)
            return
        session = self.voip.sessions.get(call_id) if call_id else None
        if (
            session is None
            or page is None
            or self._owners.get(session.call_id) is not page
            or session.state is CallState.ENDED
        ):
            self.dropped_media_results += 1
            logger.info("dropped a media result for a call this page does not carry")
            return
        self.voip.feed(session.call_id, media_input(result))

    # -- requests ----------------------------------------------------------------------------

    async def _hello(self, page: _Page, request: p.Hello) -> dict[str, Any]:
        page.e2ee = request.e2ee
        return {
            "user_id": self.transport.user_id,
            "device_id": self.transport.device_id,
            "display_name": self.transport.user_id,
            "relay_only": self.relay_only,
        }

    async def _set_relay_only(self, page: _Page, request: p.SetRelayOnly) -> dict[str, Any]:
        """Change the setting for the calls placed, answered or joined from now on (each call
        keeps the policy it began with: one in progress is not moved)."""
        if request.on and not self.relay_only:
            # Asked now, so the user learns it here rather than when a call fails.
            await self.voip.refresh_ice_servers()
            if not offers_turn(ice_urls(self.voip.ice_servers)):
                raise PageError("failed", RELAY_UNAVAILABLE)
        manager = self.voip.manager
        manager.policy = dataclasses.replace(manager.policy, relay_only=request.on)
        self._broadcast({"type": "settings", "relay_only": request.on})
        return {"relay_only": request.on}

    async def _list_rooms(self, page: _Page, request: p.ListRooms) -> dict[str, Any]:
        return {"rooms": room_list(self.transport)}

    async def _get_history(self, page: _Page, request: p.GetHistory) -> dict[str, Any]:
        self._check_room(request.room_id)
        return {"items": await room_history(self.transport, request.room_id)}

    async def _open_dm(self, page: _Page, request: p.OpenDm) -> dict[str, Any]:
        if request.user_id == self.transport.user_id:
            raise PageError("bad_request", "that is you")
        room_id = self.transport.encrypted_dm_with(request.user_id)
        if room_id is None:
            room_id = await self.transport.create_dm(request.user_id)
        return {"room_id": room_id}

    async def _place_call(self, page: _Page, request: p.PlaceCall) -> dict[str, Any]:
        self._check_e2ee(page)
        room = next((r for r in room_list(self.transport) if r["room_id"] == request.room_id), None)
        if room is None:
            raise PageError("not_found", "no such room")
        if room["kind"] != "dm":
            raise PageError("bad_request", "a group room's call is joined, not placed")
        session = await self.voip.place_call(request.room_id, room["peer"], video=request.video)
        self._own(session.call_id, page)
        return {"call_id": session.call_id}

    async def _answer(self, page: _Page, request: p.Answer) -> dict[str, Any]:
        session = self._session(request.call_id)
        if not page.e2ee and session.encrypted:
            raise PageError("failed", "this browser cannot encrypt frames end to end")
        if self._owners.get(session.call_id, page) is not page:
            # Another page answered it (two tabs): its media stays there.
            raise PageError("illegal", "the call is answered in another page")
        self._own(session.call_id, page)
        call = session.call
        if session.state is CallState.RINGING and call.policy.relay_only != self.relay_only:
            # It rang before the setting changed: nothing of ours has been sent yet, so it is
            # answered as the user now asks.
            call.policy = dataclasses.replace(call.policy, relay_only=self.relay_only)
        try:
            await session.answer(request.video, allow_unencrypted=request.allow_unencrypted)
        except Exception:
            if session.state is CallState.RINGING:
                self._owners.pop(session.call_id, None)  # another page may still answer
            raise
        return {}

    async def _group_join(self, page: _Page, request: p.GroupJoin) -> dict[str, Any]:
        self._check_e2ee(page)
        return await self.group.join(page, request)

    async def _mute(self, page: _Page, request: p.Mute) -> dict[str, Any]:
        session = self._session(request.call_id)
        if request.audio is not None:
            await session.set_microphone_muted(request.audio)
        if request.video is not None:
            await session.set_camera_muted(request.video)
        return {}

    async def _command(
        self, call_id: str, command: Callable[[CallSession], Awaitable[None]]
    ) -> dict[str, Any]:
        await command(self._session(call_id))
        return {}

    def _session(self, call_id: str) -> CallSession:
        session = self.voip.sessions.get(call_id)
        if session is None:
            raise PageError("not_found", "no such call")
        return session

    def _check_room(self, room_id: str) -> None:
        if room_id not in self.transport.client.rooms:
            raise PageError("not_found", "no such room")

    @staticmethod
    def _check_e2ee(page: _Page) -> None:
        if not page.e2ee:
            raise PageError(
                "failed", "this browser cannot encrypt frames end to end: no call is placed"
            )

    # -- media -------------------------------------------------------------------------------

    def _new_session(self, voip: VoIP, call: Call, room_id: str) -> CallSession:
        return PageCallSession(voip, call, room_id, self)

    def _own(self, call_id: str, page: _Page) -> None:
        self._owners[call_id] = page
        session = self.voip.sessions.get(call_id)
        if session is not None:
            self._announce(session)
        for fields in self._pending.pop(call_id, ()):
            self._send(page, {"type": "media", "call_id": call_id, **fields})

    def send_media(self, call_id: str, fields: dict[str, Any]) -> None:
        """Send a media command to the page that drives the call (or keep it until one does)."""
        page = self._owners.get(call_id)
        if fields.get("op") == "close":
            # (The owner is forgotten when the call has ended: glare hands it on.)
            self._pending.pop(call_id, None)
        if page is not None:
            self._send(page, {"type": "media", "call_id": call_id, **fields})
        elif fields.get("op") != "close":
            pending = self._pending.setdefault(call_id, deque(maxlen=MAX_PENDING_MEDIA))
            pending.append(fields)

    # -- events to every page ------------------------------------------------------------------

    def _send(self, page: _Page, message: dict[str, Any]) -> None:
        # The socket queues at once and sends in order: no task per message.
        with contextlib.suppress(TypeError, ValueError):
            page.socket.post(message)

    def _broadcast(self, message: dict[str, Any]) -> None:
        for page in list(self._pages.values()):
            self._send(page, message)

    def _announce(self, session: CallSession) -> None:
        """Send every page the call's snapshot (each learns whether it drives the media)."""
        for page in list(self._pages.values()):
            self._send(page, self._snapshot(session, page))

    def _snapshot(self, session: CallSession, page: _Page) -> dict[str, Any]:
        """The ``call`` event of ``session`` for ``page``."""
        call = session.call
        return {
            "type": "call",
            "call_id": session.call_id,
            "room_id": session.room_id,
            "peer": call.peer,
            "direction": call.direction.value,
            "video": call.video,
            "state": call.state.value,
            "encrypted": session.encrypted,
            "owner": page is self._owners.get(session.call_id),
        }

    def _on_state(self, session: CallSession, old: CallState, new: CallState) -> None:
        self._announce(session)
        timer = self._media_timers.pop(session.call_id, None)
        if timer is not None:
            timer.cancel()
        if new in _AWAITING_PAGE:
            self._media_timers[session.call_id] = asyncio.get_running_loop().call_later(
                self.media_timeout, self._media_overdue, session, new
            )

    def _media_overdue(self, session: CallSession, state: CallState) -> None:
        self._media_timers.pop(session.call_id, None)
        if session.state is state:
            logger.warning("a call's page did not report its media in time; ending the call")
            self.voip.feed(session.call_id, LocalMediaFailed("the page did not answer"))

    def _on_incoming(self, session: CallSession) -> None:
        self._announce(session)
        self._broadcast({"type": "incoming_call", "call_id": session.call_id})

    def _on_waiting(self, session: CallSession, current: CallSession) -> None:
        self._announce(session)
        self._broadcast(
            {"type": "call_waiting", "call_id": session.call_id, "current_call_id": current.call_id}
        )

    def _remote_media(self, session: CallSession) -> None:
        self._broadcast(self._remote_media_message(session))

    def _remote_media_message(self, session: CallSession) -> dict[str, Any]:
        streams: dict[str, StreamMetadata] = session.call.remote_streams
        return {
            "type": "remote_media",
            "call_id": session.call_id,
            "streams": {
                stream: {
                    "purpose": meta.purpose,
                    "audio_muted": meta.audio_muted,
                    "video_muted": meta.video_muted,
                }
                for stream, meta in streams.items()
            },
            "on_hold": self._on_hold.get(session.call_id, False),
        }

    def _on_remote_hold(self, session: CallSession, on_hold: bool) -> None:
        self._on_hold[session.call_id] = on_hold
        self._remote_media(session)

    def _on_ended(self, session: CallSession, reason: str, by_remote: bool) -> None:
        self._broadcast(
            {
                "type": "call_ended",
                "call_id": session.call_id,
                "reason": reason,
                "by_remote": by_remote,
            }
        )
        self._on_hold.pop(session.call_id, None)
        page = self._owners.pop(session.call_id, None)
        if reason == REPLACED and page is not None:
            # Glare merged our call into the far side's, which the engine answers: its media
            # is the page's that placed ours.
            survivor = next(
                (
                    other
                    for other in self.voip.sessions.values()
                    if other.state is not CallState.ENDED
                    and other.call.direction is Direction.INCOMING
                    and other.room_id == session.room_id
                    and other.call.peer == session.call.peer
                    and other.call_id not in self._owners
                ),
                None,
            )
            if survivor is not None:
                self._own(survivor.call_id, page)

    def _on_history_item(self, item: HistoryItem) -> None:
        # (Its session is kept until the engine's actions of the end have run.)
        session = self.voip.sessions.get(item.call_id)
        if session is not None:
            self._broadcast(
                {
                    "type": "history_item",
                    "room_id": session.room_id,
                    "item": item_json(item, self.transport.user_id),
                }
            )

    # -- rooms ---------------------------------------------------------------------------------

    def _after_sync(self) -> None:
        """After each sync: accept new invites (a contact's DM) and tell pages of new rooms."""
        for room_id in self.transport.invites():
            if room_id not in self._joining:
                self._joining.add(room_id)
                task = asyncio.ensure_future(self._join(room_id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        rooms = room_list(self.transport)
        if rooms != self._known_rooms:
            self._known_rooms = rooms
            self._broadcast({"type": "rooms", "rooms": rooms})

    async def _join(self, room_id: str) -> None:
        try:
            await self.transport.join(room_id)
        except MatrixTransportError as error:
            logger.warning("joining an invited room failed: %s", type(error).__name__)
        finally:
            self._joining.discard(room_id)

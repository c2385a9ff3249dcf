"""The asyncio layer of the call engine: binds the call manager to a transport, aiortc and a clock.

Everything the manager does runs on one worker task, one input at a time, so the pure state
machines see a strict order of events; media work (offers, answers) runs in that order too and
feeds its results back as new inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiortc import RTCIceServer
from pyee.asyncio import AsyncIOEventEmitter

from sealcall.calls import (
    Call,
    CallError,
    CallManager,
    CallPolicy,
    CallState,
    CallWaiting,
    IncomingCall,
    ManagerAction,
    RemoteEvent,
)
from sealcall.calls import actions as act
from sealcall.calls.inputs import LocalInput, LocalMediaFailed
from sealcall.calls.relay_only import RELAY_UNAVAILABLE, RelayUnavailableError, offers_turn
from sealcall.media import ice_urls
from sealcall.signaling import CallInvite, SignalingError, parse
from sealcall.transport import RoomEvent, Transport

from .call_session import CallSession
from .deadline_timer import DeadlineTimer
from .local_media import LocalMedia
from .ringing_store import RingingStore
from .send_chain import SendChain

logger = logging.getLogger(__name__)

_Work = tuple[str, Any, Any, "asyncio.Future[None] | None"]

# While the homeserver is down nio retries each send until it answers. A command (which has
# taken effect here at once: a hang-up has ended the call) returns after waiting this long for
# its events, which still go out, in order, once the homeserver is back; close() gives up on
# events still unsent after this long: the far side then ends the call when our media stops
# (ice_timeout), as if this device had crashed.
SEND_TIMEOUT = 10.0


class VoIP(AsyncIOEventEmitter):
    """Voice and video calls for one device, after the Famedly SDK's ``VoIP``.

    Events (``voip.on(name, handler)``): ``incoming_call(session)``,
    ``call_waiting(session, current_session)``, ``state_changed(session, old, new)``,
    ``remote_media_added(session, track, purpose)``, ``remote_media_removed(session, track,
    purpose)``, ``remote_streams_changed(session, streams)`` (mute state and purposes, MSC3291),
    ``remote_mute_changed(session, audio_muted, video_muted)``,
    ``remote_hold_changed(session, on_hold)``, ``call_ended(session, reason, by_remote)``,
    ``history_item(item)``.

    ``session_factory`` makes the session of each call: by default a :class:`CallSession`, whose
    media runs here in aiortc; the web client gives a page-backed one. ``ice_source``, if given,
    is asked for fresh ICE servers before each call is placed or answered (TURN credentials
    expire); ``ice_servers`` are the ones to use until then.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        policy: CallPolicy | None = None,
        media: LocalMedia | None = None,
        ice_servers: Sequence[RTCIceServer] = (),
        host_addresses: Sequence[str] | None = None,
        clock: Callable[[], float] = time.time,
        state_dir: str | Path | None = None,
        session_factory: Callable[[VoIP, Call, str], CallSession] | None = None,
        ice_source: Callable[[], Awaitable[Sequence[RTCIceServer]]] | None = None,
    ) -> None:
        super().__init__()
        self.transport = transport
        self.manager = CallManager(transport.user_id, transport.device_id, policy)
        self.media = media or LocalMedia()
        self.ice_servers = tuple(ice_servers)
        self._ice_source = ice_source
        self.host_addresses = tuple(host_addresses) if host_addresses is not None else None
        self.sessions: dict[str, CallSession] = {}
        # Who carries out a call's media: aiortc here (CallSession), or a page (the web client).
        self._new_session = session_factory or CallSession
        self.malformed_events = 0
        self._closing = False
        self._clock = clock
        # How long a command waits for its events, and close() for unsent ones (SEND_TIMEOUT).
        self.send_timeout = SEND_TIMEOUT
        self._queue: asyncio.Queue[_Work] = asyncio.Queue()
        self._worker = asyncio.ensure_future(self._work())
        self._timer = DeadlineTimer(lambda: self._queue.put_nowait(("timer", None, None, None)))
        # Call events go out in order, each send after the one before, while the engine goes on
        # with the next input: a send is a homeserver round trip, and media (ICE, DTLS) must
        # not wait for one (the caller's select_answer used to hold back "connected").
        self._sends = SendChain()
        self._input_sends: list[asyncio.Task[None]] = []
        # A transport that delivers whole sync responses lets us ring only once the response
        # is processed, so a call hung up later in the same response never rings (MSC2746).
        self._held_rings: list[ManagerAction] = []
        add_batch_listener = getattr(transport, "add_batch_listener", None)
        self._batched = add_batch_listener is not None
        if add_batch_listener is not None:
            add_batch_listener(self._on_batch_end)
        transport.add_listener(self._on_room_event)
        # Calls that rang when this device last stopped ring again (if still valid).
        self._ringing = RingingStore(Path(state_dir) / "ringing") if state_dir else None
        if self._ringing is not None:
            for remote in self._ringing.restore(self._clock()):
                self._queue.put_nowait(("remote", remote, None, None))

    # -- application API ---------------------------------------------------------------

    async def refresh_ice_servers(self) -> None:
        """Ask ``ice_source`` (e.g. the homeserver's ``/voip/turnServer``) for the ICE servers
        again: TURN credentials expire, so a client that runs for long asks before each call."""
        if self._ice_source is not None:
            self.ice_servers = tuple(await self._ice_source())

    def relay_available(self) -> bool:
        """False if the policy asks for relay-only calls and no TURN server is offered."""
        return not self.manager.policy.relay_only or offers_turn(ice_urls(self.ice_servers))

    async def place_call(self, room_id: str, peer: str, *, video: bool = False) -> CallSession:
        """Call ``peer`` in the DM room ``room_id``.

        Raises :class:`~sealcall.calls.RelayUnavailableError` (and places nothing) for a
        relay-only policy without a TURN server.
        """
        self._check_open()
        await self.refresh_ice_servers()
        if not self.relay_available():
            raise RelayUnavailableError(RELAY_UNAVAILABLE)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        holder: list[CallSession] = []
        await self._queue.put(("place", (room_id, peer, video), holder, done))
        await done
        return holder[0]

    async def command(self, call_id: str, command: LocalInput) -> None:
        """Give a command to a call; return once the engine took it and sent its call events, or
        after ``send_timeout`` seconds if the homeserver does not take them (they go out once
        it does; the command took effect here at once)."""
        self._check_open()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put(("command", call_id, command, done))
        await done

    def _check_open(self) -> None:
        if self._closing:
            raise CallError("this VoIP instance is closed")

    def feed(self, call_id: str, result: LocalInput) -> None:
        """Queue a media result for a call (used by :class:`CallSession`)."""
        if not self._closing:
            self._queue.put_nowait(("command", call_id, result, None))

    async def close(self, *, hang_up: bool = True) -> None:
        """Finish the work already queued and release all media.

        With ``hang_up`` (the default) every call is hung up first. Without it the calls are
        left as they are, as when the device stops or crashes: a ringing call rings again after a
        restart with the same ``state_dir``. Call events the homeserver has not taken within
        ``send_timeout`` seconds (it is down) are given up.
        """
        if self._closing:
            return
        for session in list(self.sessions.values()):
            if hang_up and session.call.state.value != "ended":
                with contextlib.suppress(Exception):
                    await session.hangup()
        self._closing = True  # from here on, arriving events are not taken any more
        await self._queue.put(("stop", None, None, None))
        await self._worker
        unsent = await self._sends.drain(self.send_timeout)
        if unsent:
            logger.warning("closed with %d call event(s) the homeserver did not take", unsent)
        self._timer.cancel()
        for session in self.sessions.values():
            await session.close()

    # -- inputs ----------------------------------------------------------------------------

    def _on_room_event(self, room_event: RoomEvent) -> None:
        if self._closing:
            return
        if not str(room_event.event.get("type", "")).startswith(("m.call.", "org.matrix.call.")):
            return
        try:
            event = parse(room_event.event)
        except SignalingError as error:
            self.malformed_events += 1
            logger.info("dropped a malformed call event: %.200s", error)
            return
        remote = RemoteEvent(room_event.room_id, room_event.sender, event, room_event.age_ms)
        self._queue.put_nowait(("remote", remote, None, None))

    def _on_batch_end(self) -> None:
        if not self._closing:
            self._queue.put_nowait(("flush", None, None, None))

    def _track_ringing(self, remote: RemoteEvent) -> None:
        if self._ringing is None or not isinstance(remote.event, CallInvite):
            return
        call = self.manager.calls.get(remote.event.call_id)
        if call is not None and call.state is CallState.RINGING:
            self._ringing.add(remote, self._clock())

    async def _work(self) -> None:
        while True:
            kind, subject, extra, done = await self._queue.get()
            if kind == "stop":
                return
            self._input_sends = []
            try:
                now = self._clock()
                if kind == "remote":
                    out = self.manager.handle_remote(subject, now)
                    self._track_ringing(subject)
                elif kind == "place":
                    room_id, peer, video = subject
                    call, out = self.manager.place_call(room_id, peer, now, video=video)
                    extra.append(self._session(call, room_id))
                elif kind == "timer":
                    out = self.manager.handle_timer(now)
                elif kind == "flush":
                    held, self._held_rings = self._held_rings, []
                    ringing = [a for a in held if a.call.state is CallState.RINGING]
                    await self._run(ringing, hold_rings=False)
                    out = []
                else:
                    out = self.manager.command(subject, extra, now)
                await self._run(out)
            except Exception as error:
                if done is not None and not done.done():
                    done.set_exception(error)
                else:
                    logger.exception("call engine input %s failed", kind)
            else:
                if done is not None and not done.done():
                    # A command returns once its call events have been sent (or after
                    # send_timeout while the homeserver is down).
                    self._resolve_after_sends(done, self._input_sends, self.send_timeout)
            self._schedule_timer()

    @staticmethod
    def _resolve_after_sends(
        done: asyncio.Future[None], sends: list[asyncio.Task[None]], timeout: float
    ) -> None:
        if not sends:
            done.set_result(None)
            return

        def resolve(_: object = None) -> None:
            if not done.done():
                done.set_result(None)

        asyncio.gather(*sends).add_done_callback(resolve)
        asyncio.get_running_loop().call_later(timeout, resolve)

    def _schedule_timer(self) -> None:
        if not self._closing:
            self._timer.arm([self.manager.next_deadline()], self._clock())

    def _session(self, call: Call, room_id: str) -> CallSession:
        session = self.sessions.get(call.call_id)
        if session is None:
            session = self.sessions[call.call_id] = self._new_session(self, call, room_id)
        return session

    # -- outputs ---------------------------------------------------------------------------

    async def _run(self, out: list[ManagerAction], *, hold_rings: bool = True) -> None:
        """Carry out actions in order. One failing action (a send that fails, an application
        handler that raises) is logged and does not stop the rest: a call that ends must still
        release its media and report its end."""
        for item in out:
            if (
                isinstance(item.action, (IncomingCall, CallWaiting))
                and self._batched
                and hold_rings
            ):
                self._held_rings.append(item)
                continue
            try:
                await self._run_one(item)
            except Exception:
                logger.exception(
                    "call %s: %s failed", item.call.call_id, type(item.action).__name__
                )
                if (
                    isinstance(item.action, act.SendEvent)
                    and item.call.state is not CallState.ENDED
                ):
                    self.feed(item.call.call_id, LocalMediaFailed("sending a call event failed"))
        for call_id in [c for c, s in self.sessions.items() if s.call.state is CallState.ENDED]:
            del self.sessions[call_id]  # its media is closed and its keys are forgotten

    def _send_in_order(self, item: ManagerAction, action: act.SendEvent) -> None:
        """Send a call event after every event sent before it, without holding up the engine."""
        content = action.event.to_dict()["content"]

        async def send() -> None:
            try:
                await self.transport.send_room_event(item.room_id, action.event.TYPE, content)
            except Exception:
                logger.exception("call %s: sending %s failed", item.call.call_id, action.event.TYPE)
                if item.call.state is not CallState.ENDED:
                    self.feed(item.call.call_id, LocalMediaFailed("sending a call event failed"))

        task = self._sends.then(send)
        self._input_sends.append(task)

    async def _run_one(self, item: ManagerAction) -> None:
        session = self._session(item.call, item.room_id)
        action = item.action
        if isinstance(action, act.SendEvent):
            self._send_in_order(item, action)
        elif isinstance(action, IncomingCall):
            self.emit("incoming_call", session)
        elif isinstance(action, CallWaiting):
            current = self._session(action.current, self.manager.rooms[action.current.call_id])
            self.emit("call_waiting", session, current)
        elif isinstance(action, act.StateChanged):
            if action.old is CallState.RINGING and self._ringing is not None:
                self._ringing.remove(item.call.call_id)
            self.emit("state_changed", session, action.old, action.new)
        elif isinstance(action, act.RemoteStreamsChanged):
            self.emit("remote_streams_changed", session, action.streams)
            for track, purpose in session.gone_remote_tracks():
                self.emit("remote_media_removed", session, track, purpose)
            mute = session.remote_mute_change()
            if mute is not None:
                self.emit("remote_mute_changed", session, *mute)
        elif isinstance(action, act.RemoteHoldChanged):
            self.emit("remote_hold_changed", session, action.on_hold)
        elif isinstance(action, act.CallEnded):
            self.emit("call_ended", session, action.reason, action.by_remote)
        elif isinstance(action, act.HistoryItemReady):
            self.emit("history_item", action.item)
        else:
            await session.perform(action)

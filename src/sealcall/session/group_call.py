"""The asyncio layer of a group call: one device's part in a room's full-mesh call.

:class:`GroupCallSession` joins what the other modules keep apart, as :class:`VoIP` binds the call
manager: the room's membership (:class:`GroupMembership`), our media key and everyone else's
(:class:`GroupKeys`), the mesh of 1:1 calls (:class:`~sealcall.group.Mesh`, sans-I/O), one
peer connection per pair (:class:`MeshPairSession`), the encoders every pair shares
(:class:`~sealcall.media.SharedEncoder`: each frame is encoded and encrypted once, whoever
receives it) and who is speaking (:class:`~sealcall.group.SpeakingDetector`, from the decoded
audio of each peer).

One worker task takes one input at a time (a membership change, a pair signaling message, a
media result, a timer, a command) and carries out what the mesh answers; signaling messages go
out in order on a send chain, so a slow Olm session set-up never holds up media.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiortc import RTCIceServer
from aiortc.mediastreams import MediaStreamTrack

from sealcall.calls import Call, CallState, Direction
from sealcall.calls import actions as act
from sealcall.calls.history import HistoryItem, Outcome
from sealcall.calls.inputs import LocalInput
from sealcall.group import (
    Member,
    MemberDevice,
    MemberJoined,
    MemberLeft,
    MemberRejoined,
    MembershipEvent,
    Mesh,
    MeshAction,
    PairEnded,
    PairMedia,
    SendSignal,
    SpeakingChanged,
    SpeakingDetector,
)
from sealcall.group.member_event import MEMBER_EVENT_TYPE
from sealcall.media import (
    CallbackOpener,
    SharedEncoder,
    meter_audio_levels,
)
from sealcall.signaling import StreamPurpose
from sealcall.transport.matrix import DeviceMessage, MatrixTransport

from .deadline_timer import DeadlineTimer
from .group_keys import GroupKeys
from .group_membership import DEFAULT_LEAVE_DELAY_MS, DEFAULT_RESTART_MS, GroupMembership
from .group_ringing import GroupRinger
from .group_sending import GroupSending
from .local_media import LocalMedia
from .mesh_pair import MeshPairSession
from .safe_emitter import SafeEventEmitter
from .send_chain import SendChain

logger = logging.getLogger(__name__)

CALL_SIGNAL_PREFIXES = ("m.call.", "org.matrix.call.")
MAX_HELD = 512  # membership changes or signals before our join completes (a few per member)

_Work = tuple[str, Any, "asyncio.Future[None] | None"]

PairFactory = Callable[["GroupCallSession", MemberDevice, Call], MeshPairSession]
"""Makes the live media of one pair (default :class:`MeshPairSession`, aiortc)."""


class GroupCallSession(SafeEventEmitter):
    """One device's part in a room's group call (full mesh), after the Famedly SDK's
    ``GroupCallSession``.

    Events (``session.on(name, handler)``):

    - ``member_joined(member)``, ``member_left(member, reason)``, ``member_rejoined(old, new)``:
      the call's other member devices (:class:`~sealcall.group.Member`);
    - ``peer_state_changed(device, old, new)``: the 1:1 call with a member device
      (:class:`~sealcall.calls.CallState`), and ``peer_ended(device, reason, retry_at)``;
    - ``remote_media_added(device, track, purpose)``, ``remote_media_removed(device, track,
      purpose)``, ``remote_mute_changed(device, audio_muted, video_muted)`` (MSC3291, per pair);
    - ``speaking_changed(device, speaking)``, ``active_speaker_changed(device or None)``;
    - ``send_key_changed(index)``, ``key_received(user_id, device_id, index)``;
    - ``history_item(item)``: one :class:`~sealcall.calls.history.HistoryItem` when we leave.

    The first member to join rings the room (MSC4075) unless ``ring`` is False; pass the
    device's :class:`GroupRinger` as ``ringer`` so that its rings of this room stop while we are
    in the call.

    The media is pluggable as :class:`VoIP`'s is: ``pair_factory`` makes each pair's media
    (default :class:`MeshPairSession`) and ``sending`` is our outgoing media (default a
    :class:`GroupSending` of ``media``); the web client passes versions whose media runs in a
    browser page.
    """

    def __init__(
        self,
        transport: MatrixTransport,
        room_id: str,
        *,
        video: bool = False,
        media: LocalMedia | None = None,
        ice_servers: Sequence[RTCIceServer] = (),
        host_addresses: Sequence[str] | None = None,
        leave_delay_ms: int = DEFAULT_LEAVE_DELAY_MS,
        restart_ms: int = DEFAULT_RESTART_MS,
        key_options: dict[str, Any] | None = None,
        retry_delays: tuple[float, ...] | None = None,
        ring: bool = True,
        ringer: GroupRinger | None = None,
        clock: Callable[[], float] = time.time,
        pair_factory: PairFactory = MeshPairSession,
        sending: GroupSending | None = None,
    ) -> None:
        super().__init__()
        self.transport = transport
        self.room_id = room_id
        self.video = video
        self.media = media or LocalMedia()
        self.ice_servers = tuple(ice_servers)
        self.host_addresses = tuple(host_addresses) if host_addresses is not None else None
        self.own = MemberDevice(transport.user_id, transport.device_id)
        self.membership = GroupMembership(
            transport, room_id, leave_delay_ms=leave_delay_ms, restart_ms=restart_ms
        )
        self.keys: GroupKeys | None = None
        self.ring = ring
        self.ringer = ringer
        self.ring_event_id: str | None = None
        """Our ring notification's event id, if we started the call and rang the room."""
        self._key_options = dict(key_options or {})
        self._retry_delays = retry_delays
        self.mesh: Mesh | None = None
        self.sending = sending if sending is not None else GroupSending(self.media, video=video)
        self._pair_factory = pair_factory
        self.pairs: dict[str, MeshPairSession] = {}  # call id -> the pair's live media
        self.speaking = SpeakingDetector()
        self.joined_at: float | None = None
        self.started_call = False  # nobody else was in the call when we joined
        self._clock = clock
        self._held: list[MembershipEvent] = []
        self._held_signals: list[DeviceMessage] = []
        self._queue: asyncio.Queue[_Work] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._timer = DeadlineTimer(lambda: self._queue.put_nowait(("timer", None, None)))
        self._sends = SendChain()
        self._active_speaker: MemberDevice | None = None
        self._closed = False
        for name in ("member_joined", "member_left", "member_rejoined"):
            self.membership.on(name, self._membership_listener(name))
        # Our own membership changes (a rejoin under a new membershipID) come only as this.
        self.membership.on("state_changed", self._on_own_state)

    # -- queries ---------------------------------------------------------------------------

    @property
    def encoders(self) -> dict[str, SharedEncoder]:
        """Our shared encoders by role: microphone, camera, screenshare."""
        return self.sending.encoders

    @property
    def audio_muted(self) -> bool:
        """Whether our microphone is muted."""
        return self.sending.audio_muted

    @property
    def video_muted(self) -> bool:
        """Whether our camera is off."""
        return self.sending.video_muted

    @property
    def screensharing(self) -> bool:
        """Whether we share our screen."""
        return self.sending.screensharing

    def screen_encoder(self, on: bool) -> SharedEncoder | None:
        """The shared screen-share encoder (see :meth:`GroupSending.screen_encoder`)."""
        return self.sending.screen_encoder(on)

    def members(self) -> list[Member]:
        """The call's other member devices."""
        return self.membership.members()

    def peer_sessions(self) -> dict[MemberDevice, MeshPairSession]:
        """The live pair of each member device we have a call with."""
        return {pair.peer: pair for pair in self.pairs.values()}

    def peer_state(self, device: MemberDevice) -> CallState | None:
        """The state of our 1:1 call with ``device`` (None: none now)."""
        pair = self.peer_sessions().get(device)
        return None if pair is None else pair.call.state

    def connected_peers(self) -> list[MemberDevice]:
        """The member devices whose pair call is connected."""
        return [d for d, p in self.peer_sessions().items() if p.call.state is CallState.CONNECTED]

    def active_speaker(self) -> MemberDevice | None:
        """Who is speaking now (the loudest, held briefly so it does not flicker), or None."""
        return self._active_speaker

    def stats(self) -> dict[str, Any]:
        """What we sent (each frame encoded and encrypted once, by role) and what we received
        from each member device (``"@user:server DEVICE"``), by kind: frames received,
        decrypted and dropped."""
        received: dict[str, dict[str, dict[str, int]]] = {}
        for device, pair in self.peer_sessions().items():
            kinds = received.setdefault(f"{device.user_id} {device.device_id}", {})
            for tap in pair.receiver_taps():
                totals = kinds.setdefault(
                    tap.kind, {"frames_received": 0, "frames_decrypted": 0, "frames_dropped": 0}
                )
                totals["frames_received"] += tap.counters.frames_received
                totals["frames_decrypted"] += tap.counters.frames_decrypted
                totals["frames_dropped"] += tap.counters.frames_dropped
        return {"sent": self.sending.stats(), "received": received}

    # -- commands --------------------------------------------------------------------------

    async def join(self) -> None:
        """Join the room's call: announce our membership, start our key, connect to every
        member device. Raises like :meth:`GroupMembership.join` (an unencrypted room is
        refused before anything is sent)."""
        if self._worker is not None or self._closed:
            raise RuntimeError("join() once per GroupCallSession")
        self._worker = asyncio.ensure_future(self._work())
        self.transport.add_to_device_listener(self._on_message)
        try:
            await self.membership.join()
            if self._closed:  # closed meanwhile: start no key and no encoder
                raise RuntimeError("this GroupCallSession was closed while joining")
            keys = GroupKeys(
                self.transport,
                self.room_id,
                self.membership,
                on_use_key=self.sending.use_key,
                **self._key_options,
            )
            self.keys = keys
            keys.on("send_key_changed", lambda key: self.emit("send_key_changed", key.index))
            keys.on("key_received", lambda *args: self.emit("key_received", *args))
            self.sending.start()
            await keys.start()
            self.joined_at = self._clock()
            self.started_call = not self.membership.members()
            await self._submit("joined", None)
            await self._ring()
        except Exception:
            await self.close(leave=True)
            raise

    async def _ring(self) -> None:
        if self._closed:
            return  # left before the join finished: ring for nothing
        ringer = self.ringer
        if ringer is None and self.ring:
            ringer = GroupRinger(self.transport, clock=self._clock)  # only to send the ring
        if ringer is None:
            return
        try:
            self.ring_event_id = await ringer.ring_if_first(self.membership)
        except Exception as error:  # the call goes on; the others can still join it
            logger.warning("ringing the room failed: %s", type(error).__name__)

    async def leave(self) -> None:
        """Hang up every pair, leave the call and release the media."""
        await self.close(leave=True)

    async def close(self, *, leave: bool = True) -> None:
        """Stop. Without ``leave`` nothing is sent (as a crashed device stops): the others see
        us go when our delayed leave fires."""
        if self._closed:
            return
        if leave and self._worker is not None and not self._worker.done():
            with contextlib.suppress(Exception):
                await self._submit("leave", None)
        self._closed = True
        self.transport.remove_to_device_listener(self._on_message)
        if self._worker is not None and not self._worker.done():
            await self._queue.put(("stop", None, None))
            await self._worker
        self._timer.cancel()
        await self._sends.drain()
        if self.keys is not None:
            await self.keys.close()
        await self.membership.close(leave=leave)
        for pair in list(self.pairs.values()):
            await pair.close()
        self.pairs.clear()
        await self.sending.stop()
        if self.ringer is not None:
            self.ringer.left(self.room_id)
        if leave and self.joined_at is not None:
            self._history()

    async def set_microphone_muted(self, muted: bool) -> None:
        """Mute or unmute: no audio frame is encoded while muted; every member is told.
        Before :meth:`join` it sets how we join."""
        await self._submit("mute", (muted, None))

    async def set_camera_muted(self, muted: bool) -> None:
        """Turn the camera off or on (it restarts with a key frame); every member is told."""
        await self._submit("mute", (None, muted))

    async def set_screen_share(self, on: bool) -> None:
        """Start or stop sharing the screen with every member (renegotiates each pair)."""
        await self._submit("screenshare", on)

    async def _submit(self, kind: str, subject: Any) -> None:
        if self._closed:
            raise RuntimeError("this GroupCallSession is closed")
        if self._worker is None:  # before join(): a mute or screen share to start with
            self._take(kind, subject)
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((kind, subject, done))
        await done

    def feed(self, peer: MemberDevice, call_id: str, result: LocalInput) -> None:
        """Queue a media result for a pair's call (used by :class:`MeshPairSession`)."""
        if not self._closed:
            self._queue.put_nowait(("pair", (peer, call_id, result), None))

    # -- media -----------------------------------------------------------------------------

    def opener(self, peer: MemberDevice) -> CallbackOpener:
        """What decrypts ``peer``'s frames: its group keys (safe on aiortc's decoder thread)."""
        keys = self.keys
        assert keys is not None
        user_id, device_id = peer.user_id, peer.device_id
        return CallbackOpener(lambda codec, data: keys.unprotect(user_id, device_id, codec, data))

    def remote_track_added(
        self, pair: MeshPairSession, track: MediaStreamTrack, purpose: StreamPurpose
    ) -> None:
        """A pair's connection announced a remote track: meter its audio, tell the app."""
        if track.kind == "audio":
            meter_audio_levels(track, lambda dbov: self._on_level(pair, dbov))
        self._emit("remote_media_added", pair.peer, track, purpose)

    def remote_track_removed(
        self, pair: MeshPairSession, track: MediaStreamTrack, purpose: StreamPurpose
    ) -> None:
        """A pair's remote track ended."""
        self._emit("remote_media_removed", pair.peer, track, purpose)

    def _on_level(self, pair: MeshPairSession, dbov: float) -> None:
        if self._closed or self.pairs.get(pair.call_id) is not pair:
            return  # frames decoded before the pair's connection closed: it has ended
        self._speaking(self.speaking.level(pair.peer, dbov, self._clock()))
        self._schedule_timer()

    def _speaking(self, changes: list[SpeakingChanged]) -> None:
        for change in changes:
            if isinstance(change.source, MemberDevice):
                self._emit("speaking_changed", change.source, change.speaking)
        loudest = self.speaking.loudest()
        active = loudest if isinstance(loudest, MemberDevice) else None
        if active != self._active_speaker:
            self._active_speaker = active
            self._emit("active_speaker_changed", active)

    # -- inputs ----------------------------------------------------------------------------

    def _membership_listener(self, name: str) -> Callable[..., None]:
        def listener(*args: Any) -> None:
            if self._closed:
                return
            event: MembershipEvent
            if name == "member_joined":
                event = MemberJoined(args[0])
            elif name == "member_left":
                event = MemberLeft(args[0], args[1])
            else:
                event = MemberRejoined(args[0], args[1])
            self._queue.put_nowait(("membership", event, None))
            self._emit(name, *args)

        return listener

    def _on_own_state(self, *_: Any) -> None:
        if not self._closed:
            self._queue.put_nowait(("own", None, None))

    def _on_message(self, message: DeviceMessage) -> None:
        if not self._closed and message.type.startswith(CALL_SIGNAL_PREFIXES):
            self._queue.put_nowait(("signal", message, None))

    async def _work(self) -> None:
        while True:
            kind, subject, done = await self._queue.get()
            if kind == "stop":
                return
            try:
                await self._run(self._take(kind, subject))
                await self.sending.release_screen()
            except Exception as error:
                if done is not None and not done.done():
                    done.set_exception(error)
                else:
                    logger.exception("group call input %s failed", kind)
            else:
                if done is not None and not done.done():
                    done.set_result(None)
            self._schedule_timer()

    def _take(self, kind: str, subject: Any) -> list[MeshAction]:
        now = self._clock()
        mesh = self.mesh
        if kind == "joined":
            own_session = self.membership.own.membership_id
            assert own_session is not None
            mesh = self.mesh = self._new_mesh(own_session)
            held, self._held = self._held, []
            signals, self._held_signals = self._held_signals, []
            first = mesh.on_membership(held, now)
            for message in signals:
                first += mesh.receive(message, now)
            return first
        if mesh is None:
            # Before our membership is out: kept, bounded, for the mesh (a peer may invite us
            # as soon as it sees our member event, before join() returns here).
            if kind == "membership" and len(self._held) < MAX_HELD:
                self._held.append(subject)
            elif kind == "signal" and len(self._held_signals) < MAX_HELD:
                self._held_signals.append(subject)
            elif kind == "mute":  # kept for the encoders and the mesh to come
                self.sending.set_muted(*subject)
            elif kind == "screenshare":
                self.sending.screensharing = subject
            return []
        out: list[MeshAction] = []
        own_session = self.membership.own.membership_id
        if kind != "leave" and own_session is not None and own_session != mesh.own_session:
            # We rejoined: the new session's mesh must exist before anything else is applied
            # (a peer's invite to it may come before our state change is told here).
            out, mesh = self._renew_mesh(mesh, own_session, now), self.mesh
            assert mesh is not None
            if kind == "membership":
                return out  # the new mesh starts from the current members
        if kind == "own":
            return out
        return out + self._apply(mesh, kind, subject, now)

    def _apply(self, mesh: Mesh, kind: str, subject: Any, now: float) -> list[MeshAction]:
        if kind == "membership":
            return self._on_membership(mesh, subject, now)
        if kind == "signal":
            return mesh.receive(subject, now)
        if kind == "pair":
            peer, call_id, result = subject
            return mesh.command(peer, call_id, result, now)
        if kind == "timer":
            self._speaking(self.speaking.tick(now))
            return mesh.handle_timer(now)
        if kind == "mute":
            audio, video = subject
            self.sending.set_muted(audio, video)
            return mesh.set_muted(audio, video, now)
        if kind == "screenshare":
            self.sending.screensharing = subject
            return mesh.set_screenshare(subject, now)
        if kind == "leave":
            return mesh.leave(now)
        raise ValueError(f"unknown input {kind}")

    def _new_mesh(self, own_session: str) -> Mesh:
        options: dict[str, Any] = {"video": self.video}
        if self._retry_delays is not None:
            options["retry_delays"] = self._retry_delays
        mesh = Mesh(self.room_id, self.own, own_session, **options)
        if self.audio_muted or self.video_muted:
            mesh.set_muted(self.audio_muted, self.video_muted, self._clock())
        if self.screensharing:
            mesh.set_screenshare(True, self._clock())  # no pair yet: each once connected
        return mesh

    def _renew_mesh(self, mesh: Mesh, own_session: str, now: float) -> list[MeshAction]:
        """We rejoined (our membership vanished, the others closed our connections): a new
        session, a new mesh from the current members; the old pairs end without a word."""
        out = [a for a in mesh.leave(now) if not isinstance(a, SendSignal)]
        self.mesh = self._new_mesh(own_session)
        current: list[MembershipEvent] = [MemberJoined(m) for m in self.membership.members()]
        return out + self.mesh.on_membership(current, now)

    def _on_membership(self, mesh: Mesh, event: MembershipEvent, now: float) -> list[MeshAction]:
        if isinstance(event, MemberLeft):
            self._speaking(self.speaking.remove(event.member.device, now))
        return mesh.on_membership([event], now)

    # -- outputs ---------------------------------------------------------------------------

    async def _run(self, out: list[MeshAction]) -> None:
        for action in out:
            try:
                await self._run_one(action)
            except Exception:
                logger.exception("group call: %s failed", type(action).__name__)

    async def _run_one(self, action: MeshAction) -> None:
        if isinstance(action, SendSignal):
            self._send_in_order(action)
        elif isinstance(action, PairEnded):
            pair = self.pairs.pop(action.call_id, None)
            if pair is not None:
                await pair.close()
            self._speaking(self.speaking.remove(action.peer, self._clock()))
            self._emit("peer_ended", action.peer, action.reason, action.retry_at)
        elif isinstance(action, PairMedia):
            await self._pair_media(action)

    async def _pair_media(self, item: PairMedia) -> None:
        action = item.action
        pair = self.pairs.get(item.call_id)
        if pair is None:
            if isinstance(action, (act.CallEnded, act.ClosePeerConnection)):
                return
            mesh_pair = self.mesh.pairs.get(item.peer) if self.mesh is not None else None
            call = None if mesh_pair is None else mesh_pair.call
            if call is None or call.call_id != item.call_id:
                return  # a pair replaced meanwhile
            pair = self.pairs[item.call_id] = self._pair_factory(self, item.peer, call)
        if isinstance(action, act.StateChanged):
            self._emit("peer_state_changed", item.peer, action.old, action.new)
        elif isinstance(action, act.RemoteStreamsChanged):
            self._emit("remote_streams_changed", item.peer, action.streams)
            for track, purpose in pair.gone_remote_tracks():
                self._emit("remote_media_removed", item.peer, track, purpose)
            mute = pair.remote_mute_change()
            if mute is not None:
                self._emit("remote_mute_changed", item.peer, *mute)
        elif isinstance(action, act.CallEnded):
            self.pairs.pop(item.call_id, None)
        else:
            await pair.perform(action)

    def _send_in_order(self, action: SendSignal) -> None:
        message = action.message

        async def send() -> None:
            try:
                await self.transport.send_to_devices(
                    [(message.user_id, message.device_id)], message.type, message.content
                )
            except Exception as error:
                # The pair's call notices (no answer, ICE fails) and is retried.
                logger.warning("sending %s failed: %s", message.type, type(error).__name__)

        self._sends.then(send)

    def _schedule_timer(self) -> None:
        if self._closed:
            self._timer.cancel()
            return
        deadlines = [self.speaking.next_deadline()]
        if self.mesh is not None:
            deadlines.append(self.mesh.next_deadline())
        self._timer.arm(deadlines, self._clock(), slack=0.001)

    def _history(self) -> None:
        assert self.joined_at is not None
        item = HistoryItem(
            call_id=f"{MEMBER_EVENT_TYPE}|{self.room_id}|{self.membership.own.membership_id}",
            peer=self.room_id,
            direction=Direction.OUTGOING if self.started_call else Direction.INCOMING,
            video=self.video,
            outcome=Outcome.ANSWERED,
            started_at=self.joined_at,
            duration=max(0.0, self._clock() - self.joined_at),
            end_reason="user_hangup",
            encrypted=True,
        )
        self._emit("history_item", item)

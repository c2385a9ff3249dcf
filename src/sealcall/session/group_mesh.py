"""The full-mesh half of a group call: one 1:1 call per member device (split from group_call).

:class:`MeshParts` is mixed into :class:`~sealcall.session.group_call.GroupCallSession`: the
sans-I/O :class:`~sealcall.group.Mesh` is fed the worker's inputs (:meth:`_mesh_take`), its
actions are carried out (:meth:`_run`): signaling messages go out in order on the send chain,
each pair's media is a :class:`MeshPairSession` (or what ``pair_factory`` makes), and who is
speaking comes from each pair's decoded audio.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from aiortc import RTCIceServer
from aiortc.mediastreams import MediaStreamTrack

from sealcall.calls import Call, CallPolicy, CallState
from sealcall.calls import actions as act
from sealcall.calls.inputs import LocalInput
from sealcall.group import (
    MemberDevice,
    MemberJoined,
    MemberLeft,
    MembershipEvent,
    Mesh,
    MeshAction,
    PairEnded,
    PairMedia,
    SendSignal,
    SpeakingChanged,
    SpeakingDetector,
)
from sealcall.media import meter_audio_levels
from sealcall.signaling import StreamPurpose
from sealcall.transport.matrix import DeviceMessage, MatrixTransport

from .group_membership import GroupMembership
from .group_sending import GroupSending
from .mesh_pair import MeshPairSession
from .send_chain import SendChain

if TYPE_CHECKING:
    from .group_call import GroupCallSession

logger = logging.getLogger(__name__)

MAX_HELD = 512  # membership changes or signals before our join completes (a few per member)

_Work = tuple[str, Any, "asyncio.Future[None] | None"]

PairFactory = Callable[["GroupCallSession", MemberDevice, Call], MeshPairSession]
"""Makes the live media of one pair (default :class:`MeshPairSession`, aiortc)."""


class MeshParts:
    """The mesh state and behaviour of a :class:`GroupCallSession` (a mixin: the attributes
    below are the session's)."""

    transport: MatrixTransport
    room_id: str
    video: bool
    own: MemberDevice
    membership: GroupMembership
    sending: GroupSending
    speaking: SpeakingDetector
    mesh: Mesh | None
    pairs: dict[str, MeshPairSession]
    _pair_factory: PairFactory
    _retry_delays: tuple[float, ...] | None
    relay_only: bool
    ice_servers: tuple[RTCIceServer, ...]
    ice_source: Callable[[], Awaitable[Sequence[RTCIceServer]]] | None
    _clock: Callable[[], float]
    _held: list[MembershipEvent]
    _held_signals: list[DeviceMessage]
    _queue: asyncio.Queue[_Work]
    _sends: SendChain
    _closed: bool

    if TYPE_CHECKING:

        def _emit(self, name: str, *args: Any) -> None: ...

        def _speaking(self, changes: list[SpeakingChanged]) -> None: ...

        def _schedule_timer(self) -> None: ...

        @property
        def audio_muted(self) -> bool: ...

        @property
        def video_muted(self) -> bool: ...

        @property
        def screensharing(self) -> bool: ...

    # -- queries ---------------------------------------------------------------------------

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

    # -- media -----------------------------------------------------------------------------

    def feed(self, peer: MemberDevice, call_id: str, result: LocalInput) -> None:
        """Queue a media result for a pair's call (used by :class:`MeshPairSession`)."""
        if not self._closed:
            self._queue.put_nowait(("pair", (peer, call_id, result), None))

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

    # -- inputs ----------------------------------------------------------------------------

    def _mesh_take(self, kind: str, subject: Any) -> list[MeshAction]:
        """One input of the worker, for the mesh (see :meth:`GroupCallSession._take`)."""
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
        if self.relay_only:
            options["policy"] = CallPolicy(relay_only=True)
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
            if self.ice_source is not None:  # fresh TURN credentials for each new pair
                self.ice_servers = tuple(await self.ice_source())
            pair = self.pairs[item.call_id] = self._pair_factory(self.session(), item.peer, call)
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

    def session(self) -> GroupCallSession:
        """This session, as the pair factory takes it."""
        return cast("GroupCallSession", self)

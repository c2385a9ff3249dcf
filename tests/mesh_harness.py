"""A sans-I/O test bed for the group mesh: N :class:`~sealcall.group.Mesh` objects on a fake
clock, wired by delivering each ``SendSignal`` as the to-device message the transport would hand
over (sender and device as Olm verified them), with the membership told to every node, and a fake
media layer that answers offers and answers at once and reports the connection up (or failed)."""

import heapq
import itertools
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from call_harness import fake_sdp
from sealcall.calls import (
    CallPolicy,
    CallState,
    LocalDescriptionReady,
    MediaConnected,
    MediaFailed,
    actions,
)
from sealcall.calls.call import Call
from sealcall.group import (
    LeftReason,
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
    member_state_key,
    mesh_member,
)
from sealcall.signaling import StreamPurpose
from sealcall.transport.matrix.to_device import DeviceMessage

ROOM = "!group:hs"
START = 1_000.0
LATENCY = 0.05


def member(device: MemberDevice, session: str, created: int = 0) -> Member:
    """A counted membership of ``device`` under ``session`` (its membershipID), joined at
    ``created`` (its created_ts)."""
    content = mesh_member(
        device_id=device.device_id, membership_id=session, created_ts=created, expires=14_400_000
    )
    return Member(
        device=device,
        member_id=session,
        created=created,
        expires_at=2**53,
        state_key=member_state_key(device.user_id, device.device_id),
        content=content,
    )


@dataclass
class Sent:
    """A signal as it left a node."""

    at: float
    src: MemberDevice
    dest: MemberDevice
    type: str
    content: dict[str, Any]


@dataclass
class Node:
    """One member device running its mesh, and everything its mesh did."""

    net: "MeshNet"
    device: MemberDevice
    session: str
    mesh: Mesh
    created: int = 0  # the created_ts of its member event: each join has its own
    log: list[MeshAction] = field(default_factory=list)
    ended: list[PairEnded] = field(default_factory=list)
    ended_at: list[float] = field(default_factory=list)
    streams: dict[MemberDevice, list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def call(self, peer: "Node | MemberDevice") -> Call | None:
        device = peer.device if isinstance(peer, Node) else peer
        pair = self.mesh.pairs.get(device)
        return None if pair is None else pair.call

    def state(self, peer: "Node | MemberDevice") -> CallState | None:
        call = self.call(peer)
        return None if call is None else call.state

    def media(self, peer: MemberDevice, kind: type) -> list[Any]:
        """The ``kind`` actions of pair calls with ``peer``."""
        return [
            a.action
            for a in self.log
            if isinstance(a, PairMedia) and a.peer == peer and isinstance(a.action, kind)
        ]

    def run(self, out: list[MeshAction]) -> None:
        for action in out:
            self.log.append(action)
            if isinstance(action, SendSignal):
                self.net.send(self, action)
            elif isinstance(action, PairEnded):
                self.ended.append(action)
                self.ended_at.append(self.net.now)
            else:
                self._media(action)

    def _media(self, item: PairMedia) -> None:
        action, peer, call_id = item.action, item.peer, item.call_id
        net = self.net
        if isinstance(action, actions.CreateOffer):
            streams = {f"{self.device.device_id}-um": StreamPurpose.USERMEDIA}
            if action.screenshare:
                streams[f"{self.device.device_id}-ss"] = StreamPurpose.SCREENSHARE
            sdp = fake_sdp(
                "offer",
                video=action.video,
                screenshare=action.screenshare,
                on_hold=action.on_hold,
                tag=self.device.device_id,
            )
            self.do(peer, call_id, LocalDescriptionReady(sdp, streams))
        elif isinstance(action, actions.CreateAnswer):
            sdp = fake_sdp(
                "answer",
                video=action.video,
                screenshare=False,
                on_hold=action.on_hold,
                tag=self.device.device_id,
            )
            streams = {f"{self.device.device_id}-um": StreamPurpose.USERMEDIA}
            self.do(peer, call_id, LocalDescriptionReady(sdp, streams))
            net.media_ready(call_id, self, peer)
        elif isinstance(action, actions.ApplyAnswer):
            net.media_ready(call_id, self, peer)
        elif isinstance(action, actions.CallEnded):
            net.media_closed(call_id, self)
        elif isinstance(action, actions.RemoteStreamsChanged):
            self.streams[peer].append(
                {
                    sid: (m.purpose, m.audio_muted, m.video_muted)
                    for sid, m in action.streams.items()
                }
            )

    def do(self, peer: MemberDevice, call_id: str, command: Any) -> None:
        self.run(self.mesh.command(peer, call_id, command, self.net.now))


class MeshNet:
    """The members of one room's call and the to-device network between them."""

    def __init__(
        self, *, video: bool = False, policy: CallPolicy | None = None, duplicate: bool = False
    ) -> None:
        self.now = START
        self.video = video
        self.policy = policy
        self.nodes: dict[MemberDevice, Node] = {}
        self.sent: list[Sent] = []
        self.undelivered: list[Sent] = []
        self.failing: set[frozenset[MemberDevice]] = set()  # pairs whose media never connects
        self.blocked: set[tuple[MemberDevice, MemberDevice]] = set()  # (src, dest) lost
        self.duplicate = duplicate  # deliver every message twice
        self._queue: list[tuple[float, int, MemberDevice, DeviceMessage, Sent]] = []
        self._order = itertools.count()
        self._joins = itertools.count()
        self._ready: dict[str, set[MemberDevice]] = defaultdict(set)
        self._connected: set[str] = set()

    # -- membership -------------------------------------------------------------------------

    def join(
        self, device: MemberDevice, session: str, *, announce: bool = True, **mesh_args: Any
    ) -> Node:
        """``device`` joins under ``session``: it learns the members, the members learn it
        (unless not ``announce``: then call :meth:`announce` later)."""
        mesh_args.setdefault("video", self.video)
        mesh_args.setdefault("policy", self.policy)
        old = self.nodes.get(device)
        if old is not None:
            self._forget_media(device)  # the old process is gone with its connections
        mesh = Mesh(ROOM, device, session, **mesh_args)
        node = Node(self, device, session, mesh, created=next(self._joins))
        self.nodes[device] = node
        others = [n for n in self.nodes.values() if n is not node]
        node.run(
            node.mesh.on_membership(
                [MemberJoined(member(n.device, n.session, n.created)) for n in others], self.now
            )
        )
        if announce:
            self.announce(node, None if old is None else old.session)
        return node

    def announce(self, node: Node, old_session: str | None = None) -> None:
        """The other nodes learn ``node``'s membership (a rejoin if ``old_session``)."""
        new = member(node.device, node.session, node.created)
        event: MembershipEvent = (
            MemberJoined(new)
            if old_session is None
            else MemberRejoined(member(node.device, old_session), new)
        )
        self.tell([n for n in self.nodes.values() if n is not node], [event])

    def vanish(self, device: MemberDevice) -> Node:
        """``device`` is gone (killed, or its leave was seen before any of its hang-ups)."""
        node = self.nodes.pop(device)
        self._forget_media(device)
        self.tell(
            list(self.nodes.values()),
            [MemberLeft(member(device, node.session, node.created), LeftReason.LEFT)],
        )
        return node

    def tell(self, nodes: list[Node], events: list[MembershipEvent]) -> None:
        for node in nodes:
            node.run(node.mesh.on_membership(events, self.now))

    # -- network ----------------------------------------------------------------------------

    def send(self, node: Node, action: SendSignal) -> None:
        message = action.message
        dest = MemberDevice(message.user_id, message.device_id)
        content = json.loads(json.dumps(message.content))  # what the wire carries
        sent = Sent(self.now, node.device, dest, message.type, content)
        self.sent.append(sent)
        if (node.device, dest) in self.blocked:
            return
        incoming = DeviceMessage(node.device.user_id, node.device.device_id, message.type, content)
        for _ in range(2 if self.duplicate else 1):
            heapq.heappush(
                self._queue, (self.now + LATENCY, next(self._order), dest, incoming, sent)
            )

    def inject(self, dest: MemberDevice, message: DeviceMessage, delay: float = 0.0) -> None:
        """Deliver a message that no mesh sent (a hostile device's)."""
        sent = Sent(self.now, MemberDevice(message.sender, message.sender_device), dest, "", {})
        heapq.heappush(self._queue, (self.now + delay, next(self._order), dest, message, sent))

    def media_ready(self, call_id: str, node: Node, peer: MemberDevice) -> None:
        ready = self._ready[call_id]
        ready.add(node.device)
        if len(ready) < 2 or call_id in self._connected:
            return
        self._connected.add(call_id)
        report = MediaFailed() if frozenset(ready) in self.failing else MediaConnected()
        a, b = sorted(ready)
        for device, peer in ((a, b), (b, a)):
            other = self.nodes.get(device)
            call = None if other is None else other.call(peer)
            if other is not None and call is not None and call.call_id == call_id:
                other.do(peer, call_id, report)

    def media_closed(self, call_id: str, node: Node) -> None:
        """``node``'s call ``call_id`` is over: a later call with the same id connects afresh."""
        ready = self._ready.get(call_id)
        if ready is not None:
            ready.discard(node.device)
            if not ready:
                del self._ready[call_id]
        self._connected.discard(call_id)

    def _forget_media(self, device: MemberDevice) -> None:
        for call_id in [c for c, ready in self._ready.items() if device in ready]:
            self._ready[call_id].discard(device)
            self._connected.discard(call_id)

    # -- clock ------------------------------------------------------------------------------

    def _next_timer(self) -> tuple[float, Node] | None:
        timers = [(d, n) for n in self.nodes.values() if (d := n.mesh.next_deadline()) is not None]
        return min(timers, key=lambda x: x[0]) if timers else None

    def wait(self, seconds: float, limit: int = 100_000) -> None:
        """Let ``seconds`` pass, delivering messages and firing timers in time order."""
        end = self.now + seconds
        for _ in range(limit):
            next_message = self._queue[0][0] if self._queue else float("inf")
            timer = self._next_timer()
            next_timer = timer[0] if timer else float("inf")
            if min(next_message, next_timer) > end:
                self.now = end
                return
            if timer is not None and next_timer < next_message:
                self.now = max(self.now, next_timer)
                timer[1].run(timer[1].mesh.handle_timer(self.now))
                continue
            at, _, dest, message, sent = heapq.heappop(self._queue)
            self.now = max(self.now, at)
            node = self.nodes.get(dest)
            if node is None:
                self.undelivered.append(sent)
                continue
            node.run(node.mesh.receive(message, self.now))
        raise AssertionError("the mesh did not settle")

    # -- checks -----------------------------------------------------------------------------

    def assert_all_connected(self, extra: frozenset[MemberDevice] = frozenset()) -> None:
        """Every pair of current nodes has one call, connected on both sides, placed by the lower
        device; besides them, each node has pairs with the ``extra`` members only."""
        for a in self.nodes.values():
            assert set(a.mesh.pairs) == (set(self.nodes) | extra) - {a.device}
            for b in self.nodes.values():
                if a is b:
                    continue
                mine, theirs = a.call(b), b.call(a)
                assert mine is not None, (a.device, b.device)
                assert theirs is not None, (a.device, b.device)
                assert mine.state is CallState.CONNECTED, (a.device, b.device, mine.state)
                assert mine.call_id == theirs.call_id
                assert (mine.direction.value == "outgoing") == (a.device < b.device)

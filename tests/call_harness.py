"""A sans-I/O test bed for the call engine: peers, a room with delivery knobs, a fake clock and
a fake media layer that answers the state machines' media requests at once."""

import heapq
import itertools
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sealcall.calls import (
    CallManager,
    CallPolicy,
    CallState,
    CallWaiting,
    IncomingCall,
    LocalDescriptionReady,
    ManagerAction,
    MediaConnected,
    RemoteEvent,
    actions,
)
from sealcall.calls.history import HistoryItem
from sealcall.signaling import CallEvent, StreamPurpose, parse
from sealcall.transport.base import TimelineEvent

ROOM = "!dm:local"


def fake_sdp(kind: str, *, video: bool, screenshare: bool, on_hold: bool, tag: str) -> str:
    direction = "sendonly" if on_hold else "sendrecv"
    lines = ["v=0", f"o=- {tag} 1 IN IP4 0.0.0.0", "s=-", f"a={kind}"]
    sections = ["audio"] + (["video"] if video else []) + (["video"] if screenshare else [])
    for media in sections:
        codec = "opus/48000/2" if media == "audio" else "VP8/90000"
        lines += [f"m={media} 9 UDP/TLS/RTP/SAVPF 96", f"a=rtpmap:96 {codec}", f"a={direction}"]
    return "\r\n".join(lines) + "\r\n"


@dataclass
class Peer:
    """One device: a call manager plus everything it did, for assertions."""

    room: "Room"
    user_id: str
    device_id: str
    policy: CallPolicy
    manager: CallManager = field(init=False)
    sent: list[CallEvent] = field(default_factory=list)
    states: dict[str, list[CallState]] = field(default_factory=lambda: defaultdict(list))
    history: list[HistoryItem] = field(default_factory=list)
    notices: list[Any] = field(default_factory=list)
    media: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        ids = itertools.count()
        self.manager = CallManager(
            self.user_id, self.device_id, self.policy, lambda: f"{self.device_id}-{next(ids):03d}"
        )

    def place(self, video: bool = False) -> str:
        call, out = self.manager.place_call(
            ROOM, self.room.other_user(self.user_id), self.room.now, video=video
        )
        self.run(out)
        return call.call_id

    def do(self, call_id: str, command: Any) -> None:
        self.run(self.manager.command(call_id, command, self.room.now))

    def call(self, call_id: str) -> Any:
        return self.manager.calls[call_id]

    def sent_types(self, call_id: str | None = None) -> list[str]:
        return [e.TYPE.removeprefix("m.call.") for e in self.sent if call_id in (None, e.call_id)]

    def run(self, out: list[ManagerAction]) -> None:
        for item in out:
            self.apply(item)

    def apply(self, item: ManagerAction) -> None:
        action, call = item.action, item.call
        if isinstance(action, actions.SendEvent):
            self.sent.append(action.event)
            self.room.send(self, action.event)
        elif isinstance(action, actions.StateChanged):
            self.states[call.call_id].append(action.new)
        elif isinstance(action, actions.HistoryItemReady):
            self.history.append(action.item)
        elif isinstance(action, (IncomingCall, CallWaiting)):
            self.notices.append(action)
        elif isinstance(action, actions.CreateOffer):
            self.media.append(action)
            streams = {f"{self.device_id}-um": StreamPurpose.USERMEDIA}
            if action.screenshare:
                streams[f"{self.device_id}-ss"] = StreamPurpose.SCREENSHARE
            sdp = fake_sdp(
                "offer",
                video=action.video,
                screenshare=action.screenshare,
                on_hold=action.on_hold,
                tag=self.device_id,
            )
            self.do(call.call_id, LocalDescriptionReady(sdp, streams))
        elif isinstance(action, actions.CreateAnswer):
            self.media.append(action)
            sdp = fake_sdp(
                "answer",
                video=action.video,
                screenshare=False,
                on_hold=action.on_hold,
                tag=self.device_id,
            )
            self.do(
                call.call_id,
                LocalDescriptionReady(sdp, {f"{self.device_id}-um": StreamPurpose.USERMEDIA}),
            )
            self.room.media_ready(call.call_id, self)
        elif isinstance(action, actions.ApplyAnswer):
            self.media.append(action)
            self.room.media_ready(call.call_id, self)
        else:
            self.media.append(action)


class Room:
    """A DM room on a fake clock. Every sent event reaches every device, the sender's too.

    Knobs: ``latency`` (seconds), ``jitter`` (extra random delay, which reorders events),
    ``duplicate`` (probability an event is delivered twice).
    """

    def __init__(
        self,
        *,
        latency: float = 0.05,
        jitter: float = 0.0,
        duplicate: float = 0.0,
        seed: int = 0,
        start: float = 1_700_000_000.0,
    ) -> None:
        self.now = start
        self.latency, self.jitter, self.duplicate = latency, jitter, duplicate
        self.random = random.Random(seed)
        self.peers: list[Peer] = []
        self._queue: list[tuple[float, int, Peer, dict[str, Any], float]] = []
        self._seq = itertools.count()
        self._ready: dict[str, set[str]] = defaultdict(set)
        self.extra_delay: dict[str, float] = {}
        self.timeline: list[TimelineEvent] = []  # what the room stores, as the server stamps it
        self._stored: dict[int, tuple[dict[str, Any], int]] = {}  # event in flight -> its entry

    def add(self, user_id: str, device_id: str, policy: CallPolicy | None = None) -> Peer:
        peer = Peer(self, user_id, device_id, policy or CallPolicy())
        self.peers.append(peer)
        return peer

    def other_user(self, user_id: str) -> str:
        return next(p.user_id for p in self.peers if p.user_id != user_id)

    def send(self, sender: Peer, event: CallEvent) -> None:
        data = {**event.to_dict(), "sender": sender.user_id}
        self.timeline.append(TimelineEvent(sender.user_id, round(self.now * 1000), event.to_dict()))
        self._stored[id(data)] = (data, len(self.timeline) - 1)
        sent_at = self.now
        for peer in self.peers:
            copies = 2 if self.random.random() < self.duplicate else 1
            for _ in range(copies):
                delay = self.latency + self.random.random() * self.jitter
                delay += self.extra_delay.get(event.TYPE, 0.0)
                heapq.heappush(
                    self._queue, (self.now + delay, next(self._seq), peer, data, sent_at)
                )

    def strip_in_flight(self, key: str) -> None:
        """Remove ``key`` from the content of every event in flight (a client without it)."""
        for _, _, _, data, _ in self._queue:
            stored, index = self._stored.get(id(data), (None, -1))
            if stored is data:
                old = self.timeline[index]
                content = {k: v for k, v in old.event["content"].items() if k != key}
                self.timeline[index] = TimelineEvent(
                    old.sender, old.timestamp_ms, {**old.event, "content": content}
                )
        self._queue = [
            (t, seq, p, {**d, "content": {k: v for k, v in d["content"].items() if k != key}}, at)
            for t, seq, p, d, at in self._queue
        ]

    def media_ready(self, call_id: str, peer: Peer) -> None:
        ready = self._ready[call_id]
        ready.add(peer.device_id)
        if len(ready) == 2:
            for other in self.peers:
                if other.device_id in ready:
                    call = other.manager.calls.get(call_id)
                    if call is not None and call.state is CallState.CONNECTING:
                        other.do(call_id, MediaConnected())

    def step(self) -> bool:
        """Deliver the next event (running any timers due before it); False when idle."""
        if not self._queue:
            return False
        at, _, peer, data, sent_at = heapq.heappop(self._queue)
        self.advance(at)
        age_ms = int((self.now - sent_at) * 1000)
        event = parse({k: v for k, v in data.items() if k != "sender"})
        peer.run(
            peer.manager.handle_remote(RemoteEvent(ROOM, data["sender"], event, age_ms), self.now)
        )
        return True

    def advance(self, to: float) -> None:
        """Move the clock to ``to``, firing every timer on the way."""
        while True:
            deadlines = [(d, p) for p in self.peers if (d := p.manager.next_deadline()) is not None]
            due = [x for x in deadlines if x[0] <= to]
            if not due:
                break
            deadline, peer = min(due, key=lambda x: x[0])
            self.now = max(self.now, deadline)
            peer.run(peer.manager.handle_timer(self.now))
        self.now = max(self.now, to)

    def settle(self, limit: int = 10_000) -> None:
        """Deliver everything in flight."""
        for _ in range(limit):
            if not self.step():
                return
        raise AssertionError("the room did not settle")

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass, delivering events and firing timers."""
        end = self.now + seconds
        while True:
            next_event = self._queue[0][0] if self._queue else float("inf")
            deadlines = [d for p in self.peers if (d := p.manager.next_deadline()) is not None]
            next_timer = min(deadlines, default=float("inf"))
            if min(next_event, next_timer) > end:
                break
            if next_timer < next_event:
                self.advance(next_timer)
            else:
                self.step()
        self.advance(end)

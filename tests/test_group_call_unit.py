"""GroupCallSession's ordering and release, on a fake transport and a fake membership (no
homeserver): our own rejoin makes a new mesh at once, a close during join leaves nothing
running."""

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest
from aiortc.rtcrtpreceiver import RemoteStreamTrack
from pyee.asyncio import AsyncIOEventEmitter

from mesh_harness import ROOM, member
from sealcall.group import MemberDevice, MeshSender, PairEnded
from sealcall.media import PatternVideoTrack, SyntheticAudioTrack
from sealcall.session import GroupCallSession, GroupKeys, LocalMedia
from sealcall.session import group_call as group_call_module
from sealcall.signaling import CallCandidates, Candidate, StreamPurpose
from sealcall.signaling.key_events import ENCRYPTION_KEY_EVENT
from sealcall.transport.matrix.to_device import DeviceMessage

from media_helpers import until

OWN = MemberDevice("@bob:hs", "B1")
PEER = MemberDevice("@alice:hs", "A1")  # the lower device: it places our pair's call


@dataclass
class FakeOwn:
    membership_id: str | None = None


class FakeMembership(AsyncIOEventEmitter):
    """What GroupCallSession uses of a GroupMembership; ``join`` waits for ``gate``."""

    def __init__(self, transport: Any, room_id: str, **_: Any) -> None:
        super().__init__()
        self.own = FakeOwn()
        self.current: list[Any] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.joining = asyncio.Event()
        self.closed: bool | None = None

    def members(self) -> list[Any]:
        return list(self.current)

    async def join(self) -> None:
        self.joining.set()
        await self.gate.wait()
        self.own.membership_id = "s1"
        for joined in self.current:  # as the real one tells of the members it finds
            self.emit("member_joined", joined)

    async def close(self, *, leave: bool = True) -> None:
        self.closed = leave


@dataclass
class FakeClient:
    to_device_callbacks: list[Any] = field(default_factory=list)

    def add_to_device_callback(self, func: Any, kind: Any) -> None:
        self.to_device_callbacks.append(SimpleNamespace(func=func, filter=kind))


@dataclass
class FakeTransport:
    user_id: str = OWN.user_id
    device_id: str = OWN.device_id
    client: FakeClient = field(default_factory=FakeClient)
    listeners: list[Any] = field(default_factory=list)
    sent: list[tuple[Any, str, dict[str, Any]]] = field(default_factory=list)

    def add_to_device_listener(self, listener: Any) -> None:
        self.listeners.append(listener)

    def remove_to_device_listener(self, listener: Any) -> None:
        self.listeners[:] = [f for f in self.listeners if f != listener]

    async def send_to_devices(
        self, targets: list[tuple[str, str]], event_type: str, content: dict[str, Any]
    ) -> int:
        self.sent.append((targets, event_type, content))
        return len(targets)


@pytest.fixture
def fake_membership(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group_call_module, "GroupMembership", FakeMembership)


def new_session(transport: FakeTransport) -> GroupCallSession:
    media = LocalMedia(microphone=SyntheticAudioTrack)
    return GroupCallSession(transport, ROOM, media=media, ring=False)  # type: ignore[arg-type]


def candidates_to(dest_session: str) -> DeviceMessage:
    """The peer's first message to our session ``dest_session`` (candidates for attempt 0)."""
    sender = MeshSender(ROOM, PEER, "a1")
    candidate = Candidate(
        candidate="candidate:1 1 udp 1 127.0.0.1 9 typ host", sdp_mid="0", sdp_mline_index=0
    )
    event = CallCandidates(
        call_id=sender.call_id(OWN, dest_session, 0), party_id="A1", candidates=(candidate,)
    )
    signal = sender.wrap(event, OWN, dest_session)
    return DeviceMessage(PEER.user_id, PEER.device_id, signal.type, signal.content)


async def test_our_own_rejoin_makes_a_new_mesh_before_the_next_signal(
    fake_membership: None,
) -> None:
    transport = FakeTransport()
    session = new_session(transport)
    membership = session.membership
    assert isinstance(membership, FakeMembership)
    membership.current = [member(PEER, "a1")]
    try:
        await session.join()
        old = session.mesh
        assert old is not None
        assert old.own_session == "s1"
        assert PEER in old.pairs
        # Our membership vanished and was sent again under a new membershipID; the peer saw it
        # and talks to the new session before any other member's event reaches us.
        membership.own.membership_id = "s2"
        for listener in list(transport.listeners):
            listener(candidates_to("s2"))
        await until(lambda: session.mesh is not old)
        new = session.mesh
        assert new is not None
        assert new.own_session == "s2"
        assert PEER in new.pairs
        # The message was for the new session: not refused as addressed to another one.
        assert old.counters["wrong_dest_session"] == 0
        assert new.counters["wrong_dest_session"] == 0
        assert new.counters["stale_attempt"] == 1  # no call yet: the peer places it
        # And with no message at all, the membership's state change alone renews the mesh.
        membership.own.membership_id = "s3"
        membership.emit("state_changed", "joined", "joining")
        await until(lambda: session.mesh is not None and session.mesh.own_session == "s3")
    finally:
        await session.close(leave=False)


async def test_a_close_during_join_leaves_nothing_running(fake_membership: None) -> None:
    transport = FakeTransport()
    session = new_session(transport)
    membership = session.membership
    assert isinstance(membership, FakeMembership)
    membership.gate.clear()
    joining = asyncio.ensure_future(session.join())
    await membership.joining.wait()
    await session.close()  # the user hangs up while the join is on its way
    membership.gate.set()
    with pytest.raises(RuntimeError):
        await joining
    assert session.encoders == {}
    assert session.keys is None
    assert transport.listeners == []
    assert transport.client.to_device_callbacks == []
    assert transport.sent == []  # no key went out for a call we left


def loud_frame() -> av.AudioFrame:
    samples = np.full((1, 960), 16_000, dtype=np.int16)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = 48_000
    return frame


async def test_frames_decoded_after_a_pair_ended_do_not_make_its_peer_speak_again(
    fake_membership: None,
) -> None:
    now = [1_000.0]
    session = GroupCallSession(
        FakeTransport(),  # type: ignore[arg-type]
        ROOM,
        media=LocalMedia(microphone=SyntheticAudioTrack),
        ring=False,
        clock=lambda: now[0],
    )
    heard: list[tuple[MemberDevice, bool]] = []
    session.on("speaking_changed", lambda device, speaking: heard.append((device, speaking)))

    async def close() -> None:
        pass

    pair: Any = SimpleNamespace(peer=PEER, call_id="c1", close=close)
    session.pairs["c1"] = pair
    track = RemoteStreamTrack(kind="audio")
    session.remote_track_added(pair, track, StreamPurpose.USERMEDIA)

    def talk(frames: int) -> None:
        for _ in range(frames):
            now[0] += 0.02
            track._queue.put_nowait(loud_frame())

    talk(10)
    assert heard == [(PEER, True)]
    await session._run_one(PairEnded(PEER, "c1", "member_left", None))
    assert heard == [(PEER, True), (PEER, False)]
    talk(10)  # already decoded when the connection closed: they arrive late
    assert heard == [(PEER, True), (PEER, False)]
    assert session.speaking.sources() == 0
    assert session.active_speaker() is None
    await session.close(leave=False)


async def test_the_screen_is_no_longer_captured_once_sharing_stopped_and_no_pair_sends_it(
    fake_membership: None,
) -> None:
    session = GroupCallSession(
        FakeTransport(),  # type: ignore[arg-type]
        ROOM,
        media=LocalMedia(
            microphone=SyntheticAudioTrack, screen=lambda: PatternVideoTrack(64, 48, fps=5)
        ),
        ring=False,
    )
    try:
        await session.join()
        await session.set_screen_share(True)
        encoder = session.screen_encoder(True)  # as a connected pair's offer attaches it
        assert encoder is not None
        source = encoder._track
        subscription = encoder.subscribe()
        await session.set_screen_share(False)
        # A pair that has not renegotiated yet still sends it: it goes on.
        assert session.encoders.get("screenshare") is encoder
        assert source.readyState == "live"
        subscription.stop()  # that pair's offer without the screen
        await session.set_screen_share(False)
        assert "screenshare" not in session.encoders
        assert source.readyState == "ended"
        assert session.screen_encoder(False) is None
        # Sharing again captures afresh.
        await session.set_screen_share(True)
        again = session.screen_encoder(True)
        assert again is not None
        assert again is not encoder
    finally:
        await session.close(leave=False)


async def test_muting_before_or_while_joining_is_kept(fake_membership: None) -> None:
    transport = FakeTransport()
    session = new_session(transport)
    membership = session.membership
    assert isinstance(membership, FakeMembership)
    try:
        await asyncio.wait_for(session.set_microphone_muted(True), 5)  # join muted
        membership.gate.clear()
        joining = asyncio.ensure_future(session.join())
        await membership.joining.wait()
        await asyncio.wait_for(session.set_camera_muted(True), 5)  # while the join is on its way
        membership.gate.set()
        await joining
        assert session.audio_muted
        assert session.video_muted
        assert session.encoders["microphone"].tap.paused  # no audio frame is encoded
        assert session.mesh is not None
        assert session.mesh.audio_muted
        assert session.mesh.video_muted
    finally:
        await session.close(leave=False)


async def test_after_our_own_rejoin_our_key_goes_again_to_every_member() -> None:
    # The members reset our key ring when they see our new membershipID: without our key
    # again they could not decrypt us until they asked for it.
    transport = FakeTransport()
    membership = FakeMembership(transport, ROOM)
    membership.own.membership_id = "s1"
    membership.current = [member(PEER, "a1")]
    keys = GroupKeys(transport, ROOM, membership, request_delay=60.0)  # type: ignore[arg-type]

    def sent_keys() -> list[tuple[Any, dict[str, Any]]]:
        return [(t, c) for t, kind, c in transport.sent if kind == ENCRYPTION_KEY_EVENT]

    try:
        await keys.start()
        await until(lambda: len(sent_keys()) == 1)
        [(targets, first)] = sent_keys()
        assert targets == [(PEER.user_id, PEER.device_id)]
        assert first["member_id"] == "s1"
        membership.own.membership_id = "s2"
        membership.emit("state_changed", "joined", "joining")
        await until(lambda: len(sent_keys()) == 2)
        targets, again = sent_keys()[1]
        assert targets == [(PEER.user_id, PEER.device_id)]
        assert again["member_id"] == "s2"
        assert again["media_key"] == first["media_key"]
        # Told again of the same session: nothing more.
        membership.emit("state_changed", "joining", "joined")
        await keys.close()
        assert len(sent_keys()) == 2
    finally:
        await keys.close()

"""GroupCallSession over a real Synapse: four members' full mesh decodes everyone's media; a leave
rotates the keys so the departed member can read nothing sent after it, while the others go on
decoding each other; mute reaches every member."""

import asyncio
import time
from typing import Any

import pytest
from aiortc.mediastreams import MediaStreamTrack

import test_group_membership_session as gm
from group_call_helpers import TIMEOUT, CallDevices, group_call
from sealcall.calls import CallState
from sealcall.demo import wait_for
from sealcall.e2ee import Codec
from sealcall.group import MemberDevice
from sealcall.session import GroupCallSession
from sealcall.sframe import SFrameError
from sealcall.signaling.key_events import ENCRYPTION_KEY_EVENT
from sealcall.transport.matrix import DeviceMessage

pytestmark = pytest.mark.usefixtures("synapse")


def decrypted(session: GroupCallSession, peer: MemberDevice, kind: str) -> int:
    pair = session.peer_sessions().get(peer)
    if pair is None:
        return 0
    return sum(t.counters.frames_decrypted for t in pair.receiver_taps() if t.kind == kind)


def counts(session: GroupCallSession, peer: MemberDevice) -> tuple[int, int]:
    """(received, decrypted) frames from ``peer``, all kinds."""
    pair = session.peer_sessions()[peer]
    taps = pair.receiver_taps()
    return (
        sum(t.counters.frames_received for t in taps),
        sum(t.counters.frames_decrypted for t in taps),
    )


async def all_decode(sessions: list[GroupCallSession], minimum: int = 5) -> None:
    """Each session decodes audio and video from each other one."""

    def done() -> bool:
        return all(
            decrypted(s, o.own, kind) >= minimum
            for s in sessions
            for o in sessions
            if o is not s
            for kind in ("audio", "video")
        )

    await wait_for(done, TIMEOUT, "every member decoding every other member")


class FrameCapture:
    """Every protected frame a member's shared encoders send from now on, as they go out."""

    def __init__(self, session: GroupCallSession) -> None:
        self.session = session
        self.frames: list[tuple[Codec, bytes]] = []
        self._tasks = [
            asyncio.ensure_future(self._read(encoder.subscribe(), encoder.kind))
            for encoder in session.encoders.values()
        ]

    async def _read(self, track: MediaStreamTrack, kind: str) -> None:
        codec = Codec.OPUS if kind == "audio" else Codec.VP8
        # An encoder protects one frame at a time, off the event loop: the first frame this
        # subscription gets may have been protected just before it was made (under the key in
        # use then). Every later one was protected after.
        await track.recv()
        while True:
            packet = await track.recv()
            self.frames.append((codec, bytes(packet)))

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()


async def test_four_members_decode_each_other_and_a_leaver_reads_nothing_after(
    call_devices: CallDevices,
) -> None:
    members = [await call_devices.new(name) for name in ("ann", "bob", "cat", "dan")]
    room_id = await gm.group_room(members[0], *members[1:])
    sessions = [group_call(call_devices, d, room_id) for d in members]
    await asyncio.gather(*(s.join() for s in sessions))
    await wait_for(
        lambda: all(len(s.connected_peers()) == 3 for s in sessions), TIMEOUT, "the full mesh"
    )
    # The pair's caller is the lower device, on both sides of every pair.
    for s in sessions:
        for peer, pair in s.peer_sessions().items():
            assert pair.call.direction.value == ("outgoing" if s.own < peer else "incoming")
    await all_decode(sessions)

    # dan leaves; he keeps his transport (every to-device message still reaches him) and his
    # keys (everything he ever held).
    leaver, rest = sessions[3], sessions[:3]
    messages: list[DeviceMessage] = []
    leaver.transport.add_to_device_listener(messages.append)
    departed_keys = leaver.keys
    assert departed_keys is not None
    old_index = {}
    for s in rest:
        assert s.keys is not None
        assert s.keys.send_key is not None
        old_index[id(s)] = s.keys.send_key.index
    await leaver.leave()
    left_at = time.monotonic()
    await wait_for(
        lambda: all(
            len(s.connected_peers()) == 2 and leaver.own not in s.peer_sessions() for s in rest
        ),
        TIMEOUT,
        "the others closing their pairs with the leaver",
    )
    await wait_for(
        lambda: all(
            s.keys is not None
            and s.keys.send_key is not None
            and s.keys.send_key.index != old_index[id(s)]
            for s in rest
        ),
        TIMEOUT,
        "every remaining member using a new key",
    )
    rotated_at = time.monotonic()
    captures = [FrameCapture(s) for s in rest]
    await wait_for(
        lambda: all(len(c.frames) >= 60 for c in captures), TIMEOUT, "frames sent after the leave"
    )
    for capture in captures:
        capture.stop()
    # The departed member, handed every key message it got after leaving and every frame the
    # others sent under their new keys, opens none of them.
    key_messages = [m for m in messages if m.type == ENCRYPTION_KEY_EVENT]
    assert key_messages == []
    opened = 0
    for capture in captures:
        sender = capture.session.own
        for codec, frame in capture.frames:
            try:
                departed_keys.unprotect(sender.user_id, sender.device_id, codec, frame)
                opened += 1
            except SFrameError:
                pass
    assert opened == 0
    # The others go on decoding each other: from 2 s after the leave, at least 95 % of frames.
    # (On a loaded machine the others may see the leave, and so rotate, later than 2 s after
    # it: then the window starts 2 s after the last of them used its new key.)
    start = max(left_at, rotated_at) + 2
    await wait_for(lambda: time.monotonic() >= start, 10, "2 s after the leave")
    before = {(id(s), o.own): counts(s, o.own) for s in rest for o in rest if o is not s}
    await wait_for(
        lambda: all(
            counts(s, o.own)[0] - before[(id(s), o.own)][0] >= 100
            for s in rest
            for o in rest
            if o is not s
        ),
        TIMEOUT,
        "more frames among the remaining members",
    )
    for s in rest:
        for o in rest:
            if o is s:
                continue
            received = counts(s, o.own)[0] - before[(id(s), o.own)][0]
            opened_now = counts(s, o.own)[1] - before[(id(s), o.own)][1]
            assert opened_now >= 0.95 * received, (s.own, o.own, opened_now, received)


async def test_mute_reaches_every_member_and_leave_writes_one_history_item(
    call_devices: CallDevices,
) -> None:
    members = [await call_devices.new(name) for name in ("eve", "fay", "gus")]
    room_id = await gm.group_room(members[0], *members[1:])
    sessions = [group_call(call_devices, d, room_id, video=False) for d in members]
    for s in sessions:
        await s.join()
    await wait_for(
        lambda: all(len(s.connected_peers()) == 2 for s in sessions), TIMEOUT, "the mesh"
    )
    assert sessions[0].started_call
    assert not sessions[2].started_call
    mutes: dict[int, list[tuple[MemberDevice, bool, bool]]] = {id(s): [] for s in sessions}
    for s in sessions:
        s.on("remote_mute_changed", lambda d, a, v, s=s: mutes[id(s)].append((d, a, v)))
    await sessions[0].set_microphone_muted(True)
    await wait_for(
        lambda: all((sessions[0].own, True, False) in mutes[id(s)] for s in sessions[1:]),
        TIMEOUT,
        "the others told of the mute",
    )
    paused = sessions[0].encoders["microphone"].tap.counters.frames_paused
    await wait_for(
        lambda: sessions[0].encoders["microphone"].tap.counters.frames_paused > paused + 10,
        TIMEOUT,
        "muted audio frames not encoded",
    )
    items: list[Any] = []
    sessions[1].on("history_item", items.append)
    await sessions[1].leave()
    assert len(items) == 1
    assert items[0].peer == room_id
    assert items[0].encrypted
    assert items[0].outcome.value == "answered"
    await wait_for(
        lambda: all(s.peer_state(sessions[1].own) is None for s in (sessions[0], sessions[2])),
        TIMEOUT,
        "the pairs with the leaver gone",
    )
    assert sessions[0].peer_state(sessions[2].own) is CallState.CONNECTED

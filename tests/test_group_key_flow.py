"""Group keys end to end: devices exchange real key messages (JSON, with delivery latency) and
protect real VP8 and Opus frames with SFrame; who can decrypt what, before and after a leave."""

import heapq
import itertools
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from sealcall.e2ee import (
    Codec,
    GroupKeyRing,
    GroupKeySender,
    MemberDevice,
    RequestKey,
    SendKey,
    ToDeviceSender,
    UseKey,
    protect_frame,
    unprotect_frame,
)
from sealcall.sframe import SFrameError, SFrameSender
from sealcall.signaling import (
    ENCRYPTION_KEY_EVENT,
    ENCRYPTION_KEY_REQUEST_EVENT,
    EncryptionKeyContent,
    EncryptionKeyRequest,
)

ROOM = "!group:example.org"
TICK = 0.1


@dataclass
class Device:
    member: MemberDevice
    keys: GroupKeySender
    ring: GroupKeyRing
    frames: SFrameSender | None = None
    decrypted: Counter[tuple[str, str]] = field(default_factory=Counter)  # (sender, phase)
    failed: Counter[tuple[str, str]] = field(default_factory=Counter)


class Network:
    """To-device delivery with a fixed latency; each message reaches only its addressee (Olm)."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.queue: list[tuple[float, int, str, str, ToDeviceSender, str]] = []
        self.order = itertools.count()
        self.delivered: list[tuple[float, str, str]] = []  # (time, type, recipient device)
        self.drop: set[tuple[str, str]] = set()  # (from device, to device) of key messages

    def send(
        self, now: float, origin: MemberDevice, to: MemberDevice, kind: str, content: Any
    ) -> None:
        if kind == ENCRYPTION_KEY_EVENT and (origin.device_id, to.device_id) in self.drop:
            self.drop.discard((origin.device_id, to.device_id))
            return
        sender = ToDeviceSender(origin.user_id, origin.device_id, olm_encrypted=True)
        heapq.heappush(
            self.queue,
            (now + self.latency, next(self.order), to.device_id, kind, sender, json.dumps(content)),
        )


class Call:
    def __init__(self, latency: float = 0.3, use_delay: float = 1.0) -> None:
        self.now = 0.0
        self.devices: dict[str, Device] = {}
        self.net = Network(latency)
        self.use_delay = use_delay

    def members(self) -> list[MemberDevice]:
        return [d.member for d in self.devices.values()]

    def join(self, name: str) -> Device:
        member = MemberDevice(f"@{name}:example.org", name.upper(), f"m-{name}")
        device = Device(
            member,
            GroupKeySender(ROOM, member.device, use_delay=self.use_delay),
            GroupKeyRing(ROOM, member.device),
        )
        self.devices[member.device_id] = device
        members = self.members()
        for other in self.devices.values():
            if other is not device:
                self.apply(other, other.keys.update_members(members, self.now))
                other.ring.set_members(members, self.now)
        device.ring.set_members(members, self.now)
        self.apply(device, device.keys.start(members, self.now))
        return device

    def leave(self, name: str) -> Device:
        """``name`` leaves; it keeps its ring as it was (the worst case: it wants to listen on)."""
        gone = self.devices.pop(name.upper())
        members = self.members()
        for device in self.devices.values():
            self.apply(device, device.keys.update_members(members, self.now))
            device.ring.set_members(members, self.now)
        return gone

    def apply(self, device: Device, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, UseKey):
                if device.frames is None:
                    device.frames = SFrameSender(action.key.index, action.key.key)
                else:
                    device.frames.set_key(action.key.index, action.key.key)
            elif isinstance(action, SendKey):
                content = EncryptionKeyContent(ROOM, device.member.membership_id, action.key)
                for target in action.targets:
                    self.net.send(
                        self.now, device.member, target, ENCRYPTION_KEY_EVENT, content.to_dict()
                    )
            elif isinstance(action, RequestKey):
                request = EncryptionKeyRequest(
                    ROOM, device.member.membership_id, action.sender.device
                )
                self.net.send(
                    self.now,
                    device.member,
                    action.sender,
                    ENCRYPTION_KEY_REQUEST_EVENT,
                    request.to_dict(),
                )

    def receive(self, device: Device, kind: str, origin: ToDeviceSender, raw: str) -> None:
        if kind == ENCRYPTION_KEY_EVENT:
            content = EncryptionKeyContent.parse(json.loads(raw))
            device.ring.on_key(
                origin,
                room_id=content.room_id,
                member_id=content.member_id,
                claimed_device_id=content.claimed_device_id,
                key=content.key,
                now=self.now,
            )
        else:
            request = EncryptionKeyRequest.parse(json.loads(raw))
            self.apply(
                device,
                device.keys.on_key_request(
                    origin,
                    room_id=request.room_id,
                    key_owner=request.key_owner,
                    member_id=request.member_id,
                    now=self.now,
                ),
            )

    def step(self, frames: list[tuple[Codec, bytes]], phase: str, listeners: list[Device]) -> None:
        """Deliver due messages, run timers, then every sender sends one frame to everyone."""
        while self.net.queue and self.net.queue[0][0] <= self.now:
            _, _, to, kind, origin, raw = heapq.heappop(self.net.queue)
            self.net.delivered.append((self.now, kind, to))
            if to in self.devices:
                self.receive(self.devices[to], kind, origin, raw)
        for device in self.devices.values():
            self.apply(device, device.keys.handle_timer(self.now))
            self.apply(device, device.ring.handle_timer(self.now))
        for sender in self.devices.values():
            assert sender.frames is not None
            codec, plain = frames[int(self.now / TICK) % len(frames)]
            sealed = protect_frame(codec, sender.frames, plain)
            for listener in [*self.devices.values(), *listeners]:
                if listener is sender:
                    continue
                self.hear(listener, sender, codec, sealed, plain, phase)
        self.now = round(self.now + TICK, 6)

    def hear(
        self,
        listener: Device,
        sender: Device,
        codec: Codec,
        sealed: bytes,
        plain: bytes,
        phase: str,
    ) -> None:
        name = sender.member.device_id
        receiver = listener.ring.receiver(*sender.member.device)
        try:
            if receiver is None:
                raise SFrameError("no ring for this sender")
            assert unprotect_frame(codec, receiver, sealed) == plain
            listener.decrypted[(name, phase)] += 1
        except SFrameError:
            listener.failed[(name, phase)] += 1

    def run(
        self,
        until: float,
        frames: list[tuple[Codec, bytes]],
        phase: str,
        listeners: list[Device] = [],  # noqa: B006 - never mutated
    ) -> None:
        while self.now < until - 1e-9:
            self.step(frames, phase, listeners)


@pytest.fixture
def media(vp8_frames: list[bytes], opus_frames: list[bytes]) -> list[tuple[Codec, bytes]]:
    # A key frame first, then deltas and audio interleaved; the same protected bytes go to all.
    video = [(Codec.VP8, f) for f in vp8_frames]
    audio = [(Codec.OPUS, f) for f in opus_frames]
    return [x for pair in zip(video, audio, strict=False) for x in pair]


def test_four_members_decrypt_each_other_and_the_leaver_reads_nothing_after(
    media: list[tuple[Codec, bytes]],
) -> None:
    call = Call(latency=0.3)
    for name in ("alice", "bob", "carol", "dave"):
        call.join(name)
    call.run(1.0, media, "warmup")
    call.run(10.0, media, "before")
    names = ["ALICE", "BOB", "CAROL", "DAVE"]
    for device in call.devices.values():
        for other in names:
            if other != device.member.device_id:
                assert device.decrypted[(other, "before")] == 90
                assert device.failed[(other, "before")] == 0

    dave = call.leave("dave")
    left_at = call.now
    call.run(left_at + 1.0, media, "switching", [dave])
    call.run(left_at + 2.0, media, "switched", [dave])
    call.run(left_at + 10.0, media, "after", [dave])

    # every remaining member rotated: a new key index, in use one second after the leave
    for device in call.devices.values():
        assert device.keys.current_index == 1
        assert device.keys.counters["rotations"] == 1
    # no key message went to Dave after he left
    assert [d for d in call.net.delivered if d[0] >= left_at and d[2] == "DAVE"] == []
    remaining = ["ALICE", "BOB", "CAROL"]
    for device in call.devices.values():
        for other in remaining:
            if other == device.member.device_id:
                continue
            # the switch waited for the key: not one frame lost, before or after it
            for phase in ("switching", "switched", "after"):
                assert device.failed[(other, phase)] == 0
            assert device.decrypted[(other, "after")] == 80
    for other in remaining:
        # Dave still decrypts until the senders switch (1 s), and nothing from then on
        assert dave.decrypted[(other, "switching")] == 10
        assert dave.decrypted[(other, "switched")] == 0
        assert dave.decrypted[(other, "after")] == 0
        assert dave.failed[(other, "after")] == 80


def test_without_the_delay_a_rotation_loses_frames_in_flight(
    media: list[tuple[Codec, bytes]],
) -> None:
    """Why the sender waits: with no delay, receivers see the new KID before its key."""
    call = Call(latency=0.3, use_delay=0.0)
    for name in ("alice", "bob", "carol"):
        call.join(name)
    call.run(2.0, media, "before")
    call.leave("carol")
    call.run(call.now + 2.0, media, "after")
    assert call.devices["BOB"].failed[("ALICE", "after")] > 0


def test_joiner_gets_a_young_key_and_decrypts_everyone(media: list[tuple[Codec, bytes]]) -> None:
    call = Call(latency=0.3)
    for name in ("alice", "bob"):
        call.join(name)
    call.run(3.0, media, "before")
    erin = call.join("erin")
    call.run(3.5, media, "joining")
    call.run(6.0, media, "joined")
    for device in call.devices.values():
        assert device.keys.counters["rotations"] == 0
    for other in ("ALICE", "BOB"):
        assert erin.decrypted[(other, "joined")] == 25
        assert erin.failed[(other, "joined")] == 0
        assert call.devices[other].decrypted[("ERIN", "joined")] == 25


def test_joiner_after_ten_seconds_forces_a_rotation(media: list[tuple[Codec, bytes]]) -> None:
    call = Call(latency=0.3)
    for name in ("alice", "bob"):
        call.join(name)
    call.run(12.0, media, "before")
    erin = call.join("erin")
    call.run(13.5, media, "joining")
    call.run(16.0, media, "joined")
    for name in ("ALICE", "BOB"):
        assert call.devices[name].keys.counters["rotations"] == 1
        assert call.devices[name].keys.current_index == 1
        assert erin.decrypted[(name, "joined")] == 25


def test_a_lost_key_message_is_recovered_by_a_request(media: list[tuple[Codec, bytes]]) -> None:
    call = Call(latency=0.3)
    call.join("alice")
    call.net.drop.add(("ALICE", "BOB"))  # Alice's key to Bob is lost on the way
    bob = call.join("bob")
    call.run(1.0, media, "lost")
    call.run(10.0, media, "recovered")
    alice = call.devices["ALICE"]
    assert bob.decrypted[("ALICE", "lost")] == 0
    assert bob.ring.counters["requests_sent"] >= 1
    assert alice.keys.counters["requests_answered"] >= 1
    assert bob.decrypted[("ALICE", "recovered")] > 0
    # the request went out after the ring's request delay (2 s) and the answer took two hops
    assert bob.failed[("ALICE", "recovered")] <= 20 + 6
    # the other direction was never disturbed: only the first 0.3 s, before Bob's key arrived
    assert alice.decrypted[("BOB", "lost")] == 7
    assert alice.failed[("BOB", "recovered")] == 0

"""A group call's in-call controls over a real Synapse with real aiortc, each seen by every other
member: camera off/on, microphone mute/unmute, screen share on/off (one shared screen encoder,
released when the share ends), who is speaking, and a late joiner getting the current state."""

from collections.abc import Callable
from typing import Any

import pytest
from aiortc.mediastreams import MediaStreamTrack

import test_group_membership_session as gm
from group_call_helpers import TIMEOUT, CallDevices, group_call
from sealcall.demo import wait_for
from sealcall.group import MemberDevice
from sealcall.media import PatternVideoTrack, ReceiverTap, SharedEncoder, SyntheticAudioTrack
from sealcall.session import GroupCallSession, LocalMedia
from sealcall.signaling import StreamPurpose

pytestmark = pytest.mark.usefixtures("synapse")

USERMEDIA, SCREENSHARE = StreamPurpose.USERMEDIA, StreamPurpose.SCREENSHARE


def small_media(signal: str) -> LocalMedia:
    return LocalMedia(
        microphone=lambda: SyntheticAudioTrack(signal),
        camera=lambda: PatternVideoTrack(160, 120, fps=10),
        screen=lambda: PatternVideoTrack(160, 120, fps=10),
    )


class Seen:
    """What one member's session told the application about the others."""

    def __init__(self, session: GroupCallSession) -> None:
        self.session = session
        self.mutes: list[tuple[MemberDevice, bool, bool]] = []
        self.added: list[tuple[MemberDevice, MediaStreamTrack, StreamPurpose]] = []
        self.removed: list[tuple[MemberDevice, MediaStreamTrack, StreamPurpose]] = []
        self.speaking: list[tuple[MemberDevice, bool]] = []
        self.active: list[MemberDevice | None] = []
        session.on("remote_mute_changed", lambda d, a, v: self.mutes.append((d, a, v)))
        session.on("remote_media_added", lambda d, t, p: self.added.append((d, t, p)))
        session.on("remote_media_removed", lambda d, t, p: self.removed.append((d, t, p)))
        session.on("speaking_changed", lambda d, s: self.speaking.append((d, s)))
        session.on("active_speaker_changed", self.active.append)

    def mute(self, peer: MemberDevice) -> tuple[bool, bool] | None:
        """The last mute state ``peer`` announced, if any."""
        states = [(a, v) for d, a, v in self.mutes if d == peer]
        return states[-1] if states else None

    def speaks(self, peer: MemberDevice) -> bool:
        """Whether ``peer`` speaks now, by the events."""
        states = [s for d, s in self.speaking if d == peer]
        return bool(states) and states[-1]

    def screen_track(self, peer: MemberDevice) -> MediaStreamTrack | None:
        tracks = [t for d, t, p in self.added if d == peer and p is SCREENSHARE]
        return tracks[-1] if tracks else None


def tap(session: GroupCallSession, peer: MemberDevice, kind: str, purpose: StreamPurpose) -> Any:
    """The receiver tap of ``peer``'s ``kind`` track of ``purpose`` (None: no such track yet).
    The usermedia tracks come first (the pair's first offer); a screen share is announced."""
    pair = session.peer_sessions().get(peer)
    if pair is None or pair.pc is None:
        return None
    for transceiver in pair.pc.getTransceivers():
        track = transceiver.receiver.track
        if transceiver.kind != kind or track is None:
            continue
        if purpose is USERMEDIA or pair.remote_purposes.get(track.id) is purpose:
            found: ReceiverTap = pair.pc.receiver_tap(transceiver.receiver)
            return found
    return None


def received(taps: list[ReceiverTap]) -> int:
    return sum(t.counters.frames_received for t in taps)


def decrypted(taps: list[ReceiverTap]) -> int:
    return sum(t.counters.frames_decrypted for t in taps)


async def mesh(
    call_devices: CallDevices, names: tuple[str, ...], late: int = 0
) -> tuple[list[GroupCallSession], dict[int, Seen], list[gm.Device]]:
    """All ``names`` in one room, and all but the ``late`` last ones in a connected call (the
    first speaks, the others are silent), each decoding the others' video; what each session
    told its application (by ``id(session)``) from the start."""
    members = [await call_devices.new(name) for name in names]
    room_id = await gm.group_room(members[0], *members[1:])
    callers = members[: len(members) - late]
    sessions = [
        group_call(call_devices, d, room_id, media=small_media("speech" if i == 0 else "silence"))
        for i, d in enumerate(callers)
    ]
    seen = {id(s): Seen(s) for s in sessions}
    for s in sessions:
        await s.join()
    await wait_for(
        lambda: all(len(s.connected_peers()) == len(callers) - 1 for s in sessions),
        TIMEOUT,
        "the mesh",
    )
    await frames_flow(sessions[0], sessions[1:], "video", USERMEDIA)
    return sessions, seen, members[len(callers) :]


async def frames_flow(
    sender: GroupCallSession,
    others: list[GroupCallSession],
    kind: str,
    purpose: StreamPurpose,
    minimum: int = 5,
) -> None:
    """Wait until each of ``others`` decrypted ``minimum`` more such frames from ``sender``."""
    first: dict[int, int] = {}

    def done() -> bool:
        for o in others:
            t = tap(o, sender.own, kind, purpose)
            if t is None:
                return False
            base = first.setdefault(id(o), t.counters.frames_decrypted)
            if t.counters.frames_decrypted < base + minimum:
                return False
        return True

    await wait_for(done, TIMEOUT, f"{kind} {purpose.value} frames from {sender.own}")


async def stays_silent(
    sender: GroupCallSession,
    others: list[GroupCallSession],
    silent: Callable[[], list[ReceiverTap]],
    role: str,
) -> None:
    """While ``role`` is off, ``sender`` encodes none of its frames and ``silent`` taps receive
    none: measured from when the pause took effect (a few frames paused, the other media still
    flowing, so nothing sent before it is in flight) to well after."""
    encoder = sender.encoders[role]
    paused = encoder.counters.frames_paused
    await wait_for(lambda: encoder.counters.frames_paused >= paused + 3, TIMEOUT, "the pause")
    kind = "video" if encoder.kind == "audio" else "audio"
    await frames_flow(sender, others, kind, USERMEDIA, minimum=3)
    encoded, got = encoder.counters.frames_encoded, received(silent())
    paused = encoder.counters.frames_paused
    await wait_for(lambda: encoder.counters.frames_paused >= paused + 15, TIMEOUT, "paused frames")
    await frames_flow(sender, others, kind, USERMEDIA, minimum=10)
    assert encoder.counters.frames_encoded == encoded
    assert received(silent()) == got


def record_frames(t: ReceiverTap) -> list[bool]:
    """From now on, whether each frame ``t`` decrypts is a key frame."""
    log: list[bool] = []
    unprotect = t.unprotect

    def recording(mime_type: str, data: bytes, *, after_gap: bool = False) -> bytes | None:
        keyframes = t.counters.keyframes_decrypted
        frame = unprotect(mime_type, data, after_gap=after_gap)
        if frame is not None:
            log.append(t.counters.keyframes_decrypted > keyframes)
        return frame

    t.unprotect = recording  # type: ignore[method-assign]
    return log


def record_sent(encoder: SharedEncoder) -> list[bool]:
    """From now on, whether each frame ``encoder`` sends is a key frame."""
    log: list[bool] = []
    fan_out = encoder._fan_out

    def recording(encoded: list[tuple[bytes, int, bool]]) -> None:
        log.extend(keyframe for _, _, keyframe in encoded)
        fan_out(encoded)

    encoder._fan_out = recording  # type: ignore[method-assign]
    return log


async def test_camera_microphone_and_speaking_reach_every_member(
    call_devices: CallDevices,
) -> None:
    sessions, seen, _ = await mesh(call_devices, ("amy", "ben", "cal"))
    amy, others = sessions[0], sessions[1:]

    # Who is speaking: amy sends speech, ben and cal silence.
    await wait_for(
        lambda: all(seen[id(o)].speaks(amy.own) for o in others), TIMEOUT, "amy speaking"
    )
    assert all(o.active_speaker() == amy.own for o in others)
    assert all(seen[id(o)].active[-1] == amy.own for o in others)
    for o in sessions:
        for silent in sessions[1:]:
            assert (silent.own, True) not in seen[id(o)].speaking

    # Camera off: the others are told, amy's camera encoder stops, no video arrives.
    def video_taps() -> list[ReceiverTap]:
        return [tap(o, amy.own, "video", USERMEDIA) for o in others]

    await amy.set_camera_muted(True)
    await wait_for(
        lambda: all(seen[id(o)].mute(amy.own) == (False, True) for o in others),
        TIMEOUT,
        "the others told the camera is off",
    )
    await stays_silent(amy, others, video_taps, "camera")
    # Camera on: told, and video decrypts again, starting with a key frame.
    logs = [record_frames(t) for t in video_taps()]
    sent = record_sent(amy.encoders["camera"])
    keyframes = [t.counters.keyframes_decrypted for t in video_taps()]
    await amy.set_camera_muted(False)
    await wait_for(
        lambda: all(seen[id(o)].mute(amy.own) == (False, False) for o in others),
        TIMEOUT,
        "the others told the camera is on",
    )
    await frames_flow(amy, others, "video", USERMEDIA)
    assert sent[0], sent  # the first frame encoded after the pause is a key frame
    # aiortc's jitter buffer lets a frame go when the next one arrives: the last frame from
    # before the pause comes out just ahead of that key frame.
    assert all(True in log[:2] for log in logs), logs
    after = [t.counters.keyframes_decrypted for t in video_taps()]
    assert all(a > k for a, k in zip(after, keyframes, strict=True)), (after, keyframes)

    # Microphone muted: told, no audio encoded or received, amy stops speaking.
    def audio_taps() -> list[ReceiverTap]:
        return [tap(o, amy.own, "audio", USERMEDIA) for o in others]

    await amy.set_microphone_muted(True)
    await wait_for(
        lambda: all(seen[id(o)].mute(amy.own) == (True, False) for o in others),
        TIMEOUT,
        "the others told the microphone is muted",
    )
    await stays_silent(amy, others, audio_taps, "microphone")
    await wait_for(
        lambda: not any(seen[id(o)].speaks(amy.own) for o in others), TIMEOUT, "amy silent"
    )
    spoken = [len(seen[id(o)].speaking) for o in others]
    await frames_flow(amy, others, "video", USERMEDIA, minimum=10)
    assert [len(seen[id(o)].speaking) for o in others] == spoken  # no word while muted
    # Unmuted: told, audio decrypts again, amy speaks again.
    await amy.set_microphone_muted(False)
    await wait_for(
        lambda: all(seen[id(o)].mute(amy.own) == (False, False) for o in others),
        TIMEOUT,
        "the others told the microphone is on",
    )
    await frames_flow(amy, others, "audio", USERMEDIA, minimum=20)
    await wait_for(
        lambda: all(seen[id(o)].speaks(amy.own) for o in others), TIMEOUT, "amy speaking again"
    )
    for o in sessions:
        for silent in sessions[1:]:
            assert (silent.own, True) not in seen[id(o)].speaking


async def test_screen_share_is_encoded_once_for_all_and_released_when_it_ends(
    call_devices: CallDevices,
) -> None:
    sessions, seen, _ = await mesh(call_devices, ("dee", "eli", "fox"))
    dee, others = sessions[0], sessions[1:]

    await dee.set_screen_share(True)
    await wait_for(
        lambda: all(seen[id(o)].screen_track(dee.own) is not None for o in others),
        TIMEOUT,
        "the others given dee's screen",
    )
    assert all(seen[id(o)].screen_track(dee.own).kind == "video" for o in others)  # type: ignore[union-attr]
    await frames_flow(dee, others, "video", SCREENSHARE, minimum=10)
    # One shared screen encoder, subscribed by both pairs; each frame encoded and encrypted once.
    encoder = dee.encoders["screenshare"]
    assert len(encoder.subscribers) == 2
    screen_taps = [tap(o, dee.own, "video", SCREENSHARE) for o in others]
    encrypted = encoder.tap.counters.frames_encrypted
    assert encrypted <= encoder.counters.frames_encoded
    assert decrypted(screen_taps) > encrypted  # both peers together got more than was encoded
    # The others' own screens are not shared: nobody else encodes one.
    assert all("screenshare" not in o.encoders for o in others)

    await dee.set_screen_share(False)
    await wait_for(
        lambda: all(
            any(d == dee.own and p is SCREENSHARE for d, _, p in seen[id(o)].removed)
            for o in others
        ),
        TIMEOUT,
        "the others told the screen share ended",
    )
    # Once both pairs renegotiated, the screen encoder is stopped and dropped.
    await wait_for(lambda: "screenshare" not in dee.encoders, TIMEOUT, "the screen encoder gone")
    assert not encoder.subscribers
    assert encoder._task is None  # stopped: it reads the screen no more
    got = received(screen_taps)
    await frames_flow(dee, others, "video", USERMEDIA, minimum=15)
    assert received(screen_taps) == got
    assert tap(others[0], dee.own, "video", USERMEDIA) is not None

    # Sharing again: a new screen encoder, and the others are given the screen again.
    added = [len(seen[id(o)].added) for o in others]
    await dee.set_screen_share(True)
    await wait_for(
        lambda: all(
            any(d == dee.own and p is SCREENSHARE for d, _, p in seen[id(o)].added[n:])
            for o, n in zip(others, added, strict=True)
        ),
        TIMEOUT,
        "the others given dee's screen again",
    )
    await frames_flow(dee, others, "video", SCREENSHARE, minimum=10)
    assert len(dee.encoders["screenshare"].subscribers) == 2


async def test_a_late_joiner_gets_the_camera_state_and_the_screen_share(
    call_devices: CallDevices,
) -> None:
    sessions, seen_before, (late_device,) = await mesh(call_devices, ("gil", "hal", "ida"), late=1)
    gil = sessions[0]
    await gil.set_camera_muted(True)
    await gil.set_screen_share(True)
    await frames_flow(gil, sessions[1:], "video", SCREENSHARE)

    late = group_call(call_devices, late_device, gil.room_id, media=small_media("speech"))
    seen = Seen(late)
    signals: list[Any] = []
    late.transport.add_to_device_listener(signals.append)
    # The late joiner itself joins muted and sharing its screen.
    await late.set_microphone_muted(True)
    await late.set_screen_share(True)
    await late.join()

    await wait_for(lambda: seen.mute(gil.own) == (False, True), TIMEOUT, "gil's camera state")
    # The state came in the pair's invite or answer itself, not in a later update.
    first = next(
        m
        for m in signals
        if m.sender == gil.own.user_id and m.type in ("m.call.invite", "m.call.answer")
    )
    metadata = first.content["sdp_stream_metadata"]
    assert [(m["audio_muted"], m["video_muted"]) for m in metadata.values()] == [(False, True)]
    await wait_for(lambda: seen.screen_track(gil.own) is not None, TIMEOUT, "gil's screen")
    await frames_flow(gil, [late], "video", SCREENSHARE)
    assert len(gil.encoders["screenshare"].subscribers) == 2
    # The camera stays off for the late joiner: no camera frame arrives from gil.
    camera = tap(late, gil.own, "video", USERMEDIA)
    assert camera is None or camera.counters.frames_received == 0
    await frames_flow(gil, [late], "audio", USERMEDIA, minimum=20)
    camera = tap(late, gil.own, "video", USERMEDIA)
    assert camera is None or camera.counters.frames_received == 0

    # The others get the late joiner's state: muted from the start, its screen once connected.
    for o in sessions:
        await wait_for(
            lambda o=o: seen_before[id(o)].mute(late.own) == (True, False),
            TIMEOUT,
            "the late joiner's mute",
        )
        await wait_for(
            lambda o=o: seen_before[id(o)].screen_track(late.own) is not None,
            TIMEOUT,
            "the late joiner's screen",
        )
    await frames_flow(late, sessions, "video", SCREENSHARE)
    await frames_flow(late, sessions, "video", USERMEDIA, minimum=10)
    assert late.encoders["microphone"].counters.frames_encoded == 0
    assert all(tap(o, late.own, "audio", USERMEDIA).counters.frames_received == 0 for o in sessions)

    # gil stops sharing; the late joiner's screen, on the same pair, goes on reaching him.
    gil_seen = seen_before[id(gil)]
    await gil.set_screen_share(False)
    await wait_for(
        lambda: any(d == gil.own and p is SCREENSHARE for d, _, p in seen.removed),
        TIMEOUT,
        "the late joiner told gil's screen share ended",
    )
    await wait_for(lambda: "screenshare" not in gil.encoders, TIMEOUT, "gil's screen encoder gone")
    await frames_flow(late, sessions, "video", SCREENSHARE, minimum=10)
    assert not any(d == late.own and p is SCREENSHARE for d, _, p in gil_seen.removed)

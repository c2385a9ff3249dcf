"""SFrameSender and SFrameReceiver: counters, keys, replay, expiry and the RFC 9605 ratchet."""

import os

import pytest

from sealcall.sframe import (
    AuthenticationError,
    CipherSuite,
    CounterExhaustedError,
    ReplayError,
    SFrameReceiver,
    SFrameSender,
    SuiteError,
    UnknownKeyError,
    decode_header,
    encode_header,
    keys,
)

KEY = bytes(range(16))
OTHER = bytes(range(16, 32))


def pair(
    suite: int = CipherSuite.AES_128_GCM_SHA256_128, kid: int = 7
) -> tuple[SFrameSender, SFrameReceiver]:
    sender = SFrameSender(kid, KEY, suite)
    receiver = SFrameReceiver(suite)
    receiver.add_key(kid, KEY)
    return sender, receiver


@pytest.mark.parametrize("suite", list(CipherSuite))
def test_round_trip_every_suite(suite: CipherSuite) -> None:
    sender, receiver = pair(suite)
    for i in range(20):
        payload = os.urandom(i * 37)
        frame = sender.encrypt(b"meta", payload)
        assert receiver.decrypt(b"meta", frame) == (7, i, payload)


def test_prefix_is_copied_in_front_unprotected() -> None:
    sender, receiver = pair()
    frame = sender.encrypt(b"P", b"payload", prefix=b"P")
    assert frame[:1] == b"P"
    assert receiver.decrypt(b"P", frame[1:], prefix=b"P")[2] == b"Ppayload"


def test_counter_never_repeats_across_key_changes() -> None:
    sender, _ = pair()
    seen = []
    for kid, key in [(7, KEY), (8, OTHER), (7, KEY)]:
        sender.set_key(kid, key)
        for _ in range(5):
            seen.append(decode_header(sender.encrypt(b"", b"x"))[1])
    assert seen == list(range(15))


def test_key_replacement_next_frame_uses_new_key() -> None:
    sender, receiver = pair()
    receiver.add_key(8, OTHER)
    sender.encrypt(b"", b"a")
    sender.set_key(8, OTHER)
    kid, _, plaintext = receiver.decrypt(b"", sender.encrypt(b"", b"b"))
    assert (kid, plaintext) == (8, b"b")
    assert sender.kid == 8


def test_counter_exhaustion() -> None:
    sender = SFrameSender(1, KEY, first_ctr=2**64 - 1)
    sender.encrypt(b"", b"last")
    with pytest.raises(CounterExhaustedError):
        sender.encrypt(b"", b"one too many")


def test_unknown_kid() -> None:
    sender, _ = pair()
    with pytest.raises(UnknownKeyError) as info:
        SFrameReceiver().decrypt(b"", sender.encrypt(b"", b"x"))
    assert info.value.kid == 7


def test_wrong_key_and_tampering_fail_authentication() -> None:
    sender, _ = pair()
    receiver = SFrameReceiver()
    receiver.add_key(7, OTHER)
    frame = sender.encrypt(b"m", b"secret")
    with pytest.raises(AuthenticationError):
        receiver.decrypt(b"m", frame)
    _, good = pair()
    tampered = bytearray(frame)
    tampered[-1] ^= 1
    with pytest.raises(AuthenticationError):
        good.decrypt(b"m", bytes(tampered))
    with pytest.raises(AuthenticationError):
        good.decrypt(b"other metadata", frame)


def test_replay_window() -> None:
    sender = SFrameSender(7, KEY)
    receiver = SFrameReceiver(replay_window=4)
    receiver.add_key(7, KEY)
    frames = [sender.encrypt(b"", bytes([i])) for i in range(10)]
    receiver.decrypt(b"", frames[5])
    receiver.decrypt(b"", frames[3])  # out of order but inside the window
    with pytest.raises(ReplayError):
        receiver.decrypt(b"", frames[5])  # duplicate
    with pytest.raises(ReplayError):
        receiver.decrypt(b"", frames[1])  # older than the window
    receiver.decrypt(b"", frames[9])
    with pytest.raises(ReplayError):
        receiver.decrypt(b"", frames[5])  # now outside the window
    assert receiver.decrypt(b"", frames[8])[2] == bytes([8])


def test_forged_frame_does_not_move_the_replay_window() -> None:
    sender, receiver = pair()
    frames = [sender.encrypt(b"", b"x") for _ in range(3)]
    forged = bytearray(SFrameSender(7, OTHER, first_ctr=1000).encrypt(b"", b"x"))
    with pytest.raises(AuthenticationError):
        receiver.decrypt(b"", bytes(forged))
    for frame in frames:  # all still accepted: the forged CTR 1000 was never recorded
        receiver.decrypt(b"", frame)


def test_replay_windows_are_per_kid() -> None:
    a = SFrameSender(1, KEY)
    b = SFrameSender(2, OTHER)
    receiver = SFrameReceiver()
    receiver.add_key(1, KEY)
    receiver.add_key(2, OTHER)
    assert receiver.decrypt(b"", a.encrypt(b"", b"a"))[:2] == (1, 0)
    assert receiver.decrypt(b"", b.encrypt(b"", b"b"))[:2] == (2, 0)


def test_retire_and_expire_keys() -> None:
    sender, receiver = pair()
    receiver.add_key(8, OTHER)
    receiver.retire_key(7, expires_at=10.0)
    assert receiver.next_expiry() == 10.0
    assert receiver.expire(9.9) == []
    receiver.decrypt(b"", sender.encrypt(b"", b"still fine in the grace window"))
    assert receiver.expire(10.0) == [7]
    assert receiver.kids() == [8]
    with pytest.raises(UnknownKeyError):
        receiver.decrypt(b"", sender.encrypt(b"", b"too late"))
    with pytest.raises(UnknownKeyError):
        receiver.retire_key(7, 11.0)


def test_remove_key_and_readding_same_key_keeps_replay_state() -> None:
    sender, receiver = pair()
    frame = sender.encrypt(b"", b"x")
    receiver.decrypt(b"", frame)
    receiver.add_key(7, KEY)
    with pytest.raises(ReplayError):
        receiver.decrypt(b"", frame)
    receiver.remove_key(7)
    receiver.remove_key(7)  # idempotent
    assert receiver.kids() == []


def test_derived_keys_are_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    sender, receiver = pair()
    calls = []
    real = keys.derive_key_salt
    monkeypatch.setattr(keys, "derive_key_salt", lambda *a: calls.append(a) or real(*a))
    for _ in range(50):
        receiver.decrypt(b"", sender.encrypt(b"", b"frame"))
    assert calls == []


def test_bad_configuration_is_rejected() -> None:
    with pytest.raises(SuiteError):
        SFrameSender(1, KEY, suite=0x99)
    with pytest.raises(SuiteError):
        SFrameSender(1, b"")
    with pytest.raises(SuiteError):
        SFrameReceiver(suite=0)
    with pytest.raises(ValueError, match="replay window"):
        SFrameReceiver(replay_window=0)
    with pytest.raises(ValueError, match="ratchet bits"):
        SFrameSender(1, KEY, ratchet_bits=40)
    with pytest.raises(ValueError, match="without ratchet bits"):
        SFrameSender(1, KEY).ratchet()


class TestRatchet:
    """RFC 9605 section 5.1: KID = generation << R | step, base_key[i+1] = HKDF(base_key[i])."""

    R = 4

    def make(self, **kwargs: int) -> tuple[SFrameSender, SFrameReceiver]:
        kid = 3 << self.R
        sender = SFrameSender(kid, KEY, ratchet_bits=self.R)
        receiver = SFrameReceiver(**kwargs)
        receiver.add_key(kid, KEY, ratchet_bits=self.R)
        return sender, receiver

    def test_sender_ratchet_changes_kid_and_key(self) -> None:
        sender, _ = self.make()
        assert sender.ratchet() == (3 << self.R) | 1
        assert sender.ratchet() == (3 << self.R) | 2

    def test_receiver_follows_within_look_ahead(self) -> None:
        sender, receiver = self.make(max_ratchet_steps=3)
        receiver.decrypt(b"", sender.encrypt(b"", b"step 0"))
        for _ in range(3):
            sender.ratchet()
        kid, _, plaintext = receiver.decrypt(b"", sender.encrypt(b"", b"step 3"))
        assert (kid & 0xF, plaintext) == (3, b"step 3")

    def test_too_far_ahead_is_unknown(self) -> None:
        sender, receiver = self.make(max_ratchet_steps=2)
        for _ in range(3):
            sender.ratchet()
        with pytest.raises(UnknownKeyError):
            receiver.decrypt(b"", sender.encrypt(b"", b"step 3"))

    def test_forged_step_is_not_adopted(self) -> None:
        _sender, receiver = self.make()
        forged = SFrameSender((3 << self.R) | 1, OTHER).encrypt(b"", b"x")
        with pytest.raises(AuthenticationError):
            receiver.decrypt(b"", forged)
        assert receiver.kids() == [3 << self.R]

    def test_old_steps_kept_for_late_frames_then_dropped(self) -> None:
        sender, receiver = self.make(keep_ratchet_steps=1)
        late = sender.encrypt(b"", b"late step 0")
        sender.ratchet()
        receiver.decrypt(b"", sender.encrypt(b"", b"step 1"))
        assert receiver.decrypt(b"", late)[2] == b"late step 0"
        sender.ratchet()
        receiver.decrypt(b"", sender.encrypt(b"", b"step 2"))
        assert receiver.kids() == [(3 << self.R) | 1, (3 << self.R) | 2]

    def test_step_wraps_around_with_one_bit(self) -> None:
        sender = SFrameSender(2 << 1, KEY, ratchet_bits=1)
        receiver = SFrameReceiver()
        receiver.add_key(2 << 1, KEY, ratchet_bits=1)
        for step in range(5):
            assert receiver.decrypt(b"", sender.encrypt(b"", bytes([step])))[2] == bytes([step])
            sender.ratchet()

    def test_remove_key_forgets_the_generation(self) -> None:
        sender, receiver = self.make()
        sender.ratchet()
        receiver.decrypt(b"", sender.encrypt(b"", b"x"))
        receiver.remove_key(3 << self.R)
        assert receiver.kids() == []
        sender.ratchet()
        with pytest.raises(UnknownKeyError):
            receiver.decrypt(b"", sender.encrypt(b"", b"y"))


@pytest.mark.parametrize("first", [0, 250, 65_530, 2**24 - 3, 2**56 - 2, 2**64 - 4])
def test_sender_headers_match_the_encoder_across_length_boundaries(first: int) -> None:
    sender = SFrameSender(300, KEY, first_ctr=first)
    receiver = SFrameReceiver()
    receiver.add_key(300, KEY)
    for ctr in range(first, min(first + 12, 2**64)):
        frame = sender.encrypt(b"", b"x")
        assert frame.startswith(encode_header(300, ctr))
        assert receiver.decrypt(b"", frame) == (300, ctr, b"x")


def test_huge_counter_jump_clears_the_window_without_huge_memory() -> None:
    sender, receiver = pair()
    receiver.decrypt(b"", sender.encrypt(b"", b"first"))
    far = SFrameSender(7, KEY, first_ctr=2**62)
    assert receiver.decrypt(b"", far.encrypt(b"", b"far ahead"))[1] == 2**62
    with pytest.raises(ReplayError):
        receiver.decrypt(b"", sender.encrypt(b"", b"now far too old"))


def test_a_video_frame_two_seconds_behind_the_audio_still_opens() -> None:
    """One sender's audio and two video layers share its counter (110 frames a second through an
    SFU); the video reaches decryption only once the jitter buffer has it whole, seconds after
    the audio on a busy machine. Those late frames are new, not replays."""
    sender = SFrameSender(7, KEY)
    receiver = SFrameReceiver()
    receiver.add_key(7, KEY)
    kinds = ["audio", "thumbnail", "full", "audio", "audio", "thumbnail", "full", "audio"]
    frames = [(kinds[i % len(kinds)], sender.encrypt(b"", bytes([i % 256]))) for i in range(220)]
    for kind, frame in frames:  # the audio of two seconds, as it arrives
        if kind == "audio":
            receiver.decrypt(b"", frame)
    for kind, frame in frames:  # then the video of those two seconds
        if kind != "audio":
            receiver.decrypt(b"", frame)
    with pytest.raises(ReplayError):
        receiver.decrypt(b"", frames[1][1])  # each still opens once

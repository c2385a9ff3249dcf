"""Who is speaking, from decoded audio levels: the sans-I/O detector on a fake clock."""

import math
from collections.abc import Hashable, Iterable

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from sealcall.group import SpeakingChanged, SpeakingDetector

FRAME = 0.02  # 20 ms audio frames, as Opus over aiortc decodes them
SPEECH = -25.0
SILENCE = -127.0
HISS = -68.0  # a quiet room through a microphone without noise suppression


class Clock:
    """Feeds frames of several sources into a detector, 20 ms apart, and keeps the events."""

    def __init__(self, detector: SpeakingDetector) -> None:
        self.detector = detector
        self.now = 0.0
        self.events: list[tuple[float, SpeakingChanged]] = []

    def frames(self, seconds: float, **levels: float) -> None:
        for _ in range(round(seconds / FRAME)):
            for source, dbov in levels.items():
                self._keep(self.detector.level(source, dbov, self.now))
            self.now += FRAME

    def pattern(self, levels: Iterable[float], source: str = "a") -> None:
        for dbov in levels:
            self._keep(self.detector.level(source, dbov, self.now))
            self.now += FRAME

    def tick(self, at: float) -> None:
        self.now = at
        self._keep(self.detector.tick(at))

    def _keep(self, events: list[SpeakingChanged]) -> None:
        self.events += [(self.now, e) for e in events]

    def changes(self) -> list[tuple[Hashable, bool]]:
        return [(e.source, e.speaking) for _, e in self.events]


def test_a_burst_of_speech_starts_after_a_tenth_of_a_second_and_stops_after_the_hang_over() -> None:
    clock = Clock(SpeakingDetector())
    clock.frames(1.0, a=HISS)
    assert clock.events == []
    clock.frames(0.08, a=SPEECH)
    assert clock.events == []  # 80 ms of sound is not yet speech
    clock.frames(0.5, a=SPEECH)
    ((started_at, started),) = clock.events
    assert started == SpeakingChanged("a", True, SPEECH)
    assert started_at == pytest.approx(1.1, abs=FRAME + 0.001)
    assert clock.detector.speaking() == ["a"]
    last_loud = clock.now - FRAME
    clock.frames(0.5, a=SILENCE)
    assert len(clock.events) == 1  # half a second of pause: still speaking
    clock.frames(0.5, a=SILENCE)
    stopped_at, stopped = clock.events[1]
    assert stopped == SpeakingChanged("a", False, SILENCE)  # the frame that decided it
    assert stopped_at == pytest.approx(last_loud + 0.6)
    assert clock.detector.speaking() == []
    assert clock.detector.loudest() == "a"  # the last one who spoke


def test_clicks_and_key_presses_never_count_as_speech() -> None:
    clock = Clock(SpeakingDetector())
    for _ in range(20):  # a loud frame or two, then a pause, for four seconds
        clock.pattern([-10.0, -12.0] + [HISS] * 8)
    for _ in range(20):  # single clicks, 100 ms apart
        clock.pattern([-6.0] + [SILENCE] * 4)
    assert clock.events == []
    assert clock.detector.speaking() == []
    assert clock.detector.loudest() is None


def test_pauses_between_syllables_and_words_do_not_stop_a_speaker() -> None:
    clock = Clock(SpeakingDetector())
    syllable = [SPEECH] * 6 + [SILENCE] * 6  # 120 ms sound, 120 ms pause
    word_gap = [HISS] * 20  # 400 ms between words
    for _ in range(5):
        clock.pattern(syllable * 3 + word_gap)
    assert clock.changes() == [("a", True)]
    clock.frames(1.0, a=HISS)
    assert clock.changes() == [("a", True), ("a", False)]
    # A frame lost or quiet inside a syllable does not cut it short.
    clock.pattern([SPEECH, SPEECH, SILENCE, SPEECH, SPEECH, HISS, SPEECH] + [HISS] * 6)
    assert clock.changes()[-1] == ("a", True)


def test_a_muted_stream_whose_frames_stop_stops_speaking_at_the_deadline() -> None:
    clock = Clock(SpeakingDetector())
    clock.frames(0.5, a=SPEECH)
    assert clock.changes() == [("a", True)]
    last_loud = clock.now - FRAME
    deadline = clock.detector.next_deadline()
    assert deadline == pytest.approx(last_loud + 0.6)
    # Muted: no more frames. Nothing happens before the deadline, the stop at it.
    clock.tick(deadline - 0.01)
    assert clock.changes() == [("a", True)]
    clock.tick(deadline)
    assert clock.changes() == [("a", True), ("a", False)]
    assert clock.events[-1][1].level == SPEECH  # no frame decided it: the last one's level
    assert clock.detector.next_deadline() is None
    assert clock.detector.tick(deadline + 5) == []
    # Unmuted after a long silence: speech counts again at once (the noise floor did not
    # rise while nothing was heard).
    clock.now = deadline + 30
    clock.frames(0.2, a=SPEECH)
    assert clock.changes()[-1] == ("a", True)


def test_a_steady_noise_above_the_threshold_stops_counting_but_speech_over_it_counts() -> None:
    clock = Clock(SpeakingDetector())
    clock.frames(10.0, a=-45.0)  # a fan next to the microphone
    assert clock.changes() == [("a", True), ("a", False)]  # while the noise floor rises
    assert clock.events[-1][0] < 6.0
    clock.frames(2.0, a=-45.0)
    assert clock.detector.speaking() == []
    syllable = [-20.0] * 6 + [-45.0] * 6
    clock.pattern(syllable * 10)
    assert clock.detector.speaking() == ["a"]
    # Without the noise floor the fan is a speaker for ever.
    fixed = Clock(SpeakingDetector(noise_margin_db=0))
    fixed.frames(10.0, a=-45.0)
    assert fixed.changes() == [("a", True)]


def test_quiet_sounds_below_the_threshold_never_count() -> None:
    clock = Clock(SpeakingDetector())
    clock.frames(0.5, a=SILENCE)
    clock.frames(2.0, a=-55.0)  # 70 dB above the floor, but below -50 dBov
    assert clock.events == []
    clock.frames(0.5, a=-50.0)
    assert clock.changes() == [("a", True)]


def test_the_loudest_of_two_speakers_is_the_active_one_with_a_hold_against_flicker() -> None:
    detector = SpeakingDetector()
    clock = Clock(detector)
    clock.frames(1.2, a=-30.0, b=SILENCE)
    assert detector.loudest() == "a"
    # b talks over a, clearly louder: a held the floor long enough, b takes over at once.
    clock.frames(0.3, a=-30.0, b=-15.0)
    assert detector.speaking() == ["b", "a"]
    assert detector.loudest() == "b"
    # a is louder now, but b has been active for less than the hold: no flicker yet.
    clock.frames(0.3, a=-10.0, b=-15.0)
    assert detector.speaking() == ["a", "b"]
    assert detector.loudest() == "b"
    clock.frames(1.0, a=-10.0, b=-15.0)
    assert detector.loudest() == "a"
    # A speaker barely louder than the active one does not take over.
    clock.frames(2.0, a=-20.0, b=-18.0)
    assert detector.loudest() == "a"
    # The active one falls silent: the one still speaking takes over at once.
    clock.frames(0.7, a=SILENCE, b=-18.0)
    assert detector.speaking() == ["b"]
    assert detector.loudest() == "b"
    # Everyone falls silent: the last speaker stays active.
    clock.frames(1.0, a=SILENCE, b=SILENCE)
    assert detector.speaking() == []
    assert detector.loudest() == "b"
    # It leaves: the one who spoke before it becomes the active speaker.
    assert detector.remove("b", clock.now) == []
    assert detector.loudest() == "a"
    assert detector.remove("a", clock.now) == []
    assert detector.loudest() is None


def test_speakers_are_ranked_by_their_speech_not_by_the_pauses_between_syllables() -> None:
    detector = SpeakingDetector()
    clock = Clock(detector)
    orders = []
    for _ in range(15):  # a talks loudly in syllables, b steadily and softly
        for a in [-15.0] * 6 + [SILENCE] * 6:
            clock.frames(FRAME, a=a, b=-30.0)
            orders.append(detector.speaking())
    assert orders[-1] == ["a", "b"]
    assert all(order[0] == "a" for order in orders if len(order) == 2)
    assert detector.loudest() == "a"


def test_removing_a_speaker_stops_it_and_forgets_it() -> None:
    detector = SpeakingDetector()
    clock = Clock(detector)
    clock.frames(0.5, a=SPEECH, b=SPEECH)
    assert sorted(detector.speaking()) == ["a", "b"]  # type: ignore[type-var]
    assert detector.remove("a", clock.now) == [SpeakingChanged("a", False, SPEECH)]
    assert detector.speaking() == ["b"]
    assert detector.loudest() == "b"
    assert detector.remove("a", clock.now) == []  # unknown now: nothing
    assert detector.sources() == 1
    # Coming back is a new stream: it has to speak for a tenth of a second again.
    clock.frames(0.06, a=SPEECH)
    assert "a" not in detector.speaking()


def test_sources_are_bounded_the_stalest_is_evicted_and_stops_speaking() -> None:
    detector = SpeakingDetector(max_sources=3)
    clock = Clock(detector)
    clock.frames(0.3, a=SPEECH)
    clock.frames(0.3, b=SPEECH, c=SILENCE)
    before = len(clock.events)
    clock.frames(0.02, d=SILENCE)  # a was heard least recently
    assert clock.changes()[before:] == [("a", False)]
    assert detector.sources() == 3
    assert detector.evicted == 1
    assert detector.speaking() == ["b"]
    for i in range(100):
        detector.level(i, SILENCE, clock.now)
    assert detector.sources() == 3
    assert detector.evicted == 101
    assert detector.loudest() is None  # b, the active speaker, was evicted too


def test_hostile_levels_are_clamped_and_bad_settings_or_times_refused() -> None:
    detector = SpeakingDetector()
    for i in range(10):
        detector.level("a", math.inf, i * FRAME)
    assert detector.speaking() == ["a"]  # +inf is as loud as 0 dBov
    assert detector.level("b", math.inf, 0.0) == []
    assert [e.level for e in detector.tick(5.0)] == [0.0]
    for i in range(10, 60):
        detector.level("a", math.nan, i * FRAME)  # NaN is silence
    assert detector.speaking() == []
    assert detector.level("a", 0.0, 0.0) == []  # a clock going back is held, not an error
    with pytest.raises(ValueError, match="finite"):
        detector.level("a", -20.0, math.nan)
    with pytest.raises(ValueError, match="finite"):
        detector.tick(math.inf)
    for bad in (
        {"threshold_dbov": 3.0},
        {"stop_after": 0.0},
        {"start_after": -1.0},
        {"noise_margin_db": -1.0},
        {"max_sources": 0},
    ):
        with pytest.raises(ValueError, match="must be"):
            SpeakingDetector(**bad)  # type: ignore[arg-type]


_levels = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([SILENCE, HISS, -50.0, -45.0, SPEECH, 0.0]),
)
# (operation, source, level, frames, seconds before it): runs of 20 ms frames at one level (so
# that speakers start and stop), single frames at any time, ticks and removals.
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("frames"), st.integers(0, 4), _levels, st.integers(1, 40), st.just(0.0)),
        st.tuples(st.just("frames"), st.integers(0, 4), _levels, st.just(1), st.floats(0, 0.7)),
        st.tuples(st.just("tick"), st.just(0), st.just(0.0), st.just(0), st.floats(0, 2)),
        st.tuples(
            st.just("remove"), st.integers(0, 4), st.just(0.0), st.just(0), st.floats(0, 0.1)
        ),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(_ops, st.integers(1, 5))
def test_any_level_sequence_keeps_speakers_consistent_with_the_events(
    ops: list[tuple[str, int, float, int, float]], max_sources: int
) -> None:
    detector = SpeakingDetector(max_sources=max_sources)
    now = 0.0
    speaking: set[Hashable] = set()
    started = False

    def check(events: list[SpeakingChanged]) -> None:
        nonlocal started
        for change in events:
            assert change.speaking != (change.source in speaking)  # only real changes
            assert SILENCE <= change.level <= 0.0
            (speaking.add if change.speaking else speaking.discard)(change.source)
            started |= change.speaking
        assert set(detector.speaking()) == speaking
        assert len(detector.speaking()) == len(speaking)
        assert detector.sources() <= max_sources
        deadline = detector.next_deadline()
        assert (deadline is None) == (not speaking)
        if deadline is not None:
            assert deadline > now  # anything due has been done
        if speaking:  # someone speaks: the active speaker is one of them
            assert detector.loudest() in speaking

    for op, source, dbov, frames, before in ops:
        now += before
        if op == "frames":
            for _ in range(frames):
                check(detector.level(source, dbov, now))
                now += FRAME
        elif op == "tick":
            check(detector.tick(now))
        else:
            check(detector.remove(source, now))
    event("a speaker started" if started else "nobody spoke")

"""Who is speaking, from the levels of decoded audio: a pure detector with hysteresis.

Levels are RMS dBov per decoded frame (0 = loudest, -127 = silence), measured locally
(:mod:`sealcall.media.audio_levels`): the mesh sends no RTP audio-level headers, which would
tell relays when we speak. A frame is *loud* when it is at or above ``threshold_dbov`` and at
least ``noise_margin_db`` above the source's noise floor. A source starts speaking after loud
frames lasting ``start_after`` (a click, a cough, a key press does not count) and stops when
no loud frame came for ``stop_after`` (the gaps between words and syllables do not count),
also when its frames stop coming (a muted microphone sends none: :meth:`tick` at
:meth:`next_deadline`).

Defaults, and why. Decoded speech sits around -20 to -35 dBov RMS; our senders have no noise
suppression (aiortc has no audio processing), so a quiet room's microphone hiss reaches us at
-60 to -70 dBov: the fixed threshold of -50 dBov sits between them, as LiveKit's -35 dBov
does for the noise-suppressed levels browsers send. A steady noise louder than that (a fan
next to the microphone) would count as speech for ever; the noise floor, which follows a
source's quietest frames down at once and creeps up by ``floor_rise_db_per_s``, makes it
quiet after a few seconds, while speech, whose pauses keep pulling the floor down, stays loud.
The start and stop delays are near LiveKit's (a 400 ms window, 40 % of it loud) and shorter
than matrix-js-sdk's (any of eight 200 ms samples loud: up to 1.6 s of hang-over), so the
indicator follows turns in a conversation without flickering inside a sentence.

The active speaker (:meth:`SpeakingDetector.loudest`) is the loudest current speaker by a
smoothed level; it changes to a louder one only after holding for ``hold`` seconds, and stays
the last one who spoke while nobody speaks. It changes only inside :meth:`level`,
:meth:`remove` and :meth:`tick`: compare it before and after a call to see a change.
"""

import math
from collections.abc import Hashable
from dataclasses import dataclass

SILENCE_DBOV = -127.0
MAX_SOURCES = 64
# Loud frames closer together than this make one run (20 to 60 ms audio frames, a lost one).
MAX_GAP = 0.08
# The level that ranks speakers talking at once follows each louder frame and falls by at most
# this much per second (a VU meter's release), so the gaps between syllables barely lower it.
RELEASE_DB_PER_S = 20.0
# A louder speaker takes over as the active speaker only when louder by this much.
SWITCH_MARGIN_DB = 3.0


@dataclass(frozen=True)
class SpeakingChanged:
    """``source`` started (``speaking``) or stopped speaking; ``level`` is the dBov of the
    frame that decided it (for a stop without a frame, the last frame's)."""

    source: Hashable
    speaking: bool
    level: float


class _Source:
    __slots__ = (
        "floor",
        "last_frame",
        "last_level",
        "last_loud",
        "loud_since",
        "smoothed",
        "speaking",
        "spoke_at",
    )

    def __init__(self, level: float, floor: float, now: float) -> None:
        self.floor = floor
        self.smoothed = level
        self.last_level = level
        self.last_frame = now
        self.last_loud: float | None = None
        self.loud_since = now
        self.speaking = False
        self.spoke_at: float | None = None  # when it last spoke (for the active speaker)


def _clamp(dbov: float) -> float:
    if math.isnan(dbov):
        return SILENCE_DBOV
    return min(0.0, max(SILENCE_DBOV, dbov))


class SpeakingDetector:
    """Who is speaking, from audio levels (dBov, 0 = loudest, -127 = silence) with hysteresis.

    Sources are whatever the caller keys streams by; ``now`` is in seconds on any monotonic
    clock (the event loop's), the same for every call. At most ``max_sources`` are tracked: a
    new one beyond that evicts the one heard least recently (which stops speaking), counted in
    ``evicted``. ``noise_margin_db=0`` turns the noise floor off (the threshold alone decides).
    """

    def __init__(
        self,
        *,
        threshold_dbov: float = -50.0,
        start_after: float = 0.1,
        stop_after: float = 0.6,
        noise_margin_db: float = 12.0,
        floor_rise_db_per_s: float = 2.0,
        hold: float = 1.0,
        max_sources: int = MAX_SOURCES,
    ) -> None:
        if not SILENCE_DBOV <= threshold_dbov <= 0.0:
            raise ValueError("threshold_dbov must be between -127 and 0")
        if start_after < 0 or stop_after <= 0 or hold < 0:
            raise ValueError("start_after and hold must be >= 0, stop_after > 0")
        if noise_margin_db < 0 or floor_rise_db_per_s < 0:
            raise ValueError("noise_margin_db and floor_rise_db_per_s must be >= 0")
        if max_sources < 1:
            raise ValueError("max_sources must be at least 1")
        self.threshold_dbov = threshold_dbov
        self.start_after = start_after
        self.stop_after = stop_after
        self.noise_margin_db = noise_margin_db
        self.floor_rise_db_per_s = floor_rise_db_per_s
        self.hold = hold
        self.max_sources = max_sources
        self.evicted = 0
        self._sources: dict[Hashable, _Source] = {}
        self._active: Hashable | None = None
        self._active_since = 0.0
        self._now = -math.inf

    # Inputs

    def level(self, source: Hashable, dbov: float, now: float) -> list[SpeakingChanged]:
        """One decoded frame of ``source`` measured ``dbov`` at ``now``.

        Out-of-range levels are clamped (NaN is silence); a clock that goes back is held, a
        time that is not finite raises ValueError.
        """
        now = self._clock(now)
        dbov = _clamp(dbov)
        events: list[SpeakingChanged] = []
        state = self._sources.get(source)
        if state is None:
            events += self._make_room()
            # The floor starts no higher than where a frame at the threshold is loud, so a
            # stream that begins with speech counts at once; a steady noise above it makes
            # the floor rise to it within a few seconds.
            state = _Source(dbov, min(dbov, self.threshold_dbov - self.noise_margin_db), now)
            self._sources[source] = state
        else:
            elapsed = now - state.last_frame
            # No frames (a muted microphone) measure nothing: the floor does not rise for them.
            rise = self.floor_rise_db_per_s * min(elapsed, MAX_GAP)
            state.floor = min(dbov, state.floor + rise)
            # An envelope: up at once, down slowly, so a gap between syllables barely counts.
            state.smoothed = max(dbov, state.smoothed - RELEASE_DB_PER_S * elapsed)
        state.last_frame = now
        state.last_level = dbov

        started = False
        if dbov >= self.threshold_dbov and dbov - state.floor >= self.noise_margin_db:
            if state.last_loud is None or now - state.last_loud > MAX_GAP:
                state.loud_since = now  # a new run of loud frames
            state.last_loud = now
            # (A microsecond's leeway: frame times summed in floats land just short.)
            if not state.speaking and now - state.loud_since >= self.start_after - 1e-6:
                state.speaking = started = True
        events += self._expire(now)
        if started:
            events.append(SpeakingChanged(source, True, dbov))
        if state.speaking:
            state.spoke_at = now
        self._choose_active(now)
        return events

    def remove(self, source: Hashable, now: float) -> list[SpeakingChanged]:
        """A stream went away: forget ``source`` (a speaker stops)."""
        now = self._clock(now)
        events = self._expire(now)
        state = self._sources.pop(source, None)
        if state is not None and state.speaking:
            events.append(SpeakingChanged(source, False, state.last_level))
        if source == self._active:
            self._active = None
        self._choose_active(now)
        return events

    def tick(self, now: float) -> list[SpeakingChanged]:
        """Time passed: a speaker whose loud frames stopped ``stop_after`` ago stops."""
        now = self._clock(now)
        events = self._expire(now)
        self._choose_active(now)
        return events

    # Queries

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (a speaker may stop), or None."""
        ends = [
            s.last_loud + self.stop_after
            for s in self._sources.values()
            if s.speaking and s.last_loud is not None
        ]
        return min(ends, default=None)

    def speaking(self) -> list[Hashable]:
        """The current speakers, loudest (by smoothed level) first."""
        speakers = [(s.smoothed, k) for k, s in self._sources.items() if s.speaking]
        speakers.sort(key=lambda pair: -pair[0])
        return [k for _, k in speakers]

    def loudest(self) -> Hashable | None:
        """The active speaker: the loudest speaker, held for ``hold`` seconds before a louder
        one takes over, and the last one who spoke while nobody speaks; None before anyone has
        spoken (or once the last one is removed and nobody spoke since)."""
        return self._active

    def sources(self) -> int:
        """How many sources are tracked."""
        return len(self._sources)

    # Internals

    def _clock(self, now: float) -> float:
        if not math.isfinite(now):
            raise ValueError("now must be a finite time")
        self._now = max(self._now, now)
        return self._now

    def _expire(self, now: float) -> list[SpeakingChanged]:
        events = []
        for key, state in self._sources.items():
            if (
                state.speaking
                and state.last_loud is not None
                and now >= state.last_loud + self.stop_after  # as next_deadline computes it
            ):
                state.speaking = False
                events.append(SpeakingChanged(key, False, state.last_level))
        return events

    def _make_room(self) -> list[SpeakingChanged]:
        events = []
        while len(self._sources) >= self.max_sources:
            stalest = min(self._sources, key=lambda k: self._sources[k].last_frame)
            state = self._sources.pop(stalest)
            self.evicted += 1
            if state.speaking:
                events.append(SpeakingChanged(stalest, False, state.last_level))
            if stalest == self._active:
                self._active = None
        return events

    def _choose_active(self, now: float) -> None:
        speakers = self.speaking()
        current = self._sources.get(self._active) if self._active is not None else None
        if speakers:
            best = speakers[0]
            # A speaker takes over from one who is silent at once, from one still speaking
            # only after the hold and when clearly louder.
            takes_over = (
                current is None
                or not current.speaking
                or (
                    now - self._active_since >= self.hold
                    and self._sources[best].smoothed > current.smoothed + SWITCH_MARGIN_DB
                )
            )
            if takes_over:
                self._switch(best, now)
        elif current is None:
            # The active speaker went away while nobody speaks: the one who spoke last.
            spoke = [(s.spoke_at, k) for k, s in self._sources.items() if s.spoke_at is not None]
            self._active = max(spoke, key=lambda pair: pair[0])[1] if spoke else None

    def _switch(self, source: Hashable, now: float) -> None:
        if source != self._active:
            self._active = source
            self._active_since = now

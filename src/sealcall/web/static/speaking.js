// Who is speaking in a group call, from the levels of each member's received audio (the Python
// side sees no decoded audio). Pure: levels and time (seconds) in, state out; the page feeds it
// from RTCRtpReceiver.getSynchronizationSources() or getStats() (Peer.audioLevel, app.js).
//
// The hysteresis of sealcall.group.SpeakingDetector as docs/web-protocol.md fixes it: a member
// speaks from a level at or above -50 dBov and is silent after 1 s with none; the active
// speaker is the loudest speaking member, replaced only by one louder by 3 dB for 1 s, and
// stays the last one who spoke while nobody speaks.

export const THRESHOLD_DBOV = -50;
export const STOP_AFTER_S = 1;
export const HOLD_S = 1;
export const SWITCH_MARGIN_DB = 3;
export const MAX_SOURCES = 64;
const SILENCE_DBOV = -127;
const RELEASE_DB_PER_S = 20; // the ranking level falls this fast between loud samples

/** dBov (0 = loudest, -127 = silence) of an RTC audioLevel (0..1, linear). */
export function levelToDbov(level) {
  if (typeof level !== "number" || !(level > 0)) return SILENCE_DBOV;
  return Math.max(SILENCE_DBOV, Math.min(0, 20 * Math.log10(level)));
}

export class SpeakingDetector {
  constructor() {
    this.sources = new Map(); // source -> {lastLoud, smoothed, at}
    this.activeSource = null;
    this.challenger = null; // {source, since}: louder than the active speaker, since when
  }

  /** One level sample of `source` (dBov) at `now` (seconds). */
  level(source, dbov, now) {
    const loud = Number.isFinite(dbov) && dbov >= THRESHOLD_DBOV;
    let s = this.sources.get(source);
    if (!s) {
      if (this.sources.size >= MAX_SOURCES) return; // bounded: a page never has this many
      s = { lastLoud: null, smoothed: SILENCE_DBOV, at: now };
      this.sources.set(source, s);
    }
    const elapsed = Math.max(0, now - s.at);
    s.at = now;
    s.smoothed = Math.max(loud ? dbov : SILENCE_DBOV, s.smoothed - RELEASE_DB_PER_S * elapsed);
    if (loud) s.lastLoud = now;
    this.tick(now);
  }

  /** Whether `source` speaks at `now`. */
  speaking(source, now) {
    const s = this.sources.get(source);
    return Boolean(s && s.lastLoud !== null && now - s.lastLoud < STOP_AFTER_S);
  }

  /** A member left: forget it. */
  remove(source) {
    this.sources.delete(source);
    if (this.activeSource === source) this.activeSource = null;
    if (this.challenger?.source === source) this.challenger = null;
  }

  /** The active speaker at `now` (also moves time on: call it as often as levels come). */
  active(now) {
    this.tick(now);
    return this.activeSource;
  }

  tick(now) {
    const speakers = [...this.sources.entries()].filter(([source]) => this.speaking(source, now));
    if (speakers.length === 0) {
      this.challenger = null;
      return; // nobody speaks: the last active speaker stays
    }
    const [loudest, state] = speakers.reduce((a, b) => (b[1].smoothed > a[1].smoothed ? b : a));
    if (this.activeSource === null || !this.speaking(this.activeSource, now)) {
      this.activeSource = loudest;
      this.challenger = null;
      return;
    }
    if (loudest === this.activeSource) {
      this.challenger = null;
      return;
    }
    const current = this.sources.get(this.activeSource);
    if (state.smoothed < current.smoothed + SWITCH_MARGIN_DB) {
      this.challenger = null;
      return;
    }
    if (this.challenger?.source !== loudest) this.challenger = { source: loudest, since: now };
    if (now - this.challenger.since >= HOLD_S) {
      this.activeSource = loudest;
      this.challenger = null;
    }
  }
}

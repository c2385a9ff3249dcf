// This page's own media per scope (a call id or a group room id): one "user media" stream
// (microphone, + camera when asked) and at most one screen-share stream. Pairs of one group call
// share the room's streams.

export class LocalMedia {
  constructor(mediaDevices = navigator.mediaDevices) {
    this.devices = mediaDevices;
    this.scopes = new Map(); // scope -> {user: MediaStream|null, screen: MediaStream|null}
  }

  entry(scope) {
    if (!this.scopes.has(scope)) {
      this.scopes.set(scope, { user: null, screen: null, pending: null, enabled: { audio: true, video: true }, held: false });
    }
    return this.scopes.get(scope);
  }

  /** The scope's user-media stream with a microphone, and a camera if `video`. */
  async userMedia(scope, video) {
    const e = this.entry(scope);
    // One getUserMedia at a time per scope: mesh pairs ask at once.
    while (e.pending) await e.pending;
    const work = (async () => {
      if (!e.user) {
        e.user = await this.devices.getUserMedia({ audio: true, video: Boolean(video) });
      } else if (video && e.user.getVideoTracks().length === 0) {
        const cam = await this.devices.getUserMedia({ video: true });
        for (const t of cam.getVideoTracks()) e.user.addTrack(t);
      }
    })();
    e.pending = work;
    try {
      await work;
    } finally {
      e.pending = null;
    }
    this.apply(e); // a mute that came before the devices did
    return e.user;
  }

  /** The scope's user-media stream if it has one (no prompt). */
  current(scope) {
    return this.scopes.get(scope)?.user ?? null;
  }

  /** Ask for a screen (call this from the click: browsers want a user gesture). */
  async startScreen(scope, onEnded) {
    const stream = await this.devices.getDisplayMedia({ video: true, audio: false });
    const e = this.entry(scope);
    e.screen?.getTracks().forEach((t) => t.stop());
    e.screen = stream;
    this.apply(e);
    for (const t of stream.getVideoTracks()) t.addEventListener("ended", () => onEnded?.(), { once: true });
    return stream;
  }

  screen(scope) {
    return this.scopes.get(scope)?.screen ?? null;
  }

  stopScreen(scope) {
    const e = this.scopes.get(scope);
    e?.screen?.getTracks().forEach((t) => t.stop());
    if (e) e.screen = null;
  }

  /** Enable or disable the scope's microphone / camera tracks (a disabled track sends silence/black). */
  setEnabled(scope, { audio, video }) {
    const e = this.entry(scope);
    if (typeof audio === "boolean") e.enabled.audio = audio;
    if (typeof video === "boolean") e.enabled.video = video;
    this.apply(e);
  }

  /** A call on hold sends silence and black (its party must not hear what we say meanwhile). */
  setHeld(scope, held) {
    const e = this.entry(scope);
    e.held = Boolean(held);
    this.apply(e);
  }

  apply(e) {
    e.user?.getAudioTracks().forEach((t) => (t.enabled = e.enabled.audio && !e.held));
    e.user?.getVideoTracks().forEach((t) => (t.enabled = e.enabled.video && !e.held));
    e.screen?.getVideoTracks().forEach((t) => (t.enabled = !e.held));
  }

  /** Stop every track of the scope and forget it. */
  release(scope) {
    const e = this.scopes.get(scope);
    if (!e) return;
    for (const s of [e.user, e.screen]) s?.getTracks().forEach((t) => t.stop());
    this.scopes.delete(scope);
  }
}

// The ring: a tone made with WebAudio (no sound file) and, when the tab is in the background, a
// browser notification. Browsers start audio and ask for notifications only after a user
// gesture: `unlock()` runs on the page's first click.

export class Ringer {
  constructor() {
    this.ctx = null;
    this.timer = null;
    this.notification = null;
  }

  /** On a user gesture: allow sound, and ask once for notifications. */
  unlock() {
    try {
      this.ctx ??= new AudioContext();
      if (this.ctx.state === "suspended") this.ctx.resume();
    } catch {
      this.ctx = null;
    }
    if (typeof Notification !== "undefined" && Notification.permission === "default") {
      Notification.requestPermission().catch(() => {});
    }
  }

  /** Two short 440/480 Hz bursts every three seconds until stop(). */
  start(title, body) {
    if (this.timer !== null) return;
    const burst = () => {
      if (!this.ctx || this.ctx.state !== "running") return;
      const t = this.ctx.currentTime;
      for (const [freq, at] of [[440, 0], [480, 0], [440, 0.5], [480, 0.5]]) {
        const osc = this.ctx.createOscillator();
        const gain = this.ctx.createGain();
        osc.frequency.value = freq;
        gain.gain.setValueAtTime(0.08, t + at);
        gain.gain.setValueAtTime(0, t + at + 0.4);
        osc.connect(gain).connect(this.ctx.destination);
        osc.start(t + at);
        osc.stop(t + at + 0.4);
      }
    };
    burst();
    this.timer = setInterval(burst, 3000);
    if (document.hidden && typeof Notification !== "undefined" && Notification.permission === "granted") {
      this.notification = new Notification(title, { body, tag: "sealcall-ring", requireInteraction: true });
      this.notification.onclick = () => window.focus();
    }
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    this.notification?.close();
    this.notification = null;
  }

  get ringing() {
    return this.timer !== null;
  }
}

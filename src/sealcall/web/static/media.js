// The page's media: the peer connections of calls and mesh pairs, the one SFrame worker they
// share, local media, keys (handed to the worker, never kept) and the stats panel's figures.

import { LocalMedia } from "./local_media.js";
import { Peer } from "./peer.js";
import { SfuPeer } from "./sfu.js";
import { base64ToBuffer, summarizeStats } from "./format.js";

const WORKER_STATS_TIMEOUT_MS = 1000;

export class MediaEngine {
  /**
   * @param {object} o
   * @param {(type: string, fields: object) => void} o.report sends a media result to Python
   * @param {(pairId: string) => string|null} o.roomOfPair the group room of a mesh pair
   * @param {(ev: object) => void} o.onTrack a remote track arrived
   * @param {(ev: object) => void} o.onLocal this page's mute state of a call/room changed
   */
  constructor({ report, roomOfPair, onTrack, onLocal }) {
    Object.assign(this, { report, roomOfPair, onTrack, onLocal });
    this.e2ee = typeof RTCRtpScriptTransform !== "undefined";
    this.worker = null; // made on first use (a page that never calls needs none)
    this.local = new LocalMedia();
    this.peers = new Map(); // call id or pair id -> Peer
    this.statsWaiters = new Map(); // request number -> resolve
    this.nextRequest = 1;
    this.prevSamples = new Map(); // id -> {at, reports}
    this.groupScopes = new Set(); // room ids whose group call has keys or pairs here
    this.sfus = new Map(); // room id -> SfuPeer: the room's call through an SFU
  }

  fromWorker(msg) {
    if (msg?.op === "stats" && this.statsWaiters.has(msg.request)) {
      this.statsWaiters.get(msg.request)(msg);
      this.statsWaiters.delete(msg.request);
    }
  }

  /** The page's one SFrame worker, shared by every transform; null without RTCRtpScriptTransform. */
  ensureWorker() {
    if (!this.worker && this.e2ee) {
      this.worker = new Worker("static/e2ee_worker.js", { type: "module" });
      this.worker.addEventListener("message", (ev) => this.fromWorker(ev.data));
      this.worker.addEventListener("error", () => console.error("sealcall: the SFrame worker failed"));
    }
    return this.worker;
  }

  toWorker(msg, transfer = []) {
    this.ensureWorker()?.postMessage(msg, transfer);
  }

  /** Hand a key to the worker, moving its bytes (the page keeps no copy). */
  postKey(op, fields, keyB64) {
    const key = base64ToBuffer(keyB64);
    this.toWorker({ op, ...fields, key }, [key]);
  }

  peerFor(msg) {
    const idField = typeof msg.call_id === "string" ? "call_id" : "pair_id";
    const id = msg[idField];
    if (typeof id !== "string") return null;
    let peer = this.peers.get(id);
    if (peer && peer.idField !== idField) peer = null; // never another kind's connection
    if (!peer) {
      if (msg.op === "close") return null;
      const scope = idField === "call_id" ? id : (msg.room_id ?? this.roomOfPair(id));
      if (typeof scope !== "string") {
        console.warn("sealcall: a media command for a pair of no known room; dropped");
        return null;
      }
      if (this.peers.has(id) || this.scopeTaken(idField, scope)) {
        // The far side picks call ids: one that names a group's scope (or a pair) would put
        // its keys, allow_plain or forget on the group's media. Refused; the call ends.
        console.warn("sealcall: a media command whose id another call uses; refused");
        this.report("media_failed", { [idField]: id, detail: "InvalidAccessError" });
        return null;
      }
      if (idField === "pair_id") this.groupScopes.add(scope);
      peer = new Peer({
        idField,
        id,
        scope,
        sender: typeof msg.sender === "string" ? msg.sender : undefined,
        local: this.local,
        worker: this.ensureWorker(),
        report: this.report,
        onTrack: this.onTrack,
      });
      this.peers.set(id, peer);
    }
    return peer;
  }

  /** Handle one `media` event of the page socket. */
  async handle(msg) {
    const peer = this.peerFor(msg);
    if (!peer) return;
    if (!this.e2ee && (msg.op === "create_offer" || msg.op === "create_answer")) {
      // Without RTCRtpScriptTransform the frames would leave unencrypted: no media at all.
      this.peers.delete(peer.id);
      peer.result("media_failed", { detail: "NotSupportedError" });
      return;
    }
    const id = peer.id;
    try {
      switch (msg.op) {
        case "keys":
          this.postKey("set_send_key", { scope: peer.scope, suite: msg.suite, kid: 0 }, msg.send);
          this.postKey("add_receive_key", { scope: peer.scope, sender: "", suite: msg.suite, kid: 0 }, msg.receive);
          return;
        case "allow_unencrypted":
          this.toWorker({ op: "allow_plain", scope: peer.scope });
          return;
        case "set_mute":
          this.local.setEnabled(peer.scope, { audio: !msg.audio_muted, video: !msg.video_muted });
          this.onLocal({ id, scope: peer.scope, audio_muted: Boolean(msg.audio_muted), video_muted: Boolean(msg.video_muted) });
          return;
        case "close":
          await peer.perform(msg); // after the commands before it
          this.peers.delete(id);
          this.prevSamples.delete(id);
          if (peer.idField === "call_id") this.endScope(peer.scope, "call_id");
          return;
        default:
          if (msg.op === "create_offer" || msg.op === "create_answer") {
            this.onLocal({ id, scope: peer.scope, on_hold: Boolean(msg.on_hold), screen: Boolean(msg.screenshare ?? peer.senderFor("screenshare")) });
          }
          await peer.perform(msg);
      }
    } catch (err) {
      // e.g. a key that is not base64: refused here, reported by name only.
      peer.result("media_failed", { detail: String(err?.name ?? "Error").slice(0, 200) });
    }
  }

  /** True if `scope` is in use by a connection (or group keys) of the other kind. */
  scopeTaken(idField, scope) {
    if (idField === "call_id" && this.groupScopes.has(scope)) return true;
    const other = idField === "call_id" ? "pair_id" : "call_id";
    return [...this.peers.values()].some((p) => p.idField === other && p.scope === scope);
  }

  /**
   * Handle `sfu_join` / `sfu_leave` / `sfu_subscribe` / `sfu_floor` / `sfu_mute` of the page socket: connect
   * the room's group call to its SFU (Python did the admission and hands over the URL and the
   * join token), leave it, or pass Python's subscription or floor request on.
   */
  sfu(msg) {
    const scope = msg.room_id;
    if (typeof scope !== "string") return;
    if (msg.type === "sfu_leave") {
      this.sfus.get(scope)?.close();
      this.sfus.delete(scope);
      return;
    }
    if (msg.type === "sfu_subscribe") {
      this.sfus.get(scope)?.subscribe(msg.publisher, msg.quality);
      return;
    }
    if (msg.type === "sfu_floor") {
      this.sfus.get(scope)?.requestFloor(Boolean(msg.request));
      return;
    }
    if (msg.type === "sfu_mute") {
      this.sfus.get(scope)?.setMuted(msg.audio === true, msg.video === true);
      return;
    }
    if (msg.type !== "sfu_join") return;
    const refuse = (detail) => this.report("sfu_state", { room_id: scope, state: "failed", detail });
    if (typeof msg.url !== "string" || typeof msg.token !== "string") return refuse("TypeError");
    if (!this.e2ee) return refuse("NotSupportedError"); // no frame leaves unencrypted
    if (this.sfus.get(scope)?.closed) this.sfus.delete(scope); // it failed; Python joins anew
    if (this.scopeTaken("pair_id", scope) || this.sfus.has(scope)) return refuse("InvalidAccessError");
    this.groupScopes.add(scope);
    const peer = new SfuPeer({
      scope,
      url: msg.url,
      token: msg.token,
      video: Boolean(msg.video),
      speaking: msg.speaking !== false,
      local: this.local,
      worker: this.ensureWorker(),
      report: this.report,
      onTrack: this.onTrack,
    });
    this.sfus.set(scope, peer);
    peer.join();
  }

  /** The member shown large in a room's SFU call (its full resolution is asked for). */
  setFocus(scope, sender) {
    this.sfus.get(scope)?.setFocus(sender);
  }

  groupKeys(msg) {
    const scope = msg.room_id;
    if (typeof scope !== "string") return;
    if (this.scopeTaken("pair_id", scope)) {
      console.warn("sealcall: group keys for a scope a 1:1 call uses; refused");
      return;
    }
    this.groupScopes.add(scope);
    try {
      if (msg.send) this.postKey("set_send_key", { scope, suite: msg.suite, kid: msg.send.kid }, msg.send.key);
      for (const r of Array.isArray(msg.receive) ? msg.receive : []) {
        this.postKey("add_receive_key", { scope, sender: r.sender, suite: msg.suite, kid: r.kid }, r.key);
      }
    } catch (err) {
      console.warn("sealcall: group keys refused:", err.name);
    }
  }

  /** The audio level (0..1) of each member of a group scope now: Map(sender -> level). */
  async audioLevels(scope) {
    const levels = new Map();
    const pairs = [...this.peers.values()].filter((p) => p.scope === scope && p.idField === "pair_id" && p.sender);
    await Promise.all(
      pairs.map(async (p) => {
        const level = await p.audioLevel().catch(() => null);
        if (level !== null) levels.set(p.sender, Math.max(levels.get(p.sender) ?? 0, level));
      }),
    );
    const sfu = this.sfus.get(scope);
    const sfuLevels = sfu ? await sfu.audioLevels().catch(() => new Map()) : new Map();
    for (const [sender, level] of sfuLevels) levels.set(sender, Math.max(levels.get(sender) ?? 0, level));
    return levels;
  }

  /**
   * Stop a scope's media and have the worker forget its keys (a call ended: `kind` "call_id";
   * a group was left: "pair_id"); nothing if the scope is the other kind's.
   */
  endScope(scope, kind) {
    if (this.scopeTaken(kind, scope)) return;
    for (const [id, peer] of this.peers) {
      if (peer.scope === scope) {
        peer.close();
        this.peers.delete(id);
      }
    }
    if (kind === "pair_id") {
      this.sfus.get(scope)?.close();
      this.sfus.delete(scope);
    }
    this.local.release(scope);
    this.groupScopes.delete(scope);
    this.worker?.postMessage({ op: "forget", scope });
  }

  /** End every connection and scope (the page socket was lost: Python ended them). */
  endAll() {
    for (const peer of [...this.peers.values()]) this.endScope(peer.scope, peer.idField);
    for (const scope of [...this.groupScopes]) this.endScope(scope, "pair_id");
  }

  /** The worker's counters for a scope, or null if it does not answer in time. */
  workerStats(scope) {
    if (!this.ensureWorker()) return Promise.resolve(null);
    const request = this.nextRequest++;
    return new Promise((resolve) => {
      this.statsWaiters.set(request, resolve);
      setTimeout(() => {
        if (this.statsWaiters.delete(request)) resolve(null);
      }, WORKER_STATS_TIMEOUT_MS);
      this.toWorker({ op: "stats", scope, request });
    });
  }

  /**
   * The stats panel's figures for a call id, a pair id or a group room id (its pairs summed),
   * over the interval since the previous call for the same id; null if nothing is known.
   */
  async stats(id) {
    const peers = this.peers.has(id) ? [this.peers.get(id)] : [...this.peers.values()].filter((p) => p.scope === id);
    if (this.sfus.has(id)) peers.push(this.sfus.get(id));
    const scope = peers[0]?.scope ?? id;
    const reports = (await Promise.all(peers.map((p) => p.rawStats()))).flat();
    const worker = await this.workerStats(scope);
    const now = performance.now();
    const prev = this.prevSamples.get(id);
    this.prevSamples.set(id, { at: now, reports });
    const summary = summarizeStats(prev?.reports ?? null, reports, prev ? now - prev.at : 0, worker);
    const sfu = (await this.sfus.get(scope)?.info()) ?? null;
    return { ...summary, worker, ...(sfu ? { sfu } : {}) };
  }
}

// One RTCPeerConnection, driven by the `media` commands of the page socket
// (docs/web-protocol.md): a 1:1 call (`call_id`) or one pair of a mesh group call (`pair_id`).
// Every sender and receiver gets an RTCRtpScriptTransform on the page's one SFrame worker.

const CANDIDATE_BATCH = 64; // the contract's limit per local_candidates message
const FLUSH_MS = 30; // candidates found within this window go out in one message
const REPORTED_STATES = ["connected", "disconnected", "failed", "closed"];

/**
 * Put VP8 first for a video transceiver: Chromium parses H.264 slice headers on receipt, which
 * SFrame encrypts, and loses most H.264 frames before the worker (docs/web-protocol.md).
 */
function preferVp8(transceiver) {
  try {
    const codecs = RTCRtpReceiver.getCapabilities?.("video")?.codecs;
    if (!codecs || !transceiver.setCodecPreferences) return;
    const isVp8 = (c) => c.mimeType.toLowerCase() === "video/vp8";
    transceiver.setCodecPreferences([...codecs.filter(isVp8), ...codecs.filter((c) => !isVp8(c))]);
  } catch (err) {
    console.warn("sealcall: codec preferences not set:", err.name);
  }
}

export class Peer {
  /**
   * @param {object} o
   * @param {"call_id"|"pair_id"} o.idField which id the results carry
   * @param {string} o.id the call id or pair id
   * @param {string} o.scope the worker scope: the call id, or the group's room id
   * @param {string} [o.sender] a pair's member device ("<user_id> <device_id>"): whose keys
   *   open what its receivers get
   * @param {import("./local_media.js").LocalMedia} o.local the page's local media
   * @param {Worker|null} o.worker the SFrame worker (null: the browser has no transform)
   * @param {(type: string, fields: object) => void} o.report sends a media result to Python
   * @param {(ev: object) => void} o.onTrack a remote track arrived ({id, stream, track})
   */
  constructor({ idField, id, scope, sender, local, worker, report, onTrack }) {
    Object.assign(this, { idField, id, scope, sender, local, worker, report, onTrack });
    this.pc = null;
    this.roles = new Map(); // RTCRtpSender -> "microphone" | "camera" | "screenshare"
    this.transformed = new WeakSet();
    this.candidates = [];
    this.described = false;
    this.flushTimer = null;
    this.remoteCandidates = [];
    this.lastMid = "0";
    this.chain = Promise.resolve(); // one command at a time, in the order they came
  }

  result(type, fields) {
    this.report(type, { [this.idField]: this.id, ...fields });
  }

  /**
   * Tell Python the connection's state: Chromium's `disconnected` (ICE lost its path, it may
   * come back) and `failed` make the call `reconnecting`; `connected` again ends that.
   */
  connectionChanged(state) {
    if (REPORTED_STATES.includes(state)) this.result("connection_state", { state });
  }

  ensurePc(iceServers, relayOnly) {
    if (this.pc) return this.pc;
    const pc = new RTCPeerConnection({
      iceServers: Array.isArray(iceServers) ? iceServers : [],
      iceTransportPolicy: relayOnly ? "relay" : "all",
    });
    pc.onicecandidate = (ev) => {
      if (ev.candidate) {
        this.lastMid = ev.candidate.sdpMid ?? this.lastMid;
        this.candidates.push({
          candidate: ev.candidate.candidate,
          sdpMid: ev.candidate.sdpMid ?? this.lastMid,
          sdpMLineIndex: ev.candidate.sdpMLineIndex ?? 0,
        });
      } else {
        this.candidates.push({ candidate: "", sdpMid: this.lastMid, sdpMLineIndex: 0 });
      }
      this.scheduleFlush();
    };
    pc.ontrack = (ev) => {
      this.attachTransforms();
      const stream = ev.streams[0] ?? new MediaStream([ev.track]);
      this.onTrack({ [this.idField]: this.id, id: this.id, stream, track: ev.track });
    };
    pc.onconnectionstatechange = () => this.connectionChanged(pc.connectionState);
    this.pc = pc;
    return pc;
  }

  scheduleFlush() {
    if (this.flushTimer !== null || !this.described) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      this.flush();
    }, FLUSH_MS);
  }

  flush() {
    while (this.candidates.length > 0) {
      this.result("local_candidates", { candidates: this.candidates.splice(0, CANDIDATE_BATCH) });
    }
  }

  /**
   * Give every transceiver's sender and receiver its transform, once each. The sender's goes on
   * first, as soon as the transceiver exists: Chromium 156 let the frames of an answerer's
   * sender bypass a transform set after its receiver's (tests/test_web_page.py saw them).
   */
  attachTransforms() {
    if (!this.worker || !this.pc) return;
    for (const t of this.pc.getTransceivers()) {
      const kind = t.receiver.track.kind;
      if (!this.transformed.has(t.sender)) {
        if (kind === "video") preferVp8(t);
        t.sender.transform = new RTCRtpScriptTransform(this.worker, { scope: this.scope, side: "send", kind });
        this.transformed.add(t.sender);
      }
      if (!this.transformed.has(t.receiver)) {
        const options = { scope: this.scope, side: "recv", kind };
        if (this.idField === "pair_id") options.sender = this.sender ?? "";
        t.receiver.transform = new RTCRtpScriptTransform(this.worker, options);
        this.transformed.add(t.receiver);
      }
    }
  }

  senderFor(role) {
    for (const [sender, r] of this.roles) if (r === role) return sender;
    return null;
  }

  /** Send `track` as `role`: on a free transceiver of its kind the far side offered, else a new one. */
  async addLocal(track, stream, role, answering) {
    const pc = this.pc;
    let sender = null;
    for (const t of pc.getTransceivers()) {
      if (
        t.receiver.track.kind === track.kind &&
        !t.sender.track &&
        !this.roles.has(t.sender) &&
        !t.stopped &&
        t.currentDirection !== "stopped"
      ) {
        await t.sender.replaceTrack(track);
        t.sender.setStreams?.(stream);
        t.direction = "sendrecv";
        sender = t.sender;
        break;
      }
    }
    if (!sender) {
      if (answering) return; // an answer cannot add media: the next offer will
      sender = pc.addTransceiver(track, {
        direction: role === "screenshare" ? "sendonly" : "sendrecv",
        streams: [stream],
      }).sender;
    }
    this.roles.set(sender, role);
    this.attachTransforms();
  }

  async prepareTracks(video, screenshare, answering) {
    const user = await this.local.userMedia(this.scope, video);
    const mic = user.getAudioTracks()[0];
    if (mic && !this.senderFor("microphone")) await this.addLocal(mic, user, "microphone", answering);
    const cam = user.getVideoTracks()[0];
    if (video && cam && !this.senderFor("camera")) await this.addLocal(cam, user, "camera", answering);
    const screenSender = this.senderFor("screenshare");
    if (screenshare && !screenSender) {
      const screen = this.local.screen(this.scope);
      const track = screen?.getVideoTracks()[0];
      if (track) await this.addLocal(track, screen, "screenshare", answering);
    } else if (!screenshare && screenSender) {
      await screenSender.replaceTrack(null);
      const t = this.pc.getTransceivers().find((x) => x.sender === screenSender);
      if (t) t.direction = "inactive";
      this.roles.delete(screenSender);
    }
    this.attachTransforms();
  }

  applyHold(onHold) {
    // The held party gets silence and black, encrypted as ever (as matrix-js-sdk mutes on hold).
    this.local.setHeld(this.scope, onHold);
    const screen = this.senderFor("screenshare");
    for (const t of this.pc.getTransceivers()) {
      if (t.sender === screen || t.stopped || t.currentDirection === "stopped") continue;
      // W3C hold, as the Python side: stop receiving, keep sending (the far side may play hold media).
      if (t.direction !== "inactive") t.direction = onHold ? "sendonly" : "sendrecv";
    }
  }

  streams() {
    const map = {};
    const user = this.local.current(this.scope);
    if (user) map[user.id] = "m.usermedia";
    const screenSender = this.senderFor("screenshare");
    const screen = this.local.screen(this.scope);
    if (screenSender && screen) map[screen.id] = "m.screenshare";
    return map;
  }

  async describe() {
    this.described = true;
    this.result("local_description", { sdp: this.pc.localDescription.sdp, streams: this.streams() });
    this.scheduleFlush();
  }

  async applyRemoteCandidates() {
    const queued = this.remoteCandidates.splice(0);
    for (const c of queued) {
      if (typeof c?.candidate !== "string" || c.candidate === "") continue;
      try {
        await this.pc.addIceCandidate(c);
      } catch (err) {
        // One bad candidate does not end the call: the others may connect.
        console.warn("sealcall: a remote candidate was refused:", err.name);
      }
    }
  }

  /** Carry out one media command (after the previous ones); a failure is reported as `media_failed` with the error's name. */
  perform(msg) {
    this.chain = this.chain.then(() => this.performNow(msg));
    return this.chain;
  }

  async performNow(msg) {
    try {
      await this.performOp(msg);
    } catch (err) {
      const detail = String(err?.name ?? "Error").slice(0, 200);
      console.warn(`sealcall: media ${msg.op} failed: ${detail}`);
      if (msg.op !== "close") this.result("media_failed", { detail });
    }
  }

  async performOp(msg) {
    switch (msg.op) {
      case "create_offer": {
        const pc = this.ensurePc(msg.ice_servers, msg.relay_only);
        this.described = false;
        await this.prepareTracks(Boolean(msg.video), Boolean(msg.screenshare), false);
        this.applyHold(Boolean(msg.on_hold));
        await pc.setLocalDescription(await pc.createOffer({ iceRestart: Boolean(msg.ice_restart) }));
        await this.describe();
        break;
      }
      case "create_answer": {
        const pc = this.ensurePc(msg.ice_servers, msg.relay_only);
        this.described = false;
        await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
        this.attachTransforms();
        await this.prepareTracks(Boolean(msg.video), Boolean(this.senderFor("screenshare")), true);
        this.applyHold(Boolean(msg.on_hold));
        await pc.setLocalDescription(await pc.createAnswer());
        await this.describe();
        await this.applyRemoteCandidates();
        break;
      }
      case "apply_answer":
        if (!this.pc) throw new DOMException("no connection", "InvalidStateError");
        await this.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
        this.attachTransforms();
        await this.applyRemoteCandidates();
        break;
      case "rollback":
        if (this.pc && this.pc.signalingState !== "stable") {
          await this.pc.setLocalDescription({ type: "rollback" });
        }
        break;
      case "add_candidates":
        this.remoteCandidates.push(...(Array.isArray(msg.candidates) ? msg.candidates : []));
        if (this.pc?.remoteDescription) await this.applyRemoteCandidates();
        break;
      case "close":
        this.close();
        break;
      default:
        throw new DOMException(`unknown op`, "NotSupportedError");
    }
  }

  close() {
    clearTimeout(this.flushTimer);
    this.flushTimer = null;
    this.candidates = [];
    if (this.pc) {
      this.pc.onicecandidate = this.pc.ontrack = this.pc.onconnectionstatechange = null;
      this.pc.close();
    }
    this.pc = null;
  }

  /**
   * The level (0..1, linear) of the far side's audio now, or null: the RTP audio level of its
   * synchronization sources, else (a sender that sends none) the decoded level of getStats().
   */
  async audioLevel() {
    if (!this.pc) return null;
    let level = null;
    const louder = (value) => {
      if (typeof value === "number" && Number.isFinite(value)) level = Math.max(level ?? 0, value);
    };
    for (const receiver of this.pc.getReceivers()) {
      if (receiver.track?.kind !== "audio" || receiver.track.readyState !== "live") continue;
      const sources = receiver.getSynchronizationSources?.() ?? [];
      for (const source of sources) louder(source.audioLevel);
      if (sources.some((s) => typeof s.audioLevel === "number")) continue;
      for (const stat of (await receiver.getStats()).values()) {
        if (stat.type === "inbound-rtp") louder(stat.audioLevel);
      }
    }
    return level;
  }

  /** Plain objects of the connection's getStats(), or [] without a connection. */
  async rawStats() {
    if (!this.pc) return [];
    const report = await this.pc.getStats();
    return [...report.values()].map((r) => ({ ...r }));
  }
}

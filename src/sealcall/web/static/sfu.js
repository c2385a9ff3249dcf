// The page's connection to an SFU (docs/sfu-protocol.md): the signaling WebSocket `{url}/ws`,
// one RTCPeerConnection with our audio, a thumbnail and a full-resolution encoding of the camera
// (two transceivers of one track: the SFU reads one SSRC per video m-line, no simulcast rids),
// the `control` data channel, and the SFU's forwarded streams, each opened by the worker with
// the key of the member the SFU's `tracks` announcement names. Python did the admission; the
// page gets the SFU's URL and a join token (docs/web-protocol.md, "SFU group calls").

import {
  QUALITIES,
  memberSender,
  muteMessage,
  senderMember,
  parseSfuMessage,
  sfuSocketUrl,
  subscribeChanges,
  trackMap,
  videoEncodings,
  wantedLayers,
  offerExtensions,
} from "./sfu_state.js";

const MAX_QUEUED_CONTROL = 64; // control messages waiting for the channel to open
const GATHER_MS = 3000; // host candidates only (no STUN): gathering takes far less

/** Resolves when the connection's ICE gathering completes (or after GATHER_MS). */
function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, GATHER_MS);
  });
}

/** Put VP8 first (Chromium loses SFrame-protected H.264 frames; docs/web-protocol.md). */
function preferVp8(transceiver) {
  const codecs = RTCRtpReceiver.getCapabilities?.("video")?.codecs;
  if (!codecs || !transceiver.setCodecPreferences) return;
  const isVp8 = (c) => c.mimeType.toLowerCase() === "video/vp8";
  transceiver.setCodecPreferences([...codecs.filter(isVp8), ...codecs.filter((c) => !isVp8(c))]);
}

export class SfuPeer {
  /**
   * @param {object} o
   * @param {string} o.scope the worker scope: the group's room id
   * @param {string} o.url the SFU's URL (http(s)://host:port)
   * @param {string} o.token the join token Python got from the SFU's admission
   * @param {boolean} o.video publish the camera
   * @param {boolean} o.speaking send RFC 6464 audio levels (the SFU then says who speaks)
   * @param {import("./local_media.js").LocalMedia} o.local the page's local media
   * @param {Worker|null} o.worker the SFrame worker
   * @param {(type: string, fields: object) => void} o.report sends an `sfu_*` result to Python
   * @param {(ev: object) => void} o.onTrack a member's track arrived ({id, stream, track, sender})
   */
  constructor({ scope, url, token, video, speaking, local, worker, report, onTrack }) {
    Object.assign(this, { scope, url, token, video, speaking, local, worker, report, onTrack });
    this.idField = "sfu";
    this.id = `sfu:${scope}`;
    this.pc = null;
    this.ws = null;
    this.control = null;
    this.controlQueue = [];
    this.member = null; // our SFU member id
    this.tracks = new Map(); // mid -> {kind, member, sender}
    this.receiverSenders = new WeakMap(); // RTCRtpReceiver -> the sender its transform opens
    this.sendTransformed = new WeakSet();
    this.memberStreams = new Map(); // sender -> MediaStream of its forwarded tracks
    this.asked = new Map(); // publisher member id -> quality asked
    this.pythonAsked = new Map(); // publisher member id -> quality Python asked (sfu_subscribe)
    this.focus = null; // the member shown large: its full layer is asked for
    this.layers = new Map(); // publisher -> the layer the SFU says we receive
    this.floor = null;
    this.speakers = [];
    this.mutes = new Map(); // member id -> {audio, video}, as the SFU's `muted` said
    this.badMessages = 0;
    this.closed = false;
    this.chain = Promise.resolve(); // SFU messages are handled one at a time, in order
  }

  result(type, fields) {
    this.report(type, { room_id: this.scope, ...fields });
  }

  fail(err) {
    if (this.closed) return;
    const detail = String(err?.name ?? "Error").slice(0, 200);
    console.warn(`sealcall: SFU link failed: ${detail}`);
    this.result("sfu_state", { state: "failed", detail });
    this.close();
  }

  /** Connect: capture, offer, `join` over the WebSocket. Failures are reported, not thrown. */
  async join() {
    try {
      const wsUrl = sfuSocketUrl(this.url);
      if (!wsUrl) throw new DOMException("bad SFU URL", "SyntaxError");
      const user = await this.local.userMedia(this.scope, this.video);
      if (this.closed) return;
      const pc = (this.pc = new RTCPeerConnection({ iceServers: [] }));
      pc.ontrack = (ev) => this.onRemoteTrack(ev);
      pc.onconnectionstatechange = () => {
        if (["connected", "failed", "closed"].includes(pc.connectionState)) {
          this.result("sfu_state", { state: pc.connectionState });
        }
      };
      this.addLocal(user);
      this.control = pc.createDataChannel("control", { ordered: true });
      this.control.onopen = () => this.flushControl();
      this.control.onmessage = (ev) => this.onSfuMessage(ev.data, "control");
      const offer = await pc.createOffer();
      offer.sdp = offerExtensions(offer.sdp, this.speaking);
      await pc.setLocalDescription(offer);
      // The SFU reads no message while the join connects: the offer carries every candidate.
      await gathered(pc);
      if (this.closed) return;
      const ws = (this.ws = new WebSocket(wsUrl));
      ws.onmessage = (ev) => this.onSfuMessage(ev.data, "signaling");
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = () => reject(new DOMException("SFU socket failed", "NetworkError"));
      });
      ws.onerror = null;
      ws.onclose = () => {
        if (!this.closed) this.fail(new DOMException("SFU socket closed", "NetworkError"));
      };
      this.send({ type: "join", token: this.token, offer: pc.localDescription.sdp });
    } catch (err) {
      this.fail(err);
    }
  }

  /** Audio, then the thumbnail, then the full resolution (docs/sfu-protocol.md, section 4). */
  addLocal(user) {
    const pc = this.pc;
    const mic = user.getAudioTracks()[0];
    if (mic) {
      pc.addTransceiver(mic, { direction: "sendonly", streams: [user] });
    }
    const cam = this.video ? user.getVideoTracks()[0] : null;
    if (cam) {
      const enc = videoEncodings(cam.getSettings?.().height);
      for (const encoding of [enc.thumbnail, enc.full]) {
        const t = pc.addTransceiver(cam, { direction: "sendonly", streams: [user], sendEncodings: [encoding] });
        preferVp8(t);
      }
    }
    this.attachTransforms();
  }

  /**
   * Our senders' transforms at once (one scope: one counter for all of them); a receiver's once
   * the `tracks` announcement names its member. Before that a receiver runs under no member
   * (`sender: ""`, which holds no key in a group scope): its frames are dropped, never decoded
   * unopened.
   */
  attachTransforms() {
    if (!this.worker || !this.pc) return;
    for (const t of this.pc.getTransceivers()) {
      const kind = t.receiver.track.kind;
      if (!this.sendTransformed.has(t.sender)) {
        t.sender.transform = new RTCRtpScriptTransform(this.worker, { scope: this.scope, side: "send", kind });
        this.sendTransformed.add(t.sender);
      }
      const sender = (t.mid !== null && this.tracks.get(t.mid)?.sender) || "";
      if (this.receiverSenders.get(t.receiver) !== sender) {
        t.receiver.transform = new RTCRtpScriptTransform(this.worker, { scope: this.scope, side: "recv", kind, sender });
        this.receiverSenders.set(t.receiver, sender);
      }
    }
  }

  onRemoteTrack(ev) {
    this.attachTransforms();
    this.showTracks();
  }

  /** Each announced member's tracks in one MediaStream of its own (the SFU's msid is one for all). */
  showTracks() {
    if (!this.pc) return;
    for (const t of this.pc.getTransceivers()) {
      const info = t.mid !== null ? this.tracks.get(t.mid) : null;
      const track = t.receiver.track;
      if (!info || t.currentDirection === "stopped" || track.readyState !== "live") continue;
      let stream = this.memberStreams.get(info.sender);
      if (!stream) this.memberStreams.set(info.sender, (stream = new MediaStream()));
      if (stream.getTrackById(track.id)) continue;
      for (const old of stream.getTracks()) if (old.kind === track.kind) stream.removeTrack(old);
      stream.addTrack(track);
      this.onTrack({ id: `sfu:${info.sender}`, stream, track, sender: info.sender });
    }
  }

  send(msg) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  sendControl(msg) {
    if (this.control?.readyState === "open") this.control.send(JSON.stringify(msg));
    else if (this.controlQueue.length < MAX_QUEUED_CONTROL) this.controlQueue.push(msg);
  }

  controlReady() {
    return this.control?.readyState === "open";
  }

  flushControl() {
    for (const msg of this.controlQueue.splice(0)) this.sendControl(msg);
    this.resubscribe();
  }

  /** Show `sender` large (null: nobody): its full layer is asked for, the others' thumbnails. */
  setFocus(sender) {
    this.focus = sender;
    this.resubscribe();
  }

  /** Python's choice for a publisher (`sfu_subscribe`): kept over the page's own. */
  subscribe(sender, quality) {
    const member = senderMember(sender);
    if (!member || !QUALITIES.includes(quality)) return;
    this.pythonAsked.set(member, quality);
    this.resubscribe();
  }

  /** Tell the others whether our microphone / camera are muted (Python's `sfu_mute`). */
  setMuted(audio, video) {
    this.sendControl(muteMessage(audio, video));
  }

  /** Ask the floor ("I want the focus") or give it up. */
  requestFloor(on) {
    this.sendControl({ type: "floor", action: on ? "request" : "release" });
  }

  resubscribe() {
    if (!this.controlReady()) return;
    const publishers = new Set([...this.tracks.values()].map((t) => t.member));
    const focus = [...publishers].find((p) => memberSender(p) === this.focus) ?? null;
    const wanted = wantedLayers(publishers, focus, this.pythonAsked);
    for (const msg of subscribeChanges(this.asked, wanted)) {
      this.sendControl(msg);
      this.asked.set(msg.publisher, msg.quality);
    }
    for (const p of [...this.asked.keys()]) if (!publishers.has(p)) this.asked.delete(p);
  }

  onSfuMessage(text, via) {
    const msg = parseSfuMessage(text);
    if (!msg) {
      this.badMessages += 1;
      return;
    }
    this.chain = this.chain.then(() => this.handle(msg, via)).catch((err) => this.fail(err));
  }

  onControl(msg) {
    if (msg.type === "speaking") {
      this.speakers = msg.members;
      this.result("sfu_speaking", { members: msg.members });
    } else if (msg.type === "layer") {
      this.layers.set(msg.publisher, msg.quality);
      this.result("sfu_layer", { publisher: msg.publisher, quality: msg.quality });
    } else if (msg.type === "muted") {
      if (msg.member === this.member) return;
      // Bounded: a room holds at most 32 members; a stale entry goes when its member leaves.
      if (this.mutes.size < 256 || this.mutes.has(msg.member)) this.mutes.set(msg.member, { audio: msg.audio, video: msg.video });
      this.result("sfu_muted", { member: msg.member, audio: msg.audio, video: msg.video });
    } else {
      this.floor = msg.holder;
      this.result("sfu_floor", { holder: msg.holder });
    }
  }

  async handle(msg, via) {
    if (this.closed) return;
    const pc = this.pc;
    switch (msg.type) {
      case "joined":
        if (via !== "signaling" || this.member) break;
        this.member = msg.id;
        await pc.setRemoteDescription({ type: "answer", sdp: msg.answer });
        this.attachTransforms();
        this.result("sfu_joined", { member: msg.id });
        this.resubscribe();
        break;
      case "offer":
        if (via !== "signaling" || !this.member) break;
        await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
        this.attachTransforms();
        await pc.setLocalDescription(await pc.createAnswer());
        this.send({ type: "answer", sdp: pc.localDescription.sdp });
        break;
      case "tracks": {
        if (via !== "signaling") break;
        const { map, bad } = trackMap(msg.tracks);
        this.badMessages += bad;
        for (const [mid, info] of map) if (info.member === this.member) map.delete(mid);
        this.tracks = map;
        this.attachTransforms();
        this.showTracks();
        this.resubscribe();
        const tracks = [...map].map(([mid, t]) => ({ mid, ssrc: t.ssrc, kind: t.kind, member: t.member }));
        this.result("sfu_tracks", { tracks });
        break;
      }
      case "left":
        this.mutes.delete(msg.member);
        this.result("sfu_left", { member: msg.member });
        break;
      case "speaking":
      case "layer":
      case "floor":
      case "muted":
        if (via !== "control") {
          this.badMessages += 1; // control messages come on the data channel only
          break;
        }
        this.onControl(msg);
        break;
      case "error":
        this.badMessages += 1;
        if (msg.reason === "admission_ended") this.fail(new DOMException("admission ended", "NotAllowedError"));
        else console.warn("sealcall: the SFU refused a message");
        break;
      default:
        break;
    }
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    if (this.ws) {
      this.ws.onclose = this.ws.onmessage = null;
      if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: "leave" }));
      this.ws.close();
    }
    if (this.pc) {
      this.pc.ontrack = this.pc.onconnectionstatechange = null;
      this.pc.close();
    }
    this.memberStreams.clear();
  }

  /** Each member's audio level now (0..1): Map(sender -> level), from the forwarded audio. */
  async audioLevels() {
    const levels = new Map();
    if (!this.pc) return levels;
    for (const t of this.pc.getTransceivers()) {
      const info = t.mid !== null ? this.tracks.get(t.mid) : null;
      if (!info || info.kind !== "audio" || t.receiver.track.readyState !== "live") continue;
      let level = null;
      for (const s of t.receiver.getSynchronizationSources?.() ?? []) {
        if (typeof s.audioLevel === "number") level = Math.max(level ?? 0, s.audioLevel);
      }
      if (level === null) {
        for (const stat of (await t.receiver.getStats()).values()) {
          if (stat.type === "inbound-rtp" && typeof stat.audioLevel === "number") level = Math.max(level ?? 0, stat.audioLevel);
        }
      }
      if (level !== null) levels.set(info.sender, Math.max(levels.get(info.sender) ?? 0, level));
    }
    return levels;
  }

  /** Plain objects of the connection's getStats(). */
  async rawStats() {
    if (!this.pc) return [];
    return [...(await this.pc.getStats()).values()].map((r) => ({ ...r }));
  }

  /** Each member's received video size now: {sender: {width, height}} (from getStats). */
  async videoSizes() {
    const sizes = {};
    if (!this.pc) return sizes;
    for (const t of this.pc.getTransceivers()) {
      const info = t.mid !== null ? this.tracks.get(t.mid) : null;
      if (!info || info.kind !== "video") continue;
      for (const stat of (await t.receiver.getStats()).values()) {
        if (stat.type === "inbound-rtp" && stat.frameHeight) sizes[info.sender] = { width: stat.frameWidth, height: stat.frameHeight };
      }
    }
    return sizes;
  }

  /** What tests and the stats panel read: our id, the track map, layers, floor, speakers. */
  async info() {
    return {
      video: await this.videoSizes(),
      member: this.member,
      tracks: Object.fromEntries([...this.tracks].map(([mid, t]) => [mid, t.sender])),
      asked: Object.fromEntries(this.asked),
      layers: Object.fromEntries(this.layers),
      floor: this.floor,
      muted: Object.fromEntries(this.mutes),
      speaking: this.speakers,
      control: this.control?.readyState ?? null,
      bad_messages: this.badMessages,
    };
  }
}

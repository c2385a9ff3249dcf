// Two RTCPeerConnections in one page, A sending the fake camera and microphone to B, with
// RTCRtpScriptTransform on A's senders (scope "a", send) and B's receivers (scope "b", recv),
// all in one e2ee_worker.js. tests/test_web_worker.py drives it through `window.T`.
const worker = new Worker(new URL("../static/e2ee_worker.js", import.meta.url), { type: "module" });
const waiting = new Map(); // stats request -> resolve
let requests = 0;
const keyFrameNeeded = [];
worker.onmessage = ({ data }) => {
  if (data.op === "stats") {
    waiting.get(data.request)?.(data);
    waiting.delete(data.request);
  } else if (data.op === "key_frame_needed") {
    keyFrameNeeded.push({ scope: data.scope, sender: data.sender });
  }
};

let pcA = null;
let pcB = null;
let stream = null;

function transform(options) {
  return new RTCRtpScriptTransform(worker, options);
}

/** Prefer `mimeType` ("video/VP8", "video/H264") on a video transceiver. */
function prefer(transceiver, mimeType) {
  const codecs = RTCRtpReceiver.getCapabilities("video").codecs;
  const wanted = codecs.filter((c) => c.mimeType === mimeType);
  if (wanted.length === 0) throw new Error(`${mimeType} is not available`);
  transceiver.setCodecPreferences([...wanted, ...codecs.filter((c) => c.mimeType !== mimeType)]);
}

async function start({ video = "video/VP8" } = {}) {
  pcA = new RTCPeerConnection();
  pcB = new RTCPeerConnection();
  pcA.onicecandidate = ({ candidate }) => candidate && pcB.addIceCandidate(candidate);
  pcB.onicecandidate = ({ candidate }) => candidate && pcA.addIceCandidate(candidate);
  pcB.ontrack = ({ receiver, track, streams }) => {
    // Set before any frame arrives: no frame reaches the decoder without the worker.
    receiver.transform = transform({ scope: "b", side: "recv", kind: track.kind });
    if (track.kind === "video") document.getElementById("remote").srcObject = streams[0];
  };
  stream = await navigator.mediaDevices.getUserMedia({
    audio: true,
    video: { width: 320, height: 240, frameRate: 15 },
  });
  for (const track of stream.getTracks()) {
    const sender = pcA.addTrack(track, stream);
    sender.transform = transform({ scope: "a", side: "send", kind: track.kind });
    if (track.kind === "video") {
      prefer(pcA.getTransceivers().find((t) => t.sender === sender), video);
    }
  }
  await pcA.setLocalDescription(await pcA.createOffer());
  await pcB.setRemoteDescription(pcA.localDescription);
  await pcB.setLocalDescription(await pcB.createAnswer());
  await pcA.setRemoteDescription(pcB.localDescription);
}

/**
 * Hand keys to the worker as the page does: B opens with `receive`, A sends with `send`. The
 * worker applies them in this order, so no frame of A reaches B before B's key.
 */
function setKeys({ send, receive, suite = 4, kid = 0 }) {
  if (receive) {
    const key = Uint8Array.from(receive).buffer;
    worker.postMessage({ op: "add_receive_key", scope: "b", sender: "", suite, kid, key }, [key]);
  }
  if (send) {
    const key = Uint8Array.from(send).buffer;
    worker.postMessage({ op: "set_send_key", scope: "a", suite, kid, key }, [key]);
  }
}

function post(message) {
  worker.postMessage(message);
}

/** The worker's counters of `scope`. */
function stats(scope) {
  const request = ++requests;
  return new Promise((resolve) => {
    waiting.set(request, resolve);
    worker.postMessage({ op: "stats", scope, request });
  });
}

/** What B's video element and inbound RTP streams show. */
async function media() {
  const el = document.getElementById("remote");
  const out = { videoWidth: el.videoWidth, framesDecoded: 0, videoCodec: null, audioPackets: 0 };
  const report = await pcB.getStats();
  const codecs = new Map();
  report.forEach((s) => s.type === "codec" && codecs.set(s.id, s.mimeType));
  report.forEach((s) => {
    if (s.type !== "inbound-rtp") return;
    if (s.kind === "video") {
      out.framesDecoded = s.framesDecoded ?? 0;
      out.videoCodec = codecs.get(s.codecId) ?? null;
    } else {
      out.audioPackets = s.packetsReceived ?? 0;
    }
  });
  return out;
}

function close() {
  stream?.getTracks().forEach((t) => t.stop());
  pcA?.close();
  pcB?.close();
  worker.terminate();
}

window.T = { start, setKeys, post, stats, media, close, keyFrameNeeded, ready: true };

// The js-sdk side of the interop test: one logged-in matrix-js-sdk client with Rust crypto,
// driven from Python through window.H. Everything it sees is recorded for the test to read.
import {
  sdk, CallEvent, CallEventHandlerEvent, CallErrorCode, createNewMatrixCall, initCryptoWasm,
} from "./jssdk.js";

const calls = new Map(); // call_id -> {call, record}
let client = null;

function track(call) {
  const rec = {
    callId: call.callId, direction: call.direction, type: call.type, states: [call.state],
    placedAt: null, connectedAt: null, error: null,
  };
  calls.set(call.callId, { call, rec });
  call.on(CallEvent.State, (state) => {
    rec.states.push(state);
    if (state === "connected" && rec.connectedAt === null) rec.connectedAt = performance.now();
  });
  call.on(CallEvent.Error, (err) => { rec.error = String(err && (err.code || err.message || err)); });
  return rec;
}

function get(callId) {
  const entry = calls.get(callId);
  if (!entry) throw new Error(`no such call ${callId}`);
  return entry.call;
}

window.H = {
  ready: false,
  async start(baseUrl, userId, password) {
    await initCryptoWasm(new URL("./matrix_sdk_crypto_wasm_bg.wasm", location.href));
    const login = await sdk.createClient({ baseUrl }).loginRequest({
      type: "m.login.password", identifier: { type: "m.id.user", user: userId }, password,
    });
    client = sdk.createClient({
      baseUrl, userId: login.user_id, accessToken: login.access_token, deviceId: login.device_id,
      fallbackICEServerAllowed: false, iceCandidatePoolSize: 0,
    });
    await client.initRustCrypto({ useIndexedDB: false });
    client.on(sdk.RoomMemberEvent.Membership, (event, member) => {
      if (member.userId === client.getUserId() && member.membership === "invite") {
        client.joinRoom(member.roomId);
      }
    });
    client.on(CallEventHandlerEvent.Incoming, (call) => track(call));
    const prepared = new Promise((resolve) => {
      client.on(sdk.ClientEvent.Sync, (state) => { if (state === "PREPARED") resolve(); });
    });
    await client.startClient({ initialSyncLimit: 10 });
    await prepared;
    this.ready = true;
    return { userId: login.user_id, deviceId: login.device_id };
  },
  joined(roomId) {
    const room = client.getRoom(roomId);
    return !!room && room.getMyMembership() === "join" && client.isRoomEncrypted(roomId);
  },
  async place(roomId, invitee, video) {
    const call = createNewMatrixCall(client, roomId, { invitee });
    const rec = track(call);
    rec.placedAt = performance.now();
    if (video) await call.placeVideoCall(); else await call.placeVoiceCall();
    return call.callId;
  },
  record(callId) {
    const entry = calls.get(callId);
    if (!entry) return null;
    const { call, rec } = entry;
    return { ...rec, state: call.state, hangupParty: call.hangupParty ?? null,
      hangupReason: call.hangupReason ?? null };
  },
  incoming() { return [...calls.values()].filter((c) => c.rec.direction === "inbound").map((c) => c.rec); },
  state(callId) { return get(callId).state; },
  // Ends every call that is not over yet (between tests); returns how many are still live.
  endAll() {
    let live = 0;
    for (const { call } of calls.values()) {
      if (call.state === "ended") continue;
      live += 1;
      if (call.state === "ringing") call.reject(); else call.hangup(CallErrorCode.UserHangup, false);
    }
    return live;
  },
  async answer(callId) { await get(callId).answer(); },
  reject(callId) { get(callId).reject(); },
  hangup(callId) { get(callId).hangup(CallErrorCode.UserHangup, false); },
  async setMicMuted(callId, muted) { await get(callId).setMicrophoneMuted(muted); },
  async setCameraMuted(callId, muted) { await get(callId).setLocalVideoMuted(muted); },
  remoteMute(callId) {
    const feed = get(callId).getRemoteFeeds().find((f) => f.purpose === "m.usermedia");
    return feed ? { audio: feed.isAudioMuted(), video: feed.isVideoMuted() } : null;
  },
  // Inbound RTP per kind from the browser's own WebRTC stats.
  async inbound(callId) {
    const pc = get(callId).peerConn;
    const out = { audio: { bytes: 0, packets: 0 }, video: { bytes: 0, frames: 0 } };
    if (!pc) return out;
    (await pc.getStats()).forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      if (s.kind === "audio") {
        out.audio.bytes += s.bytesReceived || 0; out.audio.packets += s.packetsReceived || 0;
      } else if (s.kind === "video") {
        out.video.bytes += s.bytesReceived || 0; out.video.frames += s.framesDecoded || 0;
      }
    });
    return out;
  },
};

"""Debian's Chromium as an SFU participant (plain WebRTC, no page of ours): it accepts the SFU's
answer with the ``control`` data channel, its renegotiation offers, the offer that rejects a
leaver's m-lines (port 0) and the one that recycles them for a newcomer, and receives the
newcomer's media on the recycled m-lines; aiortc participants receive Chromium's media."""

from __future__ import annotations

import aiohttp
import pytest

from browser import Browser, missing, until
from sealcall.sfu.server import OpenAdmission, SfuServer
from test_sfu_server import ROOM, Client

from media_helpers import until as eventually

JOIN = """async ({url, token}) => {
  const T = window.T = {control: [], errors: [], tracks: [], answers: 0, offers: []};
  const pc = T.pc = new RTCPeerConnection({bundlePolicy: "max-bundle"});
  const stream = await navigator.mediaDevices.getUserMedia(
    {audio: true, video: {width: 320, height: 180}});
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  const channel = T.channel = pc.createDataChannel("control");
  channel.onmessage = (e) => T.control.push(JSON.parse(e.data));
  await pc.setLocalDescription();
  await new Promise((done) => {
    if (pc.iceGatheringState === "complete") done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
  });
  const ws = T.ws = new WebSocket(url);
  await new Promise((done) => { ws.onopen = done; });
  let queue = Promise.resolve();
  ws.onmessage = (e) => { queue = queue.then(async () => {
    const m = JSON.parse(e.data);
    try {
      if (m.type === "joined") {
        T.id = m.id;
        await pc.setRemoteDescription({type: "answer", sdp: m.answer});
      } else if (m.type === "offer") {
        T.offers.push(m.sdp);
        await pc.setRemoteDescription({type: "offer", sdp: m.sdp});
        await pc.setLocalDescription();
        ws.send(JSON.stringify({type: "answer", sdp: pc.localDescription.sdp}));
        T.answers += 1;
      } else if (m.type === "tracks") {
        T.tracks = m.tracks;
      }
    } catch (err) { T.errors.push(String(err)); }
  }); };
  ws.send(JSON.stringify({type: "join", token, offer: pc.localDescription.sdp}));
}"""

RECEIVED = """async (member) => {
  const mids = window.T.tracks.filter((t) => t.member === member).map((t) => t.mid);
  let bytes = 0;
  for (const t of window.T.pc.getTransceivers()) {
    if (!mids.includes(t.mid)) continue;
    for (const s of (await t.receiver.getStats()).values()) {
      if (s.type === "inbound-rtp") bytes += s.bytesReceived;
    }
  }
  return mids.length === 2 && bytes > 20000;
}"""


async def test_chromium_accepts_removed_and_recycled_m_lines() -> None:
    if (reason := missing()) is not None:
        pytest.fail(reason)
    server = SfuServer(OpenAdmission, host="127.0.0.1", port=0)
    await server.start()
    clients: list[Client] = []
    async with aiohttp.ClientSession() as session, Browser.launched() as browser:
        try:
            page = await browser.page_on(f"http://127.0.0.1:{server.port}/metrics")
            token = {"room_id": ROOM, "user_id": "@web:example.org", "device_id": "WEB"}
            await page.evaluate(JOIN, {"url": f"ws://127.0.0.1:{server.port}/ws", "token": token})
            for name in ("alice", "carol"):
                clients.append(Client(name))
                await clients[-1].connect(session, f"http://127.0.0.1:{server.port}/ws")
            a, c = clients
            await until(page, RECEIVED, c.member, what="carol's media in Chromium")
            await until(page, "() => window.T.control.some((m) => m.type === 'layer')")
            await c.close()
            await until(page, f"() => window.T.tracks.every((t) => t.member !== {c.member!r})")
            d = Client("dave")
            clients.append(d)
            await d.connect(session, f"http://127.0.0.1:{server.port}/ws")
            await until(page, RECEIVED, d.member, what="dave's media on recycled m-lines")
            state = await page.evaluate(
                "() => ({errors: window.T.errors, offers: window.T.offers,"
                " signaling: window.T.pc.signalingState})"
            )
            assert state["errors"] == []
            assert state["signaling"] == "stable"
            removal, recycle = state["offers"][-2:]
            assert removal.count("m=audio 0 ") + removal.count("m=video 0 ") == 2
            assert recycle.count(" 0 UDP/TLS/RTP/SAVPF") == 0  # both m-lines reused
            assert len(recycle.split("\r\nm=")) == len(removal.split("\r\nm="))
            # Chromium's packets reach aiortc with aiortc's extension ids (Chromium's own ids
            # would put abs-send-time where aiortc reads the audio level: its receive loop dies).
            web = await page.evaluate("() => window.T.id")
            before = a.got(web, "audio"), d.got(web, "video")
            await eventually(lambda: a.got(web, "audio") > before[0] + 20, timeout=20)
            await eventually(lambda: d.got(web, "video") > before[1] + 5, timeout=20)
        finally:
            for client in clients:
                await client.close()
            await server.close()

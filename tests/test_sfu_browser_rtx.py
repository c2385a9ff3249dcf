"""Chromium as an SFU subscriber takes the SFU's RTX (RFC 4588): a forwarded video stream losing
packets on its way to Chromium is NACKed by Chromium and repaired by RTX packets on the stream's
own RTX SSRC (FID-paired in the SFU's offer), counted as retransmissions by Chromium."""

from __future__ import annotations

import aiohttp
import pytest

from browser import Browser, missing, until
from sealcall.sfu.server import OpenAdmission, SfuServer
from test_sfu_browser import JOIN
from test_sfu_server import ROOM, Client

from media_helpers import until as eventually

VIDEO_STATS = """async (mid) => {
  for (const t of window.T.pc.getTransceivers()) {
    if (t.mid !== mid) continue;
    for (const s of (await t.receiver.getStats()).values()) {
      if (s.type === "inbound-rtp") return {
        nacks: s.nackCount, retransmitted: s.retransmittedPacketsReceived,
        frames: s.framesDecoded};
    }
  }
  return null;
}"""


RETRANSMITTED = f"async (mid) => ((await ({VIDEO_STATS})(mid)) || {{}}).retransmitted >= 3"
DECODED = f"async ([mid, n]) => ((await ({VIDEO_STATS})(mid)) || {{}}).frames > n"


async def test_chromium_recovers_lost_forwarded_video_from_rtx() -> None:
    if (reason := missing()) is not None:
        pytest.fail(reason)
    server = SfuServer(OpenAdmission, host="127.0.0.1", port=0)
    await server.start()
    async with aiohttp.ClientSession() as session, Browser.launched() as browser:
        alice = Client("alice")
        try:
            page = await browser.page_on(f"http://127.0.0.1:{server.port}/metrics")
            token = {"room_id": ROOM, "user_id": "@web:example.org", "device_id": "WEB"}
            await page.evaluate(JOIN, {"url": f"ws://127.0.0.1:{server.port}/ws", "token": token})
            await alice.connect(session, f"http://127.0.0.1:{server.port}/ws")
            await until(page, "() => window.T.tracks.length === 2", what="alice's tracks")
            web = await page.evaluate("() => window.T.id")
            member = server.rooms[ROOM].members[web]
            video = next(s for s, (_, kind) in member.publishers.items() if kind == "video")
            section = member.sections[video]
            assert section.rtx_payload_type is not None  # Chromium's answer kept RTX
            rtx_ssrc = section.local_rtx_ssrc
            # Every 10th packet of Alice's video to Chromium is lost on the way.
            send, sent, counts = member.transport.send_rtp, set(), {"rtx": 0, "plain": 0}

            def lossy(data: bytes) -> None:
                seq, ssrc = int.from_bytes(data[2:4]), int.from_bytes(data[8:12])
                if ssrc == rtx_ssrc:
                    counts["rtx"] += 1
                elif ssrc == video:
                    if seq in sent:
                        counts["plain"] += 1
                    else:
                        sent.add(seq)
                        if len(sent) % 10 == 0:
                            return
                send(data)

            member.transport.send_rtp = lossy  # type: ignore[method-assign]
            await eventually(lambda: counts["rtx"] >= 3, timeout=30)
            assert counts["plain"] == 0

            first = await page.evaluate(VIDEO_STATS, section.mid)
            assert first is not None
            assert first["nacks"] >= 1
            # Chromium took the RTX packets in as retransmissions of that stream; video goes on.
            await until(
                page, RETRANSMITTED, section.mid, what="retransmissions in Chromium's stats"
            )
            await until(
                page, DECODED, [section.mid, first["frames"] + 30], what="frames after loss"
            )
        finally:
            await alice.close()
            await server.close()

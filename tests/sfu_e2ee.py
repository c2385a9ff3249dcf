"""The real SFU as its own process, and call members that send it SFrame-encrypted media.

``SfuProcess`` runs ``sealcall sfu`` (its real AdmissionService, logged in as an account in the
room) with its log at debug level in a file, and can read the process's memory. ``SfuMember`` is
a call member over a real Synapse: its membership names an SFU, it is admitted with its OpenID
token (``POST /admit``), joins over the WebSocket, and publishes audio and one video encoding,
each frame encoded once and SFrame-protected with its own known key (``SharedEncoder`` into a
``GroupPeerConnection``); it decrypts each forwarded stream with the key of the member the SFU's
``tracks`` names. Everything the member's connection sends and receives is recorded at the RTP
level (before SRTP on the way out, after it on the way in), as are its signaling messages: that is
exactly what the SFU received from it and sent to it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCRtpTransceiver, RTCSessionDescription

import test_group_membership_session as gm
from sealcall.e2ee import GroupKey
from sealcall.e2ee.codecs import Codec
from sealcall.group.focus import select_sfu
from sealcall.group.membership import MembershipTable, MemberStateEvent
from sealcall.homeserver import Homeserver, free_port
from sealcall.media import MediaKeys, SenderTap, SharedEncoder
from sealcall.media.group_connection import GroupPeerConnection
from sealcall.media.sources import PatternVideoTrack, SyntheticAudioTrack
from sealcall.sframe import CipherSuite
from sealcall.sframe.keys import derive_key_salt
from sealcall.sfu.rtp import RtpView, is_rtcp
from sealcall.sfu.vp8 import Vp8Descriptor
from sealcall.transport.matrix import CALL_MEMBER
from test_sfu_admission_session import join_call, request

TIMEOUT = 30
LOOPBACK = ("127.0.0.1",)
# The sfu command as `python -m sealcall` runs it, with every logger at debug level first.
DEBUG_MAIN = (
    "import logging, sys; logging.basicConfig(level=logging.DEBUG, "
    "format='%(levelname)s %(name)s: %(message)s'); from sealcall.cli import main; "
    "sys.exit(main(sys.argv[1:]))"
)


# -- the SFU process -----------------------------------------------------------------------------


@dataclass
class SfuProcess:
    """``sealcall sfu`` in its own process, logged in as ``account`` (a gm.Device's user)."""

    proc: asyncio.subprocess.Process
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    async def start(cls, synapse: Homeserver, account: gm.Device, tmp: Path) -> SfuProcess:
        """Start the SFU as ``account`` (same password as gm.Devices gives), on a free port."""
        username = account.user_id[1:].partition(":")[0]
        port = free_port()
        log = tmp / f"sfu-{port}.log"
        with log.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                DEBUG_MAIN,
                "sfu",
                "--port",
                str(port),
                "--homeserver",
                synapse.url,
                "--user",
                account.user_id,
                "--password",
                "secret-" + username,
                "--store",
                str(tmp / f"sfu-store-{port}"),
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert f"serving on http://127.0.0.1:{port}" in line.decode(), log.read_text()[-2000:]
        return cls(proc, port, log)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    def memory(self) -> Iterator[bytes]:
        """Every readable region of the process's memory (/proc/PID/maps, /proc/PID/mem)."""
        pid = self.proc.pid
        with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
            for line in maps:
                span, perms = line.split()[:2]
                if not perms.startswith("r") or line.rstrip().endswith("[vvar]"):
                    continue
                start, end = (int(x, 16) for x in span.split("-"))
                try:
                    mem.seek(start)
                    yield mem.read(end - start)
                except (OSError, ValueError, OverflowError):
                    continue  # a region that cannot be read (device memory, a guard page)

    def pause(self) -> None:
        """Stop the process (SIGSTOP), so that what it holds cannot move under a search."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def search_memory(self, needles: list[bytes]) -> tuple[set[bytes], int]:
        """Which ``needles`` occur in the process's memory, and how many bytes were read."""
        found: set[bytes] = set()
        scanned = 0
        for region in self.memory():
            scanned += len(region)
            found.update(n for n in needles if n not in found and n in region)
        return found, scanned


def secret_forms(key: GroupKey, suite: int = CipherSuite.AES_128_GCM_SHA256_128) -> list[bytes]:
    """Every form in which ``key`` could leak: the base key (raw, hex, base64 in both alphabets),
    and the SFrame key and salt derived from it for its KID (raw and hex)."""
    sframe_key, salt = derive_key_salt(suite, key.key, key.index)
    forms = [key.key, sframe_key, salt]
    forms += [f.hex().encode() for f in forms]
    b64 = base64.b64encode(key.key)
    forms += [b64.rstrip(b"="), base64.urlsafe_b64encode(key.key).rstrip(b"=")]
    return forms


# -- rooms and focus -----------------------------------------------------------------------------


async def room_sfu(d: gm.Device, room_id: str) -> str:
    """The SFU of the room's call as a member picks it: the oldest SFU membership's focus."""
    events = await d.transport.room_state(room_id, CALL_MEMBER)
    now = int(time.time() * 1000)
    table = MembershipTable()
    table.set_joined_users(sorted({e.sender for e in events}), now)
    for e in events:
        table.handle(MemberStateEvent(e.sender, e.state_key, e.content, e.origin_server_ts), now)
    focus = select_sfu(table.members())
    assert focus is not None, "no SFU membership in the room"
    return focus.url


# -- a member ------------------------------------------------------------------------------------


class SfuRefusedError(Exception):
    """POST /admit answered 403 (``reason``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(eq=False)
class SfuMember:
    """A call member in SFU mode, publishing SFrame-encrypted audio and video with ``key``."""

    device: gm.Device
    directory: dict[str, GroupKey]
    """Every member's key by member id (``user|device``): the group's key distribution."""
    key: GroupKey = field(default_factory=lambda: GroupKey(secrets.randbelow(8), os.urandom(32)))
    pc: GroupPeerConnection = field(init=False)
    encoders: list[SharedEncoder] = field(default_factory=list)
    ws: aiohttp.ClientWebSocketResponse | None = None
    member: str = ""
    tracks: dict[int, tuple[str, str]] = field(default_factory=dict)  # SSRC -> (member, kind)
    messages: list[dict[str, Any]] = field(default_factory=list)  # from the SFU
    signaling: list[str] = field(default_factory=list)  # everything sent or received as text
    rtp_in: list[bytes] = field(default_factory=list)  # RTP from the SFU, after SRTP
    rtcp_in: list[bytes] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)  # RTP and RTCP to the SFU, before SRTP
    join_token: str = ""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _tapped: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.member = f"{self.device.user_id}|{self.device.transport.device_id}"
        self.directory[self.member] = self.key
        self.pc = GroupPeerConnection(MediaKeys(), host_addresses=LOOPBACK)
        send_keys = MediaKeys(self.key.index, self.key.key)
        for track in (SyntheticAudioTrack(), PatternVideoTrack(160, 120, 15)):
            encoder = SharedEncoder(track, SenderTap(send_keys, track.kind))
            self.encoders.append(encoder)
            self.pc.add_shared(encoder)

    async def admit(self, session: aiohttp.ClientSession, url: str, room_id: str) -> str:
        """A join token from the SFU at ``url``; SfuRefusedError with its reason otherwise."""
        body = (await request(self.device, room_id)).to_json()
        self.signaling.append(json.dumps(body))
        response = await session.post(f"{url}/admit", json=body)
        text = await response.text()
        self.signaling.append(text)
        if response.status != 200:
            raise SfuRefusedError(json.loads(text)["error"])
        token: str = json.loads(text)["join_token"]
        return token

    async def join(self, session: aiohttp.ClientSession, url: str, room_id: str) -> None:
        """Admission, then the WebSocket join; returns once the SFU answered."""
        self.join_token = await self.admit(session, url, room_id)
        await self.connect(session, url, self.join_token)

    async def connect(self, session: aiohttp.ClientSession, url: str, token: object) -> None:
        """Send the WebSocket join with ``token``; returns once joined, raises on an error."""
        self.ws = await session.ws_connect(f"{url}/ws")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self._send({"type": "join", "token": token, "offer": self.pc.localDescription.sdp})
        first = await self._receive()
        if first.get("type") == "error":
            raise SfuRefusedError(str(first.get("reason")))
        assert first["type"] == "joined", first
        # docs/sfu-protocol.md names these id/answer; the first server cut says member/sdp.
        assert first.get("member", first.get("id")) == self.member
        answer = first.get("sdp", first.get("answer"))
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        self._tap()
        self.tasks.append(asyncio.ensure_future(self._read()))

    async def _send(self, data: dict[str, Any]) -> None:
        assert self.ws is not None
        text = json.dumps(data)
        self.signaling.append(text)
        await self.ws.send_str(text)

    async def _receive(self) -> dict[str, Any]:
        assert self.ws is not None
        msg = await self.ws.receive(timeout=TIMEOUT)
        if msg.type != aiohttp.WSMsgType.TEXT:
            return {"type": "closed"}
        self.signaling.append(msg.data)
        data: dict[str, Any] = json.loads(msg.data)
        self.messages.append(data)
        return data

    async def _read(self) -> None:
        while True:
            data = await self._receive()
            if data["type"] == "closed":
                return
            if data["type"] == "offer":
                await self.pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "offer"))
                await self.pc.setLocalDescription(await self.pc.createAnswer())
                self._tap()
                await self._send({"type": "answer", "sdp": self.pc.localDescription.sdp})
            elif data["type"] == "tracks":
                for track in data["tracks"]:
                    self.tracks[track["ssrc"]] = (track["member"], track["kind"])
                    key = self.directory[track["member"]]
                    opener = MediaKeys()
                    opener.add_receive_key(key.index, key.key)
                    self.pc.receiver_tap(self.transceiver(track["mid"]).receiver).keys = opener

    def transceiver(self, mid: str) -> RTCRtpTransceiver:
        return next(t for t in self.pc.getTransceivers() if t.mid == mid)

    def _tap(self) -> None:
        """Record RTP/RTCP at the connection's DTLS transports: what the SFU gets and sends."""
        for t in self.pc.getTransceivers():
            dtls = t.receiver.transport
            if dtls is None or id(dtls) in self._tapped:
                continue
            self._tapped.add(id(dtls))
            rtp, rtcp, send = dtls._handle_rtp_data, dtls._handle_rtcp_data, dtls._send_rtp

            async def on_rtp(data: bytes, arrival_time_ms: int, _next: Any = rtp) -> None:
                self.rtp_in.append(bytes(data))
                await _next(data, arrival_time_ms)

            async def on_rtcp(data: bytes, _next: Any = rtcp) -> None:
                self.rtcp_in.append(bytes(data))
                await _next(data)

            async def on_send(data: bytes, _next: Any = send) -> None:
                self.sent.append(bytes(data))
                await _next(data)

            dtls._handle_rtp_data = on_rtp
            dtls._handle_rtcp_data = on_rtcp
            dtls._send_rtp = on_send

    # -- what arrived --------------------------------------------------------------------------

    def packets_from(self, member: str) -> int:
        """RTP packets received on the forwarded streams that carry ``member``."""
        return sum(1 for p in self.rtp_in if self.tracks.get(_ssrc(p), ("", ""))[0] == member)

    def decrypted(self, member: str, kind: str) -> int:
        """Frames of ``member``'s ``kind`` stream that this member decrypted."""
        return sum(
            self.pc.receiver_tap(self.transceiver(mid).receiver).counters.frames_decrypted
            for mid in self._mids(member, kind)
        )

    def _mids(self, member: str, kind: str) -> set[str]:
        return {
            str(m.get("mid"))
            for msg in self.messages
            if msg["type"] == "tracks"
            for m in msg["tracks"]
            if m["member"] == member and m["kind"] == kind
        }

    def video_frames(self, member: str) -> list[bytes]:
        """The complete VP8 frames (depacketized from the forwarded RTP) that carry ``member``."""
        ssrcs = {s for s, (m, k) in self.tracks.items() if m == member and k == "video"}
        return depacketize_vp8([p for p in self.rtp_in if _ssrc(p) in ssrcs])

    def audio_payloads(self, member: str) -> list[bytes]:
        ssrcs = {s for s, (m, k) in self.tracks.items() if m == member and k == "audio"}
        view = RtpView()
        return [bytes(view.load(p).payload) for p in self.rtp_in if _ssrc(p) in ssrcs]

    def traffic(self) -> bytes:
        """Everything exchanged with the SFU, as one blob to search."""
        parts = [*self.rtp_in, *self.rtcp_in, *self.sent]
        parts += [s.encode() for s in self.signaling]
        return b"\x00".join(parts)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        await self.pc.close()
        for encoder in self.encoders:
            await encoder.stop()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _ssrc(packet: bytes) -> int:
    return int.from_bytes(packet[8:12]) if not is_rtcp(packet) else -1


def depacketize_vp8(packets: list[bytes]) -> list[bytes]:
    """Complete VP8 frames from one or more streams' RTP (RFC 7741), in arrival order per
    stream; retransmitted duplicates count once, incomplete frames are left out."""
    view, vp8 = RtpView(), Vp8Descriptor()
    by_stream: dict[tuple[int, int], dict[int, tuple[bool, bool, bytes]]] = {}
    order: list[tuple[int, int]] = []
    for packet in packets:
        view.load(packet)
        if view.payload_end <= view.payload_offset:
            continue  # padding only
        vp8.load(packet, view.payload_offset, view.payload_end)
        frame = (view.ssrc, view.timestamp)
        if frame not in by_stream:
            by_stream[frame] = {}
            order.append(frame)
        body = packet[view.payload_offset + vp8.header_size : view.payload_end]
        by_stream[frame][view.sequence_number] = (vp8.is_frame_start, view.marker, body)
    frames = []
    for key in order:
        parts = by_stream[key]
        seqs = sorted(parts)
        if seqs[-1] - seqs[0] + 1 != len(seqs):  # a gap (or a wrap: rare in a short test)
            continue
        if not parts[seqs[0]][0] or not parts[seqs[-1]][1]:
            continue
        frames.append(b"".join(parts[s][2] for s in seqs))
    return frames


def decrypt_frames(key: GroupKey, frames: list[bytes]) -> list[bytes]:
    """``frames`` opened with ``key`` (a fresh receiver, so its replay window is its own)."""
    keys = MediaKeys()
    keys.add_receive_key(key.index, key.key)
    return [keys.unprotect(Codec.VP8, f) for f in frames]


def pictures(frames: list[bytes]) -> list[np.ndarray[Any, Any] | None]:
    """What one VP8 decoder makes of ``frames`` in order: each frame's picture (grey levels), or
    None where it failed or gave none."""
    decoder = av.CodecContext.create("vp8", "r")
    out: list[np.ndarray[Any, Any] | None] = []
    for frame in frames:
        try:
            decoded = decoder.decode(av.Packet(frame))
        except av.error.FFmpegError:
            decoded = []
        out.append(decoded[-1].to_ndarray(format="gray").astype(np.float64) if decoded else None)
    return out


def psnr(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    """Peak signal-to-noise ratio of two grey pictures, dB (0 if their sizes differ)."""
    if a.shape != b.shape:
        return 0.0
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


async def sfu_room(
    devices: gm.Devices, sfu: gm.Device, names: list[str], sfu_url: str
) -> tuple[str, list[gm.Device]]:
    """A group room with the SFU's account and ``names``, each in the call through ``sfu_url``."""
    members = [await devices.new(n) for n in names]
    room_id = await gm.group_room(sfu, *members)
    for d in members:
        await join_call(d, room_id, url=sfu_url)
    return room_id, members


__all__ = [
    "SfuMember",
    "SfuProcess",
    "SfuRefusedError",
    "decrypt_frames",
    "depacketize_vp8",
    "pictures",
    "psnr",
    "room_sfu",
    "secret_forms",
    "sfu_room",
]

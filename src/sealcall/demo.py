"""The demo: two accounts place an end-to-end encrypted video call through a real homeserver.

By default an embedded Synapse is started in a temporary folder (removed afterwards, or kept with
``data_dir``). The call runs with synthetic media, each side reading what it receives: a mute, a
camera off/on, a hang-up; the report gives the setup time, the frames each way, the bitrate and
the history as the room records it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aiortc.mediastreams import MediaStreamTrack

from sealcall.calls.room_history import calls_from_timeline
from sealcall.homeserver import Homeserver
from sealcall.media import LOOPBACK, FrameCounter
from sealcall.media.stats import StatsCollector
from sealcall.session import CallSession, VoIP
from sealcall.transport.matrix import MatrixTransport

Progress = Callable[[str], None]


@dataclass
class Direction:
    """Media one way: what was encrypted and sent, what arrived and decrypted."""

    frames_sent: int = 0
    frames_decrypted: int = 0
    frames_dropped: int = 0
    video_bitrate_kbps: float = 0.0


@dataclass
class DemoReport:
    """What the demo measured."""

    homeserver: str
    room_id: str
    encrypted_room: bool
    media_encrypted: bool
    setup_seconds: float
    alice_to_bob: Direction = field(default_factory=Direction)
    bob_to_alice: Direction = field(default_factory=Direction)
    steps: list[str] = field(default_factory=list)
    history: list[str] = field(default_factory=list)


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class RemoteMediaReader:
    """Reads every remote track of a VoIP instance's calls, as a player would.

    Each frame is counted (:class:`~sealcall.media.FrameCounter`) and let go at once: nothing
    is kept. A reader forgets a call when it ends (its counters stop with the call's tracks).
    """

    def __init__(self, voip: VoIP) -> None:
        self.counters: dict[str, list[FrameCounter]] = {}  # call id -> one per remote track
        voip.on("remote_media_added", self._added)
        voip.on("call_ended", lambda session, *_: self.counters.pop(session.call_id, None))

    def _added(self, session: CallSession, track: MediaStreamTrack, purpose: object) -> None:
        self.counters.setdefault(session.call_id, []).append(FrameCounter(track).start())

    def frames(self, call_id: str) -> int:
        """Frames read so far from the live call ``call_id``."""
        return sum(c.frames for c in self.counters.get(call_id, ()))

    async def stop(self) -> None:
        """Stop reading."""
        for counters in self.counters.values():
            for counter in counters:
                await counter.stop()
        self.counters.clear()


async def open_dm(a: MatrixTransport, b: MatrixTransport, timeout: float = 30) -> str:
    """The encrypted DM between two logged-in devices, created and joined if needed."""
    room_id = a.encrypted_dm_with(b.user_id)
    if room_id is None:
        room_id = await a.create_dm(b.user_id)
        await wait_for(
            lambda: room_id in b.invites() or room_id in b.client.rooms, timeout, "the invite"
        )
        if room_id not in b.client.rooms or b.user_id not in b.client.rooms[room_id].users:
            await b.join(room_id)

    def ready() -> bool:
        ra, rb = a.client.rooms.get(room_id), b.client.rooms.get(room_id)
        return bool(
            ra
            and rb
            and ra.encrypted
            and rb.encrypted
            and b.user_id in ra.users
            and a.user_id in rb.users
        )

    await wait_for(ready, timeout, "both sides in the encrypted room")
    for side in (a, b):
        await side.wait_for_member_devices(room_id, timeout)
    return room_id


async def connect_pair(
    homeserver_url: str,
    alice: tuple[str, str],
    bob: tuple[str, str],
    store_root: Path,
) -> tuple[MatrixTransport, MatrixTransport, str]:
    """Log both users in and give them an encrypted DM."""
    a = await MatrixTransport.login(homeserver_url, alice[0], alice[1], store_root / "alice")
    b = await MatrixTransport.login(homeserver_url, bob[0], bob[1], store_root / "bob")
    await asyncio.gather(a.start(), b.start())
    return a, b, await open_dm(a, b)


def _accounts_file(data_dir: Path) -> Path:
    return data_dir / "demo-accounts.json"


async def _demo_accounts(server: Homeserver) -> tuple[tuple[str, str], tuple[str, str]]:
    path = _accounts_file(server.data_dir)
    if path.exists():
        saved = json.loads(path.read_text())
        return (saved["alice"][0], saved["alice"][1]), (saved["bob"][0], saved["bob"][1])
    accounts = {}
    for name in ("alice", "bob"):
        account = await server.register(name, secrets.token_urlsafe(12))
        accounts[name] = (account.user_id, account.password)
    path.write_text(json.dumps(accounts))
    path.chmod(0o600)
    return accounts["alice"], accounts["bob"]


@contextlib.asynccontextmanager
async def homeserver(data_dir: Path | None) -> AsyncIterator[Homeserver]:
    """An embedded Synapse, started; its data in ``data_dir`` (kept) or a temporary folder."""
    root = data_dir or Path(tempfile.mkdtemp(prefix="sealcall-demo-"))
    server = Homeserver(root / "homeserver")
    try:
        await server.start()
        yield server
    finally:
        await server.stop()
        if data_dir is None:
            shutil.rmtree(root, ignore_errors=True)


async def run_demo(
    *,
    homeserver_url: str | None = None,
    accounts: tuple[tuple[str, str], tuple[str, str]] | None = None,
    data_dir: str | Path | None = None,
    seconds: float = 2.0,
    progress: Progress = lambda _: None,
) -> DemoReport:
    """Run the demo call and return its report."""
    data = Path(data_dir).resolve() if data_dir is not None else None
    if homeserver_url is not None:
        if accounts is None:
            raise ValueError("an external homeserver needs the two accounts (user id, password)")
        root = data or Path(tempfile.mkdtemp(prefix="sealcall-demo-"))
        try:
            return await _call(homeserver_url, accounts, root / "clients", seconds, progress)
        finally:
            if data is None:
                shutil.rmtree(root, ignore_errors=True)
    async with homeserver(data) as server:
        progress(f"homeserver ready at {server.url} (Synapse, SQLite, data in {server.data_dir})")
        pair = accounts or await _demo_accounts(server)
        return await _call(server.url, pair, server.data_dir.parent / "clients", seconds, progress)


async def _call(
    url: str,
    accounts: tuple[tuple[str, str], tuple[str, str]],
    store_root: Path,
    seconds: float,
    progress: Progress,
) -> DemoReport:
    a, b, room_id = await connect_pair(url, accounts[0], accounts[1], store_root)
    progress(f"{a.user_id} and {b.user_id} share the encrypted room {room_id}")
    alice = VoIP(a, ice_servers=await a.ice_servers(), host_addresses=LOOPBACK)
    bob = VoIP(b, ice_servers=await b.ice_servers(), host_addresses=LOOPBACK)
    readers = [RemoteMediaReader(alice), RemoteMediaReader(bob)]
    sessions: dict[str, CallSession] = {}

    async def answer(session: CallSession) -> None:
        progress(f"bob: incoming video call from {session.call.peer}: answering")
        sessions["bob"] = session
        await session.answer()

    bob.on("incoming_call", answer)
    try:
        start = time.monotonic()
        call = await alice.place_call(room_id, b.user_id, video=True)
        sessions["alice"] = call
        progress("alice: calling bob (video)")

        def first_frames() -> bool:
            return "bob" in sessions and all(
                s.pc is not None
                and any(s.pc.receiver_tap(r).counters.frames_decrypted for r in s.pc.getReceivers())
                for s in sessions.values()
            )

        await wait_for(first_frames, 30, "the first decrypted frames")
        report = DemoReport(
            homeserver=url,
            room_id=room_id,
            encrypted_room=bool(a.client.rooms[room_id].encrypted),
            media_encrypted=call.keys.encrypted,
            setup_seconds=round(time.monotonic() - start, 3),
        )
        progress(f"connected: first decrypted frames after {report.setup_seconds:.2f} s")
        stats = {name: StatsCollector(s.pc) for name, s in sessions.items() if s.pc is not None}
        for collector in stats.values():
            await collector.collect()
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("alice mutes her microphone", lambda: call.set_microphone_muted(True)),
            ("alice unmutes", lambda: call.set_microphone_muted(False)),
            ("alice turns her camera off", lambda: call.set_camera_muted(True)),
            ("alice turns her camera on", lambda: call.set_camera_muted(False)),
        ]
        for label, step in steps:
            await asyncio.sleep(seconds / (len(steps) + 1))
            await step()
            report.steps.append(label)
            progress(label)
        await asyncio.sleep(seconds / (len(steps) + 1))
        snapshots = {name: await collector.collect() for name, collector in stats.items()}
        await call.hangup()
        report.steps.append("alice hangs up")
        progress("alice hangs up")
        await wait_for(lambda: sessions["bob"].state.value == "ended", 15, "bob to see the hang-up")
        for sender, receiver, direction in (
            ("alice", "bob", report.alice_to_bob),
            ("bob", "alice", report.bob_to_alice),
        ):
            out, inbound = snapshots[sender].outbound, snapshots[receiver].inbound
            direction.frames_sent = sum(s.frames_encrypted for s in out)
            direction.frames_decrypted = sum(s.frames_decrypted for s in inbound)
            direction.frames_dropped = sum(s.frames_dropped for s in inbound)
            video = [s.bitrate_bps for s in inbound if s.kind == "video" and s.bitrate_bps]
            direction.video_bitrate_kbps = round(sum(video) / 1000, 1)
        await asyncio.sleep(0.5)
        report.history = [
            entry.describe() for entry in calls_from_timeline(await a.timeline(room_id))
        ]
        return report
    finally:
        for reader in readers:
            await reader.stop()
        await alice.close()
        await bob.close()
        await a.stop()
        await b.stop()


def report_json(report: DemoReport) -> str:
    """The report as JSON."""
    return json.dumps(asdict(report), indent=2)


def report_text(report: DemoReport) -> str:
    """The report for people."""
    lines = [
        f"Encrypted video call through {report.homeserver}",
        f"  room {report.room_id}: Megolm-encrypted={report.encrypted_room}, "
        f"media SFrame-encrypted={report.media_encrypted}",
        f"  setup (invite to first decrypted frames both ways): {report.setup_seconds:.2f} s",
    ]
    for label, d in (("alice -> bob", report.alice_to_bob), ("bob -> alice", report.bob_to_alice)):
        lines.append(
            f"  {label}: {d.frames_sent} frames sent, {d.frames_decrypted} decrypted, "
            f"{d.frames_dropped} dropped, video {d.video_bitrate_kbps:.0f} kbit/s"
        )
    lines.append("  call history in the room:")
    lines += [f"    {entry}" for entry in report.history] or ["    (none)"]
    return "\n".join(lines)

"""``sealcall setup-bench``: how long a video call takes to set up, and where the time goes.

Two sealcall clients (VoIP over :class:`~sealcall.transport.matrix.MatrixTransport`, synthetic
640x480 video and audio, host candidates on loopback) share an encrypted DM on a homeserver (an
embedded Synapse started for the run unless one is given). The caller places ``calls`` video calls
one after the other; the callee answers each as soon as it rings; each call is hung up once frames
decrypt both ways. Every step is stamped in milliseconds since ``place_call`` through hooks on the
benchmark's own objects (its transports, sessions and peer connections), and the median, 90th
percentile and minimum of each step over all calls are reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from sealcall.demo import _demo_accounts, connect_pair, homeserver, wait_for
from sealcall.media import LOOPBACK, EncryptedPeerConnection
from sealcall.session import CallSession, VoIP
from sealcall.transport import RoomEvent

# Steps in the order they normally happen, with what each means (the human table's labels).
STEPS: dict[str, str] = {
    "offer_created": "caller: offer created (ICE gathered)",
    "invite_sent": "caller: invite sent (homeserver accepted it)",
    "invite_delivered": "callee: invite delivered (rings)",
    "answer_created": "callee: answer created",
    "answer_sent": "callee: answer sent",
    "answer_received": "caller: answer received",
    "caller_ice_connected": "caller: ICE connected",
    "callee_ice_connected": "callee: ICE connected",
    "caller_dtls_connected": "caller: DTLS connected",
    "callee_dtls_connected": "callee: DTLS connected",
    "connected": "caller: call connected",
    "callee_connected": "callee: call connected",
    "first_frame_at_callee": "first decrypted frame at callee",
    "first_frame_at_caller": "first decrypted frame at caller",
    "first_frames_both_ways": "first decrypted frames both ways",
}
# The figure the issue asks to bring down, and the part after the answer arrived.
HEADLINE = "connected"


class _CallStamps:
    """Milliseconds since ``place_call`` at which each step of one call happened (first time)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.stamps: dict[str, float] = {}

    def mark(self, step: str) -> None:
        self.stamps.setdefault(step, round((time.perf_counter() - self.start) * 1000, 2))


class _Probe:
    """Hooks on the benchmark's objects that stamp the steps of the call in progress."""

    def __init__(self, caller: VoIP, callee: VoIP) -> None:
        self.current: _CallStamps | None = None
        self.sessions: dict[str, CallSession] = {}
        self._answering: set[asyncio.Future[None]] = set()
        self._hook_sends(caller.transport, {"m.call.invite": "invite_sent"})
        self._hook_sends(callee.transport, {"m.call.answer": "answer_sent"})
        caller.transport.add_listener(self._caller_heard)
        caller.on("state_changed", lambda s, old, new: self._state("", new.value))
        callee.on("state_changed", lambda s, old, new: self._state("callee_", new.value))
        callee.on("incoming_call", self._incoming)

    def _mark(self, step: str) -> None:
        if self.current is not None:
            self.current.mark(step)

    def _hook_sends(self, transport: Any, steps: dict[str, str]) -> None:
        send = transport.send_room_event

        async def send_and_stamp(room_id: str, event_type: str, content: dict[str, Any]) -> None:
            if event_type == "m.call.answer":
                self._mark("answer_created")
            await send(room_id, event_type, content)
            if event_type in steps:
                self._mark(steps[event_type])

        transport.send_room_event = send_and_stamp  # this transport object only

    def _caller_heard(self, event: RoomEvent) -> None:
        if event.event.get("type") == "m.call.answer":
            self._mark("answer_received")

    def _state(self, prefix: str, state: str) -> None:
        if state == "connected":
            self._mark(f"{prefix}connected")

    def _incoming(self, session: CallSession) -> None:
        self._mark("invite_delivered")
        self.sessions["callee"] = session
        # The callee's connection is made while answering: watch for it.
        ensure_pc = session._ensure_pc

        def ensure_and_watch() -> EncryptedPeerConnection:
            pc = ensure_pc()
            self.watch(pc, "callee")
            return pc

        session._ensure_pc = ensure_and_watch  # type: ignore[method-assign]  # this session only
        task = asyncio.ensure_future(session.answer())
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    def watch(self, pc: EncryptedPeerConnection, side: str) -> None:
        """Stamp ICE, DTLS and the first decrypted frame of ``pc`` (once per connection)."""
        if getattr(pc, "_setup_bench_watched", False):
            return
        pc._setup_bench_watched = True  # type: ignore[attr-defined]

        def ice() -> None:
            self._watch_taps(pc, side)  # the callee's receivers appear with the offer
            if pc.iceConnectionState in ("completed", "connected"):
                self._mark(f"{side}_ice_connected")

        def dtls() -> None:
            if pc.connectionState == "connected":
                self._mark(f"{side}_dtls_connected")

        pc.on("iceconnectionstatechange", ice)
        pc.on("connectionstatechange", dtls)
        self._watch_taps(pc, side)

    def _watch_taps(self, pc: EncryptedPeerConnection, side: str) -> None:
        for receiver in pc.getReceivers():
            tap = pc.receiver_tap(receiver)
            if getattr(tap, "_setup_bench_watched", False):
                continue
            tap._setup_bench_watched = True  # type: ignore[attr-defined]
            unprotect = tap.unprotect

            def unprotect_and_stamp(
                mime_type: str,
                data: bytes,
                unprotect: Callable[..., bytes | None] = unprotect,
                *,
                after_gap: bool = False,
            ) -> bytes | None:
                frame = unprotect(mime_type, data, after_gap=after_gap)
                if frame is not None:
                    self._mark(f"first_frame_at_{side}")
                return frame

            tap.unprotect = unprotect_and_stamp  # type: ignore[method-assign]  # this tap only


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summarize(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Median, 90th percentile and minimum of each step over the runs that reached it."""
    summary: dict[str, dict[str, float]] = {}
    for step in [*STEPS, "answer_to_connected"]:
        values = [run[step] for run in runs if step in run]
        if values:
            summary[step] = {
                "median_ms": round(statistics.median(values), 1),
                "p90_ms": round(_percentile(values, 0.9), 1),
                "min_ms": round(min(values), 1),
                "calls": len(values),
            }
    return summary


async def _one_call(
    caller: VoIP, callee: VoIP, probe: _Probe, room_id: str, peer: str, timeout: float
) -> dict[str, float]:
    stamps = probe.current = _CallStamps()
    probe.sessions.clear()
    session = await caller.place_call(room_id, peer, video=True)
    stamps.mark("offer_created")
    probe.sessions["caller"] = session
    if session.pc is not None:
        probe.watch(session.pc, "caller")
    try:
        await wait_for(
            lambda: (
                "first_frame_at_caller" in stamps.stamps
                and "first_frame_at_callee" in stamps.stamps
                and "connected" in stamps.stamps
            ),
            timeout,
            "a connected call with decrypted frames both ways",
        )
    finally:
        probe.current = None
        for side in list(probe.sessions.values()):
            if side.state.value != "ended":
                with contextlib.suppress(Exception):
                    await side.hangup()
        await wait_for(
            lambda: all(s.state.value == "ended" for s in probe.sessions.values()),
            timeout,
            "both sides to end the call",
        )
    run = dict(stamps.stamps)
    run["first_frames_both_ways"] = max(run["first_frame_at_caller"], run["first_frame_at_callee"])
    if "answer_received" in run:
        run["answer_to_connected"] = round(run["connected"] - run["answer_received"], 2)
    return run


async def _bench(
    url: str, accounts: tuple[tuple[str, str], tuple[str, str]], store: Path, calls: int
) -> dict[str, Any]:
    a, b, room_id = await connect_pair(url, accounts[0], accounts[1], store)
    caller = VoIP(a, ice_servers=await a.ice_servers(), host_addresses=LOOPBACK)
    callee = VoIP(b, ice_servers=await b.ice_servers(), host_addresses=LOOPBACK)
    probe = _Probe(caller, callee)
    runs: list[dict[str, float]] = []
    try:
        for _ in range(calls):
            runs.append(await _one_call(caller, callee, probe, room_id, b.user_id, 30.0))
            await asyncio.sleep(0.2)  # let the hang-ups settle before the next call
    finally:
        await caller.close()
        await callee.close()
        await a.stop()
        await b.stop()
    return {
        "benchmark": "setup",
        "homeserver": url,
        "calls": len(runs),
        "connected_calls": sum(1 for r in runs if "connected" in r),
        "decrypted_both_ways": sum(1 for r in runs if "first_frames_both_ways" in r),
        "headline": HEADLINE,
        "steps": STEPS | {"answer_to_connected": "caller: answer received -> connected"},
        "summary": summarize(runs),
        "runs": runs,
    }


@contextlib.asynccontextmanager
async def _scratch() -> AsyncIterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="sealcall-setup-bench-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def run(
    calls: int = 10,
    *,
    homeserver_url: str | None = None,
    accounts: tuple[tuple[str, str], tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Place ``calls`` video calls and report the setup steps of each and their statistics."""
    if homeserver_url is not None:
        if accounts is None:
            raise ValueError("an external homeserver needs the two accounts (user id, password)")
        async with _scratch() as root:
            return await _bench(homeserver_url, accounts, root / "clients", calls)
    async with _scratch() as root, homeserver(root) as server:
        pair = await _demo_accounts(server)
        return await _bench(server.url, pair, root / "clients", calls)


def report_text(report: dict[str, Any]) -> str:
    """The report as a table for people."""
    lines = [
        f"Video call setup through {report['homeserver']}: {report['calls']} calls, "
        f"{report['connected_calls']} connected, {report['decrypted_both_ways']} decrypted both "
        "ways",
        f"{'ms after place_call':<44} {'median':>8} {'p90':>8} {'min':>8}",
    ]
    for step, label in report["steps"].items():
        row = report["summary"].get(step)
        if row is not None:
            lines.append(
                f"{label:<44} {row['median_ms']:>8.1f} {row['p90_ms']:>8.1f} {row['min_ms']:>8.1f}"
            )
    return "\n".join(lines)

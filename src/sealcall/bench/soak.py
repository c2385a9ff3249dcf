"""``sealcall soak``: a long encrypted video call, its memory sampled as it goes.

Two :class:`~sealcall.session.VoIP` devices in this process call each other through the real call
engine over the in-memory transport (no homeserver: the figures are the media path's and the
engine's, not Synapse's or nio's), with real aiortc over loopback and SFrame on every frame:
640x480 VP8 and Opus each way. Alice reads her remote tracks (a
:class:`~sealcall.demo.RemoteMediaReader`, as ``sealcall call`` does); Bob leaves his unread, as
an application that shows nothing would. Every ``interval`` seconds a sample records the process's
RSS, the Python heap (tracemalloc) and the frames decrypted each way, so a call that stalls
shows. Growth is the least-squares slope of the samples after the warm-up, in MB per minute.
"""

import asyncio
import contextlib
import gc
import os
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass

from sealcall.demo import RemoteMediaReader
from sealcall.media import LOOPBACK, PatternVideoTrack, SyntheticAudioTrack
from sealcall.session import CallSession, LocalMedia, VoIP
from sealcall.transport import InMemoryHub, InMemoryTransport

ROOM = "!soak:local"
MB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    """The process's memory and the call's progress at one moment."""

    seconds: float
    rss_mb: float
    heap_mb: float
    frames_alice_to_bob: int
    frames_bob_to_alice: int
    connections: str  # alice's and bob's peer connection states, "connected/connected"


def rss_bytes() -> int:
    """The resident set size of this process now (the peak where /proc is missing)."""
    with contextlib.suppress(OSError), open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute; None for fewer than 2."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 60


def _decrypted(session: CallSession | None) -> int:
    """Frames (audio and video) decrypted so far by ``session``'s receivers."""
    if session is None or session.pc is None:
        return 0
    pc = session.pc
    return sum(pc.receiver_tap(r).counters.frames_decrypted for r in pc.getReceivers())


def _connection(session: CallSession) -> str:
    return session.pc.connectionState if session.pc is not None else "none"


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the soak call did not get {what} within {timeout:.0f} s")
        await asyncio.sleep(0.05)


async def run(
    minutes: float,
    *,
    interval: float = 5.0,
    warmup: float | None = None,
    width: int = 640,
    height: int = 480,
    alice_reads: bool = True,
    on_sample: Callable[[Sample], None] = lambda _: None,
) -> dict[str, object]:
    """Hold one call for ``minutes`` and return the samples and the growth after ``warmup``.

    ``warmup`` defaults to the first minute (a third of the call if that is shorter). Samples
    count from the first decrypted frames both ways. Without ``alice_reads`` neither side reads
    its remote tracks.
    """
    seconds = minutes * 60
    warmup = min(60.0, seconds / 3) if warmup is None else warmup
    media = LocalMedia(
        microphone=SyntheticAudioTrack, camera=lambda: PatternVideoTrack(width, height)
    )
    hub = InMemoryHub()
    devices = []
    for user in ("@alice:soak", "@bob:soak"):
        transport = InMemoryTransport(hub, user, "SOAK")
        transport.join(ROOM)
        devices.append(VoIP(transport, media=media, host_addresses=LOOPBACK))
    alice, bob = devices
    sessions: dict[str, CallSession] = {}

    async def answer(session: CallSession) -> None:
        sessions["bob"] = session
        await session.answer()

    bob.on("incoming_call", answer)
    reader = RemoteMediaReader(alice) if alice_reads else None
    started_tracing = not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    samples: list[Sample] = []
    try:
        sessions["alice"] = await alice.place_call(ROOM, "@bob:soak", video=True)
        await _until(
            lambda: _decrypted(sessions["alice"]) > 0 and _decrypted(sessions.get("bob")) > 0,
            60,
            "decrypted frames both ways",
        )
        start = time.monotonic()
        end = start + seconds
        while True:
            gc.collect()
            sample = Sample(
                seconds=round(time.monotonic() - start, 1),
                rss_mb=round(rss_bytes() / MB, 2),
                heap_mb=round(tracemalloc.get_traced_memory()[0] / MB, 3),
                frames_alice_to_bob=_decrypted(sessions["bob"]),
                frames_bob_to_alice=_decrypted(sessions["alice"]),
                connections="/".join(_connection(sessions[n]) for n in ("alice", "bob")),
            )
            samples.append(sample)
            on_sample(sample)
            now = time.monotonic()
            if now >= end:
                break
            await asyncio.sleep(min(interval, end - now))
        call_state = sessions["alice"].state.value
    finally:
        if reader is not None:
            await reader.stop()
        await alice.close()
        await bob.close()
        if started_tracing:
            tracemalloc.stop()
    after = [s for s in samples if s.seconds >= warmup]
    # A call whose media stopped (its connection closed, a side stalled) must not pass for flat.
    flowing = len(samples) >= 2 and all(
        getattr(samples[-1], way) > getattr(samples[-2], way)
        for way in ("frames_alice_to_bob", "frames_bob_to_alice")
    )
    rss_growth = slope_per_minute([(s.seconds, s.rss_mb) for s in after])
    heap_growth = slope_per_minute([(s.seconds, s.heap_mb) for s in after])
    readers_text = "alice reads her remote tracks, bob does not" if alice_reads else "no reader"
    return {
        "benchmark": "soak",
        "call": (
            f"{width}x{height} 30 fps VP8 + Opus each way, SFrame-encrypted, loopback, "
            f"VoIP over the in-memory transport; {readers_text}"
        ),
        "minutes": minutes,
        "interval_seconds": interval,
        "warmup_seconds": warmup,
        "call_state_at_end": call_state,
        "connections_at_end": samples[-1].connections,
        "media_flowing_at_end": flowing,
        "rss_mb_per_minute": None if rss_growth is None else round(rss_growth, 2),
        "heap_mb_per_minute": None if heap_growth is None else round(heap_growth, 3),
        "frames_alice_to_bob": samples[-1].frames_alice_to_bob,
        "frames_bob_to_alice": samples[-1].frames_bob_to_alice,
        "samples": [asdict(s) for s in samples],
    }

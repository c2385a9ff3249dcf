"""``sealcall soak``: a long encrypted video call, the memory of both ends sampled as it goes.

Alice (this process) calls Bob (a child process, :mod:`sealcall.bench.soak_peer`) through the
real call engine, with real aiortc over loopback and SFrame on every frame: 640x480 VP8 and Opus
each way. The call events travel over a pipe between the two processes
(:mod:`sealcall.bench.soak_link`), not through a homeserver, so the figures are the media path's
and the engine's, not Synapse's or nio's. Alice reads her remote tracks (a
:class:`~sealcall.demo.RemoteMediaReader`, as ``sealcall call`` does); Bob leaves his unread, as
an application that shows nothing would. Every ``interval`` seconds a sample records each
process's RSS and Python heap (tracemalloc), the frames decrypted each way and the connection
states, so a call that stalls shows. Growth is the least-squares slope of the samples after the
warm-up, in MB per minute.
"""

import asyncio
import contextlib
import gc
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sealcall.bench.impair import Impairer, Impairment, impair_connection
from sealcall.demo import RemoteMediaReader
from sealcall.media import LOOPBACK, PatternVideoTrack, SyntheticAudioTrack
from sealcall.session import LocalMedia, VoIP

from .soak_link import ROOM, USERS, LinkTransport, Memory, measure


@dataclass(frozen=True)
class Sample:
    """Both processes' memory and the call's progress at one moment."""

    seconds: float
    alice_rss_mb: float
    alice_heap_mb: float
    bob_rss_mb: float
    bob_heap_mb: float
    frames_alice_to_bob: int
    frames_bob_to_alice: int
    connections: str  # alice's and bob's peer connection states, "connected/connected"


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
    return round(cov / var * 60, 3)


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the soak call did not get {what} within {timeout:.0f} s")
        await asyncio.sleep(0.05)


class _Bob:
    """The child process and what it last said."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.gone = asyncio.Event()
        self.memory: asyncio.Future[Memory] | None = None

    def on_message(self, message: dict[str, Any]) -> None:
        if "ready" in message:
            self.ready.set()
        elif "memory" in message and self.memory is not None and not self.memory.done():
            self.memory.set_result(Memory(**message["memory"]))
        elif "eof" in message:
            self.gone.set()


async def run(
    minutes: float,
    *,
    interval: float = 5.0,
    warmup: float | None = None,
    width: int = 640,
    height: int = 480,
    alice_reads: bool = True,
    loss: float = 0.0,
    on_sample: Callable[[Sample], None] = lambda _: None,
) -> dict[str, object]:
    """Hold one call for ``minutes`` and return the samples and the growth after ``warmup``.

    ``warmup`` defaults to the first minute (a third of the call if that is shorter). Samples
    count from the first decrypted frames both ways. Without ``alice_reads`` neither side reads
    its remote tracks. ``loss`` (0..1) drops that share of the call's packets each way at random
    from then on (:mod:`sealcall.bench.impair`), so the receivers' loss handling runs as long.
    """
    seconds = minutes * 60
    warmup = min(60.0, seconds / 3) if warmup is None else warmup
    started_tracing = not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sealcall.bench.soak_peer",
        str(width),
        str(height),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 22,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    bob = _Bob()
    link = LinkTransport(USERS[0], child.stdout, child.stdin, bob.on_message)
    media = LocalMedia(
        microphone=SyntheticAudioTrack, camera=lambda: PatternVideoTrack(width, height)
    )
    alice = VoIP(link, media=media, host_addresses=LOOPBACK)
    reader = RemoteMediaReader(alice) if alice_reads else None
    samples: list[Sample] = []

    async def bob_now() -> Memory:
        bob.memory = asyncio.get_running_loop().create_future()
        link.send({"sample": True})
        return await asyncio.wait_for(bob.memory, 60)

    try:
        await asyncio.wait_for(bob.ready.wait(), 60)
        call = await alice.place_call(ROOM, USERS[1], video=True)

        async def both_decrypting() -> bool:
            return measure(call).frames_decrypted > 0 and (await bob_now()).frames_decrypted > 0

        deadline = time.monotonic() + 60
        while not await both_decrypting():
            if time.monotonic() > deadline or bob.gone.is_set():
                raise RuntimeError("the soak call did not get decrypted frames both ways")
            await asyncio.sleep(0.2)
        if loss and call.pc is not None:
            spec = Impairment(loss=loss)
            impair_connection(call.pc, inbound=Impairer(spec), outbound=Impairer(spec))
        start = time.monotonic()
        end = start + seconds
        while True:
            gc.collect()
            ours, theirs = measure(call), await bob_now()
            sample = Sample(
                seconds=round(time.monotonic() - start, 1),
                alice_rss_mb=ours.rss_mb,
                alice_heap_mb=ours.heap_mb,
                bob_rss_mb=theirs.rss_mb,
                bob_heap_mb=theirs.heap_mb,
                frames_alice_to_bob=theirs.frames_decrypted,
                frames_bob_to_alice=ours.frames_decrypted,
                connections=f"{ours.connection}/{theirs.connection}",
            )
            samples.append(sample)
            on_sample(sample)
            now = time.monotonic()
            if now >= end:
                break
            await asyncio.sleep(min(interval, end - now))
        call_state = call.state.value
    finally:
        if reader is not None:
            await reader.stop()
        await alice.close()
        with contextlib.suppress(ConnectionError):
            link.send({"stop": True})
        try:
            await asyncio.wait_for(child.wait(), 30)
        except TimeoutError:
            child.kill()
            await child.wait()
        await link.close()
        if started_tracing:
            tracemalloc.stop()
    report = _report(samples, minutes, interval, warmup, width, height, alice_reads, call_state)
    report["loss"] = loss
    return report


def _report(
    samples: list[Sample],
    minutes: float,
    interval: float,
    warmup: float,
    width: int,
    height: int,
    alice_reads: bool,
    call_state: str,
) -> dict[str, object]:
    after = [s for s in samples if s.seconds >= warmup]

    def growth(field: str) -> float | None:
        return slope_per_minute([(s.seconds, getattr(s, field)) for s in after])

    # A call whose media stopped (its connection closed, a side stalled) must not pass for flat.
    flowing = len(samples) >= 2 and all(
        getattr(samples[-1], way) > getattr(samples[-2], way)
        for way in ("frames_alice_to_bob", "frames_bob_to_alice")
    )
    per_side = {
        side: {
            "rss_mb_per_minute": growth(f"{side}_rss_mb"),
            "heap_mb_per_minute": growth(f"{side}_heap_mb"),
        }
        for side in ("alice", "bob")
    }
    readers = "alice reads her remote tracks, bob does not" if alice_reads else "neither reads"
    return {
        "benchmark": "soak",
        "call": (
            f"{width}x{height} 30 fps VP8 + Opus each way, SFrame-encrypted, loopback, "
            f"two processes, call events over a pipe; {readers}"
        ),
        "minutes": minutes,
        "interval_seconds": interval,
        "warmup_seconds": warmup,
        "call_state_at_end": call_state,
        "connections_at_end": samples[-1].connections,
        "media_flowing_at_end": flowing,
        **per_side,
        "frames_alice_to_bob": samples[-1].frames_alice_to_bob,
        "frames_bob_to_alice": samples[-1].frames_bob_to_alice,
        "samples": [asdict(s) for s in samples],
    }

"""``sealcall app-soak``: a long video call between two ``sealcall app`` pages, memory and CPU
sampled as it goes.

Everything runs for real: the embedded Synapse of the demo (its own process), two accounts with
an encrypted DM, and for each a :class:`~sealcall.web.app.CallApp` and its
:class:`~sealcall.web.server.PageServer` in this process, its page in its own context of one
Debian Chromium (fake camera and microphone, :mod:`sealcall.bench.chromium`). Alice's page
places a video call through the page's buttons, Bob's page accepts it, and the call is held.
The browser does the media and the SFrame encryption (its worker); this process does Matrix.

Every ``interval`` seconds a sample records this process's RSS, Python heap (tracemalloc) and
CPU seconds, each page's JS heap after a garbage collection (CDP ``Performance.getMetrics``,
``JSHeapUsedSize``: the page's main thread) and its SFrame worker's (CDP ``Runtime.getHeapUsage``
in the worker), the Chromium processes' total RSS (and their renderers', where the pages run)
and CPU seconds, the frames each page's worker decrypted (audio and video) and both pages' call
states. Growth is the least-squares slope of the samples after the warm-up, per minute.
"""

import asyncio
import contextlib
import gc
import importlib
import itertools
import json
import os
import secrets
import shutil
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from sealcall.demo import homeserver, open_dm
from sealcall.homeserver import Homeserver
from sealcall.transport.matrix import MatrixTransport
from sealcall.web.app import CallApp
from sealcall.web.server import PageServer

from .chromium import Browser, missing
from .soak import slope_per_minute
from .soak_link import MB, rss_bytes

WAIT_MS = 60_000
WAYS = ("alice_to_bob", "bob_to_alice")
KINDS = ("video", "audio")


class AppSoakError(Exception):
    """The soak cannot run here (no browser, no Playwright) or its call did not get going."""


@dataclass(frozen=True)
class Sample:
    """This process, the browser and the call at one moment."""

    seconds: float
    python_rss_mb: float
    python_heap_mb: float
    python_cpu_seconds: float
    alice_js_heap_mb: float
    bob_js_heap_mb: float
    alice_worker_heap_mb: float
    bob_worker_heap_mb: float
    chromium_rss_mb: float
    chromium_renderer_rss_mb: float
    chromium_cpu_seconds: float
    chromium_processes: int
    video_alice_to_bob: int  # frames Bob's worker decrypted
    audio_alice_to_bob: int
    video_bob_to_alice: int  # frames Alice's worker decrypted
    audio_bob_to_alice: int
    call_states: str  # alice's page's and bob's page's, "connected/connected"


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{entry}/stat") as stat:
                # The command name (in parentheses) may hold spaces: split after it.
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def _proc_usage(pid: int) -> tuple[str, int, float, str]:
    """A process's command name, RSS in bytes, CPU seconds and Chromium ``--type``, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    name = text[text.index("(") + 1 : text.rindex(")")]
    after = text.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(after[11]) + int(after[12])) / ticks  # utime, stime
    rss = int(after[21]) * os.sysconf("SC_PAGE_SIZE")
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        arguments = cmdline.read().decode(errors="replace").split("\0")
    return name, rss, cpu, _process_type(arguments)


def _process_type(arguments: list[str]) -> str:
    """Chromium's process type (``renderer``, ``gpu-process``...; ``browser`` without one)."""
    # Chromium's child processes rewrite their command line as one string, spaces between.
    for argument in " ".join(arguments).split():
        if argument.startswith("--type="):
            return argument.removeprefix("--type=")
    return "browser"


@dataclass(frozen=True)
class ChromiumUsage:
    """Chromium's processes under this one, summed."""

    rss_mb: float
    renderer_rss_mb: float  # the renderer processes: the pages and their workers
    cpu_seconds: float
    processes: int


def chromium_usage() -> ChromiumUsage:
    """The Chromium processes under this one (Playwright's driver starts them): their RSS,
    CPU seconds and number (psutil if installed, else /proc)."""
    usages: list[tuple[str, int, float, str]] = []
    try:
        psutil: Any = importlib.import_module("psutil")  # optional, and it has no type hints
    except ImportError:
        tree = _children()
        todo, seen = list(tree.get(os.getpid(), [])), []
        while todo:
            pid = todo.pop()
            seen.append(pid)
            todo.extend(tree.get(pid, []))
        for pid in seen:
            with contextlib.suppress(OSError, ValueError, IndexError):
                usages.append(_proc_usage(pid))
    else:
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                times = child.cpu_times()
                usages.append(
                    (
                        child.name(),
                        child.memory_info().rss,
                        times.user + times.system,
                        _process_type(child.cmdline()),
                    )
                )
    chromium = [u for u in usages if u[0].startswith("chrom")]
    return ChromiumUsage(
        rss_mb=round(sum(u[1] for u in chromium) / MB, 1),
        renderer_rss_mb=round(sum(u[1] for u in chromium if u[3] == "renderer") / MB, 1),
        cpu_seconds=round(sum(u[2] for u in chromium), 2),
        processes=len(chromium),
    )


class _Side:
    """One person: Matrix device, app and page server here, page in the browser."""

    def __init__(self, transport: MatrixTransport, app: CallApp, server: PageServer) -> None:
        self.transport = transport
        self.app = app
        self.server = server
        self.page: Any = None
        self.cdp: Any = None
        self._workers: set[str] = set()  # CDP session ids of the page's workers
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0

    async def open(self, browser: Browser, room_id: str) -> None:
        self.page = await browser.page_on(self.server.url)
        await self.page.wait_for_selector('[data-testid="me"]:not(:empty)', timeout=WAIT_MS)
        room = self.page.locator(f'[data-testid="room"][data-room-id="{room_id}"]')
        await room.click(timeout=WAIT_MS)
        self.cdp = await self.page.context.new_cdp_session(self.page)
        await self.cdp.send("Performance.enable")
        # The SFrame worker has a heap of its own: attach to it (and any later worker) through
        # the page's session, with messages wrapped (Playwright's session has no child sessions).
        self.cdp.on("Target.attachedToTarget", self._attached)
        self.cdp.on("Target.detachedFromTarget", lambda e: self._workers.discard(e["sessionId"]))
        self.cdp.on("Target.receivedMessageFromTarget", self._received)
        await self.cdp.send(
            "Target.setAutoAttach",
            {"autoAttach": True, "waitForDebuggerOnStart": False, "flatten": False},
        )

    def _attached(self, event: dict[str, Any]) -> None:
        if event["targetInfo"]["type"] == "worker":
            self._workers.add(event["sessionId"])

    def _received(self, event: dict[str, Any]) -> None:
        message = json.loads(event["message"])
        waiter = self._replies.pop(message.get("id", -1), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(message)

    async def _in_worker(self, session: str, method: str) -> dict[str, Any]:
        self._next_id += 1
        waiter = asyncio.get_running_loop().create_future()
        self._replies[self._next_id] = waiter
        message = json.dumps({"id": self._next_id, "method": method})
        await self.cdp.send(
            "Target.sendMessageToTarget", {"sessionId": session, "message": message}
        )
        try:
            reply = await asyncio.wait_for(waiter, 10)
        finally:
            self._replies.pop(self._next_id, None)
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def worker_heap_mb(self) -> float:
        """The JS heap in use in the page's workers (the SFrame worker) after a collection."""
        used = 0.0
        for session in list(self._workers):
            await self._in_worker(session, "HeapProfiler.collectGarbage")
            used += float((await self._in_worker(session, "Runtime.getHeapUsage"))["usedSize"])
        return round(used / MB, 3)

    async def click(self, testid: str) -> None:
        await self.page.locator(f'[data-testid="{testid}"]').first.click(timeout=WAIT_MS)

    async def js_heap_mb(self) -> float:
        """The page's JS heap in use after a garbage collection."""
        await self.cdp.send("HeapProfiler.collectGarbage")
        metrics = (await self.cdp.send("Performance.getMetrics"))["metrics"]
        used = next(m["value"] for m in metrics if m["name"] == "JSHeapUsedSize")
        return round(float(used) / MB, 3)

    async def call(self, call_id: str) -> tuple[str, dict[str, int]]:
        """The page's call state and its worker's decrypted frames per kind."""
        state, stats = await self.page.evaluate(
            "async (id) => [window.sealcall.state().calls[id]?.state ?? 'ended',"
            " await window.sealcall.stats(id)]",
            call_id,
        )
        worker = (stats or {}).get("worker") or {}
        return str(state), {kind: int(worker.get(kind, {}).get("decrypted", 0)) for kind in KINDS}

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.app.close()
        with contextlib.suppress(Exception):
            await self.server.stop()
        await self.transport.stop()


async def _side(url: str, user_id: str, password: str, store: Path) -> _Side:
    transport = await MatrixTransport.login(url, user_id, password, store)
    app = CallApp(transport, state_dir=str(store))
    await transport.start()
    server = PageServer(app)
    await server.start()
    return _Side(transport, app, server)


async def _place_call(alice: _Side, bob: _Side) -> str:
    """Alice's page calls, Bob's page accepts with video; the call's id once both decrypt."""
    await alice.click("call-video")
    banner = bob.page.locator('[data-testid="ring-banner"]')
    await banner.wait_for(timeout=WAIT_MS)
    call_id = str(await banner.get_attribute("data-call-id"))
    await bob.click("accept-video")
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        states = [await side.call(call_id) for side in (alice, bob)]
        if all(s == "connected" and min(f.values()) > 0 for s, f in states):
            return call_id
        if time.monotonic() > deadline:
            raise AppSoakError(f"the call did not get decrypted frames both ways: {states}")
        await asyncio.sleep(0.5)


async def _hang_up(alice: _Side, bob: _Side, call_id: str) -> None:
    """Alice hangs up and both pages see the call end (best effort: it may have ended, the
    samples show that)."""
    with contextlib.suppress(Exception):
        await alice.page.locator('[data-testid="hangup"]').click(timeout=5000)
        for side in (alice, bob):
            await side.page.wait_for_function(
                "(id) => (window.sealcall.state().calls[id]?.state ?? 'ended') === 'ended'",
                arg=call_id,
                polling=200,
                timeout=10_000,
            )


async def run(
    minutes: float,
    *,
    interval: float = 5.0,
    warmup: float | None = None,
    on_sample: Callable[[Sample], None] = lambda _: None,
    progress: Callable[[str], None] = lambda _: None,
    server: Homeserver | None = None,
) -> dict[str, object]:
    """Hold one page-to-page video call for ``minutes``; return the samples and the growth per
    minute after ``warmup`` (default: the first minute, a third of the call if shorter).
    Samples count from the first frames decrypted both ways. The call goes through ``server``
    (two new accounts on it), or an embedded Synapse started for it."""
    reason = missing()
    if reason is not None:
        raise AppSoakError(
            f"app-soak needs {reason} (Playwright: pip install -e '.[dev]'; the browser:"
            " apt-get install chromium; no browser is ever downloaded)"
        )
    seconds = minutes * 60
    warmup = min(60.0, seconds / 3) if warmup is None else warmup
    started_tracing = not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    root = Path(tempfile.mkdtemp(prefix="sealcall-app-soak-"))
    samples: list[Sample] = []
    sides: list[_Side] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            if server is None:
                server = await stack.enter_async_context(homeserver(root))
                progress(f"homeserver ready at {server.url}")
            for name in ("alice", "bob"):
                username = f"{name}{secrets.token_hex(4)}"
                account = await server.register(username, secrets.token_urlsafe(12))
                side = await _side(server.url, account.user_id, account.password, root / username)
                stack.push_async_callback(side.stop)  # before the homeserver stops
                sides.append(side)
            alice, bob = sides
            room_id = await open_dm(alice.transport, bob.transport)
            async with Browser.launched() as browser:
                for side in sides:
                    await side.open(browser, room_id)
                progress("both pages open; alice's page calls bob's")
                call_id = await _place_call(alice, bob)
                progress("call connected, frames decrypted both ways; sampling")
                start = time.monotonic()
                end = start + seconds
                while True:
                    samples.append(await _sample(alice, bob, call_id, start))
                    on_sample(samples[-1])
                    now = time.monotonic()
                    if now >= end:
                        break
                    await asyncio.sleep(min(interval, end - now))
                await _hang_up(alice, bob, call_id)
    finally:
        if started_tracing:
            tracemalloc.stop()
        shutil.rmtree(root, ignore_errors=True)
    return report(samples, minutes, interval, warmup)


async def _sample(alice: _Side, bob: _Side, call_id: str, start: float) -> Sample:
    gc.collect()
    (a_state, a_frames), (b_state, b_frames) = await alice.call(call_id), await bob.call(call_id)
    chromium = chromium_usage()
    return Sample(
        seconds=round(time.monotonic() - start, 1),
        python_rss_mb=round(rss_bytes() / MB, 2),
        python_heap_mb=round(tracemalloc.get_traced_memory()[0] / MB, 3),
        python_cpu_seconds=round(time.process_time(), 2),
        alice_js_heap_mb=await alice.js_heap_mb(),
        bob_js_heap_mb=await bob.js_heap_mb(),
        alice_worker_heap_mb=await alice.worker_heap_mb(),
        bob_worker_heap_mb=await bob.worker_heap_mb(),
        chromium_rss_mb=chromium.rss_mb,
        chromium_renderer_rss_mb=chromium.renderer_rss_mb,
        chromium_cpu_seconds=chromium.cpu_seconds,
        chromium_processes=chromium.processes,
        video_alice_to_bob=b_frames["video"],
        audio_alice_to_bob=b_frames["audio"],
        video_bob_to_alice=a_frames["video"],
        audio_bob_to_alice=a_frames["audio"],
        call_states=f"{a_state}/{b_state}",
    )


FRAME_FIELDS = tuple(f"{kind}_{way}" for way in WAYS for kind in KINDS)


def report(
    samples: list[Sample], minutes: float, interval: float, warmup: float
) -> dict[str, object]:
    """The report of a run: growth per minute after ``warmup``, frame rates, every sample."""
    after = [s for s in samples if s.seconds >= warmup]

    def growth(field: str) -> float | None:
        return slope_per_minute([(s.seconds, getattr(s, field)) for s in after])

    def rate(field: str) -> float | None:
        per_minute = growth(field)
        return None if per_minute is None else round(per_minute / 60, 1)

    # A stall anywhere shows: frames must grow each way, of each kind, between every two samples.
    stalls = [
        {"seconds": later.seconds, "stalled": stalled}
        for earlier, later in itertools.pairwise(samples)
        if (stalled := [f for f in FRAME_FIELDS if getattr(later, f) <= getattr(earlier, f)])
    ]
    numeric = [f.name for f in fields(Sample) if f.name not in ("seconds", "call_states")]
    return {
        "benchmark": "app-soak",
        "call": (
            "two sealcall app pages in one Debian Chromium (fake camera and microphone), a video"
            " call page to page through the embedded Synapse, SFrame in each page's worker;"
            " both CallApps and PageServers in this process"
        ),
        "minutes": minutes,
        "interval_seconds": interval,
        "warmup_seconds": warmup,
        "call_states_at_end": samples[-1].call_states,
        "media_stalls": stalls,
        "media_flowing_throughout": len(samples) >= 2 and not stalls,
        "growth_per_minute": {
            f: growth(f)
            for f in numeric
            if f.endswith("_mb") or f.endswith("_cpu_seconds")  # MB/min, CPU s/min
        },
        "frames_per_second": {f: rate(f) for f in FRAME_FIELDS},
        "frames_at_end": {f: getattr(samples[-1], f) for f in FRAME_FIELDS},
        "samples": [asdict(s) for s in samples],
    }

"""``sealcall group-demo``: N participants in one end-to-end encrypted group call, measured.

Each participant is its own process (:mod:`sealcall.bench.group_peer`) with its own Matrix
device, on one homeserver (an embedded Synapse by default). They join a new encrypted room's call
and connect as a full mesh, each sending synthetic audio and video encoded and encrypted once.
Midway one participant leaves (the others rotate their keys), later another is killed with
SIGKILL (its delayed leave removes it); the rest stay to the end. The report gives each pair's
setup time, the frames each participant decoded from each other one, each key rotation and how
long after the leave it took effect, how long the killed participant took to vanish from
everyone's view, each participant's CPU share, and its memory over time (growth after the first
minute, least squares, MB per minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sealcall.homeserver import Homeserver
from sealcall.transport.matrix import MatrixTransport

from .soak import slope_per_minute

Progress = Callable[[str], None]
WARM_UP = 60.0  # memory growth is measured after this


@dataclass
class Participant:
    """One participant process and everything it reported."""

    name: str
    user_id: str
    process: asyncio.subprocess.Process | None = None
    device: str = ""
    joined_at: float | None = None
    connected: dict[str, float] = field(default_factory=dict)  # peer -> setup seconds
    keys: list[tuple[float, int]] = field(default_factory=list)  # (time, index)
    left: dict[str, float] = field(default_factory=dict)  # peer -> when it left our view
    samples: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    fate: str = "stayed"  # or "left", "killed"

    def on_line(self, message: dict[str, Any]) -> None:
        t = float(message.get("t", time.time()))
        if "ready" in message:
            self.device = str(message["ready"])
        elif "joined" in message:
            self.joined_at = t
        elif "connected" in message:
            info = message["connected"]
            self.connected[info["peer"]] = float(info["setup_s"])
        elif "key" in message:
            self.keys.append((t, int(message["key"])))
        elif "left" in message:
            self.left.setdefault(message["left"]["peer"], t)
        elif "sample" in message:
            self.samples.append((t, message["sample"]))
        elif "final" in message:
            self.final = message["final"]


@dataclass
class GroupDemoReport:
    """What the group demo measured."""

    homeserver: str
    room_id: str
    participants: int
    seconds: float
    pair_setup_seconds: dict[str, dict[str, float]]
    median_pair_setup_seconds: float | None
    frames_decoded: dict[str, dict[str, int]]
    key_rotations: dict[str, list[dict[str, Any]]]
    leaver: str | None
    killed: str | None
    killed_vanished_after_seconds: dict[str, float]
    cpu_percent: dict[str, float]
    memory: dict[str, dict[str, Any]]


async def _pump(stream: asyncio.StreamReader, participant: Participant) -> None:
    while line := await stream.readline():
        with contextlib.suppress(ValueError):
            participant.on_line(json.loads(line))


async def _until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    alive: list[Participant] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for participant in alive or ():
            process = participant.process
            if process is not None and process.returncode is not None:
                raise RuntimeError(
                    f"{participant.name} stopped (exit status {process.returncode}) while the"
                    f" group demo was waiting for {what}"
                )
        if time.monotonic() > deadline:
            where = "; ".join(f"{p.name}: {len(p.connected)} connected" for p in alive or ())
            raise TimeoutError(f"the group demo timed out waiting for {what} ({where})")
        await asyncio.sleep(0.1)


async def _start(
    participant: Participant,
    password: str,
    url: str,
    room_id: str,
    store: Path,
    size: str,
    interval: float,
) -> asyncio.Task[None]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sealcall.bench.group_peer",
        url,
        participant.user_id,
        room_id,
        str(store / participant.name),
        size,
        str(interval),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "SEALCALL_PASSWORD": password},
    )
    participant.process = process
    assert process.stdout is not None
    return asyncio.ensure_future(_pump(process.stdout, participant))


async def _leave(participant: Participant) -> None:
    process = participant.process
    if process is None or process.returncode is not None or process.stdin is None:
        return
    with contextlib.suppress(ConnectionError):
        process.stdin.write(b'{"leave": true}\n')
        await process.stdin.drain()


async def run_group_demo(
    server: Homeserver,
    *,
    participants: int = 4,
    seconds: float = 60.0,
    video_size: str = "320x240",
    interval: float = 5.0,
    progress: Progress = lambda _: None,
) -> GroupDemoReport:
    """Run the group demo on ``server`` (started) and return its report."""
    if participants < 2:
        raise ValueError("a group call needs at least 2 participants")
    store = server.data_dir.parent / "group-demo-clients"
    tag = os.urandom(3).hex()
    people: list[Participant] = []
    passwords: list[str] = []
    for i in range(participants):
        account = await server.register(f"member{i + 1}-{tag}")
        people.append(Participant(f"member{i + 1}", account.user_id))
        passwords.append(account.password)
    host = await MatrixTransport.login(server.url, people[0].user_id, passwords[0], store / "host")
    try:
        await host.start()
        room_id = await host.create_group_room("group demo", invite=[p.user_id for p in people[1:]])
    finally:
        await host.stop()
    progress(f"{participants} participants; encrypted room {room_id}")
    pumps = [
        await _start(p, pw, server.url, room_id, store, video_size, interval)
        for p, pw in zip(people, passwords, strict=True)
    ]
    leaver = people[-1] if participants >= 3 else None
    killed = people[-2] if participants >= 4 else None
    try:
        await _until(
            lambda: all(p.joined_at for p in people), 120, "every participant to join", people
        )
        await _until(
            lambda: all(len(p.connected) >= participants - 1 for p in people),
            120,
            "the full mesh",
            people,
        )
        progress("full mesh connected")
        started = time.monotonic()
        left_at: float | None = None
        killed_at: float | None = None
        if leaver is not None:
            await asyncio.sleep(seconds * 0.4)
            left_at = time.time()
            leaver.fate = "left"
            await _leave(leaver)
            progress(f"{leaver.name} leaves")
        if killed is not None and killed.process is not None:
            await asyncio.sleep(max(0.0, started + seconds * 0.6 - time.monotonic()))
            killed_at = time.time()
            killed.fate = "killed"
            killed.process.send_signal(signal.SIGKILL)
            progress(f"{killed.name} is killed (SIGKILL)")
        await asyncio.sleep(max(0.0, started + seconds - time.monotonic()))
        stayers = [p for p in people if p.fate == "stayed"]
        if killed is not None:
            await _until(
                lambda: all(killed.device in p.left for p in stayers),
                30,
                "the killed participant to vanish",
            )
        for participant in stayers:
            await _leave(participant)
        for participant in people:
            if participant.process is not None:
                await participant.process.wait()
        await asyncio.gather(*pumps)
        return _report(server.url, room_id, people, seconds, leaver, killed, left_at, killed_at)
    finally:
        for participant in people:
            if participant.process is not None and participant.process.returncode is None:
                participant.process.kill()
                await participant.process.wait()
        for pump in pumps:
            pump.cancel()


def _report(
    url: str,
    room_id: str,
    people: list[Participant],
    seconds: float,
    leaver: Participant | None,
    killed: Participant | None,
    left_at: float | None,
    killed_at: float | None,
) -> GroupDemoReport:
    setups = {p.name: dict(p.connected) for p in people}
    all_setups = [s for p in people for s in p.connected.values()]
    decoded: dict[str, dict[str, int]] = {}
    memory: dict[str, dict[str, Any]] = {}
    cpu: dict[str, float] = {}
    for p in people:
        # Peers that left are gone from the last sample: the most each peer reached counts.
        seen = [s.get("decoded", {}) for _, s in p.samples] + [(p.final or {}).get("decoded", {})]
        decoded[p.name] = {}
        for counts in seen:
            for peer, frames in counts.items():
                decoded[p.name][peer] = max(frames, decoded[p.name].get(peer, 0))
        if p.samples and p.joined_at is not None:
            first_t = p.samples[0][0]
            span = p.samples[-1][0] - first_t
            cpu_span = p.samples[-1][1]["cpu_s"] - p.samples[0][1]["cpu_s"]
            cpu[p.name] = round(100 * cpu_span / span, 1) if span > 0 else 0.0
            points = [(t - first_t, s["rss_mb"]) for t, s in p.samples]
            memory[p.name] = {
                "rss_mb": [[round(t, 1), v] for t, v in points],
                "growth_mb_per_min_after_warm_up": slope_per_minute(
                    [(t, v) for t, v in points if t >= WARM_UP]
                ),
            }
    rotations: dict[str, list[dict[str, Any]]] = {}
    for p in people:
        rotations[p.name] = [
            {
                "index": index,
                "seconds_after_leave": None if left_at is None else round(t - left_at, 3),
            }
            for t, index in p.keys
        ]
    vanished: dict[str, float] = {}
    if killed is not None and killed_at is not None:
        for p in people:
            if p.fate == "stayed" and killed.device in p.left:
                vanished[p.name] = round(p.left[killed.device] - killed_at, 3)
    return GroupDemoReport(
        homeserver=url,
        room_id=room_id,
        participants=len(people),
        seconds=seconds,
        pair_setup_seconds=setups,
        median_pair_setup_seconds=round(statistics.median(all_setups), 3) if all_setups else None,
        frames_decoded=decoded,
        key_rotations=rotations,
        leaver=None if leaver is None else leaver.name,
        killed=None if killed is None else killed.name,
        killed_vanished_after_seconds=vanished,
        cpu_percent=cpu,
        memory=memory,
    )


def report_json(report: GroupDemoReport) -> str:
    """The report as JSON."""
    return json.dumps(asdict(report), indent=2)


def report_text(report: GroupDemoReport) -> str:
    """The report for people."""
    lines = [
        f"Group call of {report.participants} through {report.homeserver} ({report.seconds:.0f} s)",
        f"  room {report.room_id}; median pair setup {report.median_pair_setup_seconds} s",
    ]
    for name, peers in report.frames_decoded.items():
        got = ", ".join(f"{n}" for n in peers.values()) or "none"
        cpu = report.cpu_percent.get(name)
        growth = report.memory.get(name, {}).get("growth_mb_per_min_after_warm_up")
        lines.append(
            f"  {name}: frames decoded from each peer: {got}; CPU {cpu} %;"
            f" memory growth {growth} MB/min after the first minute"
        )
    if report.leaver:
        lines.append(f"  {report.leaver} left; key rotations (s after the leave):")
        for name, rotations in report.key_rotations.items():
            after = [r["seconds_after_leave"] for r in rotations[1:]]
            lines.append(f"    {name}: {after}")
    if report.killed:
        lines.append(
            f"  {report.killed} was killed; gone from the others' view after"
            f" {report.killed_vanished_after_seconds} s"
        )
    return "\n".join(lines)

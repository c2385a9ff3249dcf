"""``sealcall group-demo``: N participants in one end-to-end encrypted group call, measured.

Each participant is its own process (:mod:`sealcall.bench.group_peer`) with its own Matrix
device, on one homeserver (an embedded Synapse by default). They join a new encrypted room's call
and connect as a full mesh, each sending synthetic audio and video encoded and encrypted once.
At 40 % of the call one participant leaves; at 60 % another is killed with SIGKILL (its delayed
leave removes it); the rest stay to the end, and on until each departure has vanished from
their view and their key rotations have taken effect (at most 40 s more). The report gives:

- each pair's setup time (from the moment both were in the call) and every pair call that ended;
- the frames each participant decrypted from each other one, over the whole call (a departed
  member's count is final, taken as its pair closed);
- for each departure: how long until it vanished from each remaining member's view, and each
  remaining member's key rotation: how long after the departure it encrypted with its new key,
  and how long until each other remaining member first decrypted a frame with that key (from
  then on the departed member can read nothing of that sender: its frames have no key for it;
  the departed member's own frames stopped when it left or died);
- each participant's CPU share, and its memory over time: RSS and Python heap (tracemalloc)
  every ``interval`` seconds, with the growth after the first minute (least squares, MB per
  minute, as ``sealcall soak`` computes it).
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
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sealcall.homeserver import Homeserver, free_port
from sealcall.transport.matrix import MatrixTransport

from .soak import slope_per_minute

Progress = Callable[[str], None]
WARM_UP = 60.0  # memory growth is measured after this
SETUP_TIMEOUT = 120.0  # for every participant to join, and for the full mesh
SETTLE_TIMEOUT = 40.0  # for a departure to vanish from view and its key rotations to be used
LEAVE_TIMEOUT = 60.0  # for a participant to leave and exit when told


@dataclass
class Participant:
    """One participant process and everything it reported (times are wall-clock seconds)."""

    name: str
    user_id: str
    process: asyncio.subprocess.Process | None = None
    device: str = ""
    joined_at: float | None = None
    setup: dict[str, float] = field(default_factory=dict)  # peer -> first setup seconds
    live: set[str] = field(default_factory=set)  # peers whose pair call is connected now
    ended: list[dict[str, Any]] = field(default_factory=list)  # pair calls that ended
    keys: list[tuple[float, int]] = field(default_factory=list)  # (time, index) put in use
    rx_keys: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # peer -> keys
    seen: list[tuple[float, str, str]] = field(default_factory=list)  # (time, peer, session)
    left: list[tuple[float, str, str]] = field(default_factory=list)  # (time, peer, reason)
    own: list[tuple[float, str]] = field(default_factory=list)  # our membership's states
    late_restarts: list[float] = field(default_factory=list)  # see group_peer
    samples: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    fate: str = "stayed"  # or "left", "killed"
    fate_at: float | None = None

    def on_line(self, message: dict[str, Any]) -> None:
        """Take one report line of the participant."""
        t = float(message.get("t", time.time()))
        if "ready" in message:
            self.device = str(message["ready"])
        elif "joined" in message:
            self.joined_at = t
        elif "connected" in message:
            peer = message["connected"]["peer"]
            self.setup.setdefault(peer, float(message["connected"]["setup_s"]))
            self.live.add(peer)
        elif "ended" in message:
            self.live.discard(message["ended"]["peer"])
            self.ended.append({**message["ended"], "t": t})
        elif "key" in message:
            self.keys.append((t, int(message["key"])))
        elif "rx_key" in message:
            info = message["rx_key"]
            self.rx_keys.setdefault(info["peer"], []).append((t, int(info["index"])))
        elif "member" in message:
            self.seen.append((t, message["member"]["peer"], str(message["member"]["session"])))
        elif "left" in message:
            self.left.append((t, message["left"]["peer"], message["left"]["reason"]))
        elif "own" in message:
            self.own.append((t, str(message["own"])))
        elif "late_restart" in message:
            self.late_restarts.append(float(message["late_restart"]))
        elif "sample" in message:
            self.samples.append((t, message["sample"]))
        elif "final" in message:
            self.final = message["final"]

    def saw_leave(self, device: str, since: float) -> float | None:
        """When ``device`` left our view at or after ``since``, if it did."""
        return next((t for t, peer, _ in self.left if peer == device and t >= since), None)

    def gone(self) -> bool:
        """Whether the process has exited."""
        return self.process is not None and self.process.returncode is not None


@dataclass
class GroupDemoReport:
    """What the group demo measured (seconds unless named otherwise; see the module)."""

    homeserver: str
    room_id: str
    participants: int
    seconds: float
    video_size: str
    devices: dict[str, str]  # participant -> its member device
    logs: str  # the folder of the participants' logs (NAME.log)
    pair_setup_seconds: dict[str, dict[str, float]]
    median_pair_setup_seconds: float | None
    pair_calls_ended: dict[str, list[dict[str, Any]]]
    frames_decoded: dict[str, dict[str, int]]
    membership: dict[str, dict[str, Any]]
    departures: list[dict[str, Any]]
    cpu_percent: dict[str, float]
    memory: dict[str, dict[str, Any]]
    sfu: str | None = None  # the SFU the call went through (None: a full mesh)
    # per member, per peer, per kind: frames received, decrypted, dropped by reason
    frames_by_kind: dict[str, dict[str, Any]] = field(default_factory=dict)
    # per member, per published role (microphone, camera, camera_full): frames encoded and sent
    frames_sent: dict[str, dict[str, int]] = field(default_factory=dict)
    # the SFU's /metrics over the call (counters and drops: increase; cpu_percent of its process)
    sfu_metrics: dict[str, float] = field(default_factory=dict)


async def _pump(stream: asyncio.StreamReader, participant: Participant) -> None:
    while line := await stream.readline():
        with contextlib.suppress(ValueError):
            participant.on_line(json.loads(line))


async def _until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    watched: list[Participant],
    missing: Callable[[], str] = lambda: "",
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for participant in watched:
            if participant.gone():
                assert participant.process is not None
                raise RuntimeError(
                    f"{participant.name} stopped (exit status {participant.process.returncode})"
                    f" while the group demo was waiting for {what}"
                )
        if time.monotonic() > deadline:
            raise TimeoutError(f"the group demo timed out waiting for {what}{missing()}")
        await asyncio.sleep(0.1)


def _missing_pairs(people: list[Participant]) -> str:
    names = {p.device: p.name for p in people}
    lines = []
    for p in people:
        absent = [n for d, n in names.items() if d != p.device and d not in p.live]
        if absent:
            ends = [f"{names.get(e['peer'], e['peer'])}: {e['reason']}" for e in p.ended]
            states = p.samples[-1][1].get("pairs", {}) if p.samples else {}
            now = {names.get(d, d): state for d, state in states.items()}
            lines.append(
                f"{p.name} lacks {', '.join(absent)} (pair calls now: {now};"
                f" ended: {ends or 'none'})"
            )
    return ": " + "; ".join(lines) if lines else ""


async def _start(
    participant: Participant,
    password: str,
    url: str,
    room_id: str,
    store: Path,
    size: str,
    interval: float,
    sfu_url: str | None,
) -> asyncio.Task[None]:
    store.mkdir(parents=True, exist_ok=True)
    with open(store / f"{participant.name}.log", "ab") as log:  # the child keeps its own copy
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
            *([sfu_url] if sfu_url else []),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env={**os.environ, "SEALCALL_PASSWORD": password},
            limit=1 << 20,
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


async def _depart(participant: Participant, how: str, progress: Progress) -> None:
    participant.fate, participant.fate_at = how, time.time()
    if how == "left":
        await _leave(participant)
    elif participant.process is not None:
        participant.process.send_signal(signal.SIGKILL)
    progress(f"{participant.name} {'leaves' if how == 'left' else 'is killed (SIGKILL)'}")


async def _settled(departed: Participant, people: list[Participant]) -> None:
    """Wait (at most SETTLE_TIMEOUT) until every member still in the call saw ``departed`` go,
    put a new key in use, and had it decrypted by every other one: the rotation took effect."""
    stayers = [p for p in people if p.fate == "stayed"]
    gone = [p for p in people if p.fate_at is not None]

    def settled(p: Participant) -> bool:
        rotation = _rotation(p, departed, gone, stayers)
        return rotation is not None and None not in rotation["decrypted_by_others_after"].values()

    with contextlib.suppress(TimeoutError):
        await _until(lambda: all(settled(p) for p in stayers), SETTLE_TIMEOUT, "", [])


async def run_group_demo(
    server: Homeserver,
    *,
    participants: int = 4,
    seconds: float = 60.0,
    video_size: str = "320x240",
    interval: float = 5.0,
    progress: Progress = lambda _: None,
    sfu: bool = False,
) -> GroupDemoReport:
    """Run the group demo on ``server`` (started) and return its report; with ``sfu`` the call
    goes through a ``sealcall sfu`` server started here on 127.0.0.1 (with real admission, by
    an account of its own in the room) instead of a full mesh.

    Raises TimeoutError when the participants do not all join, or the full mesh does not
    connect, within two minutes (saying which pairs are missing), and RuntimeError when a
    participant process stops before it is meant to.
    """
    if participants < 2:
        raise ValueError("a group call needs at least 2 participants")
    tag = os.urandom(3).hex()
    store = server.data_dir.parent / f"group-demo-clients-{tag}"
    people: list[Participant] = []
    passwords: list[str] = []
    for i in range(participants):
        account = await server.register(f"member{i + 1}-{tag}")
        people.append(Participant(f"member{i + 1}", account.user_id))
        passwords.append(account.password)
    sfu_account = await server.register(f"sfu-{tag}") if sfu else None
    invite = [p.user_id for p in people[1:]] + ([sfu_account.user_id] if sfu_account else [])
    host = await MatrixTransport.login(server.url, people[0].user_id, passwords[0], store / "host")
    try:
        await host.start()
        room_id = await host.create_group_room("group demo", invite=invite)
    finally:
        await host.stop()
    async with contextlib.AsyncExitStack() as stack:
        sfu_url = None
        if sfu_account is not None:
            sfu_url = await stack.enter_async_context(
                running_sfu(server, sfu_account.user_id, sfu_account.password, room_id, store)
            )
            progress(f"SFU serving on {sfu_url}")
        return await _run_call(
            server,
            people,
            passwords,
            room_id,
            store,
            seconds,
            video_size,
            interval,
            progress,
            sfu_url,
        )


@contextlib.asynccontextmanager
async def running_sfu(
    server: Homeserver, user_id: str, password: str, room_id: str, store: Path
) -> AsyncIterator[str]:
    """A ``sealcall sfu`` server on 127.0.0.1, admitting through ``user_id`` (in ``room_id``);
    its URL."""
    from sealcall.sfu.admission_service import AdmissionGate
    from sealcall.sfu.server import SfuServer

    transport = await MatrixTransport.login(server.url, user_id, password, store / "sfu")
    await transport.start()
    await transport.enter_room(room_id)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gate = AdmissionGate(transport, homeserver_url=server.url, sfu_url=url)
    sfu = SfuServer(gate, port=port)
    try:
        await sfu.start()
        yield url
    finally:
        await sfu.close()
        await gate.close()
        await transport.stop()


async def _run_call(
    server: Homeserver,
    people: list[Participant],
    passwords: list[str],
    room_id: str,
    store: Path,
    seconds: float,
    video_size: str,
    interval: float,
    progress: Progress,
    sfu_url: str | None,
) -> GroupDemoReport:
    participants = len(people)
    progress(f"{participants} participants; encrypted room {room_id}; their logs in {store}")
    pumps = [
        await _start(p, pw, server.url, room_id, store, video_size, interval, sfu_url)
        for p, pw in zip(people, passwords, strict=True)
    ]
    leaver = people[-1] if participants >= 3 else None
    killed = people[-2] if participants >= 4 else None
    try:
        await _until(
            lambda: all(p.joined_at for p in people),
            SETUP_TIMEOUT,
            "every participant to join",
            people,
        )
        await _until(
            lambda: all(len(p.live) >= participants - 1 for p in people),
            SETUP_TIMEOUT,
            "the full mesh" if sfu_url is None else "every member's media through the SFU",
            people,
            lambda: _missing_pairs(people),
        )
        progress("full mesh connected" if sfu_url is None else "everyone receives everyone")
        started = time.monotonic()
        sfu_before = await scrape_metrics(sfu_url) if sfu_url else {}
        if leaver is not None:
            await asyncio.sleep(seconds * 0.4)
            await _depart(leaver, "left", progress)
        if killed is not None:
            await asyncio.sleep(max(0.0, started + seconds * 0.6 - time.monotonic()))
            await _depart(killed, "killed", progress)
        await asyncio.sleep(max(0.0, started + seconds - time.monotonic()))
        sfu_during = _increase(sfu_before, await scrape_metrics(sfu_url)) if sfu_url else {}
        for departed in (leaver, killed):
            if departed is not None:
                await _settled(departed, people)
        for participant in people:
            if participant.fate == "stayed":
                await _leave(participant)
        for participant in people:
            if participant.process is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(participant.process.wait(), LEAVE_TIMEOUT)
        await asyncio.wait(pumps, timeout=5)
        report = _report(server.url, room_id, people, seconds, video_size, started, store)
        report.sfu = sfu_url
        report.sfu_metrics = sfu_during
        return report
    finally:
        for participant in people:
            if participant.process is not None and participant.process.returncode is None:
                participant.process.kill()
                await participant.process.wait()
        for pump in pumps:
            pump.cancel()


async def scrape_metrics(sfu_url: str) -> dict[str, float]:
    """The SFU's ``sfu_*`` samples (drops as ``sfu_drops:REASON``) and its process CPU seconds,
    and when they were read (``t``, monotonic)."""
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as http, http.get(f"{sfu_url}/metrics") as response:
        text = await response.text()
    values = {"t": time.monotonic()}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "process_cpu_seconds_total":
                values["cpu_s"] = sample.value
            elif sample.name.startswith("sfu_") and sample.name.endswith("_total"):
                reason = sample.labels.get("reason")
                name = sample.name.removesuffix("_total")
                values[f"{name}:{reason}" if reason else name] = sample.value
    return values


def _increase(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Each counter's increase between two scrapes, and the CPU share in between (%)."""
    seconds = after["t"] - before["t"]
    out = {
        key: value - before.get(key, 0.0)
        for key, value in after.items()
        if key not in ("t", "cpu_s")
    }
    if "cpu_s" in after and "cpu_s" in before and seconds > 0:
        out["cpu_percent"] = round(100 * (after["cpu_s"] - before["cpu_s"]) / seconds, 1)
    out["seconds"] = round(seconds, 1)
    return out


def _report(
    url: str,
    room_id: str,
    people: list[Participant],
    seconds: float,
    video_size: str,
    started: float,
    logs: Path,
) -> GroupDemoReport:
    names = {p.device: p.name for p in people}

    def named(values: dict[str, Any]) -> dict[str, Any]:
        return {names.get(device, device): value for device, value in values.items()}

    wall_start = time.time() - (time.monotonic() - started)
    all_setups = [s for p in people for s in p.setup.values()]
    cpu: dict[str, float] = {}
    memory: dict[str, dict[str, Any]] = {}
    for p in people:
        if len(p.samples) >= 2:
            (t0, first), (t1, last) = p.samples[0], p.samples[-1]
            cpu[p.name] = round(100 * (last["cpu_s"] - first["cpu_s"]) / (t1 - t0), 1)
            settled = max((q.fate_at or t0) - t0 for q in people) + WARM_UP / 2
            memory[p.name] = _memory([(t - t0, s) for t, s in p.samples], settled)
    return GroupDemoReport(
        homeserver=url,
        room_id=room_id,
        participants=len(people),
        seconds=seconds,
        video_size=video_size,
        devices={p.name: p.device for p in people},
        logs=str(logs),
        pair_setup_seconds={p.name: named(p.setup) for p in people},
        median_pair_setup_seconds=round(statistics.median(all_setups), 3) if all_setups else None,
        pair_calls_ended={
            p.name: [
                {**e, "peer": names.get(e["peer"], e["peer"]), "t": round(e["t"] - wall_start, 3)}
                for e in p.ended
            ]
            for p in people
        },
        frames_decoded={p.name: named(_last(p).get("decoded", {})) for p in people},
        membership={
            p.name: {
                "own_states": [[round(t - wall_start, 3), state] for t, state in p.own],
                "rejoins": max(0, sum(1 for _, state in p.own if state == "joining") - 1),
                "seen_joining": [
                    {"t": round(t - wall_start, 3), "member": names.get(d, d), "session": m}
                    for t, d, m in p.seen
                ],
                "seen_leaving": [
                    {"t": round(t - wall_start, 3), "member": names.get(d, d), "reason": r}
                    for t, d, r in p.left
                ],
                "late_delayed_leave_restarts": p.late_restarts,
            }
            for p in people
        },
        departures=_departures(people, wall_start),
        cpu_percent=cpu,
        memory=memory,
        frames_by_kind={p.name: named(_last(p).get("by_kind", {})) for p in people},
        frames_sent={
            p.name: {
                role: int(sent["frames_encrypted"])
                for role, sent in (p.final or {}).get("stats", {}).get("sent", {}).items()
            }
            for p in people
        },
    )


def _last(p: Participant) -> dict[str, Any]:
    """The participant's final report, or its last sample if it has none (it was killed)."""
    return p.final or (p.samples[-1][1] if p.samples else {})


def _memory(samples: list[tuple[float, dict[str, Any]]], settled: float) -> dict[str, Any]:
    """Samples and growth (seconds since the first sample); ``settled``: 30 s after the last
    departure, when no more pairs are made or closed (the steady state, if the call lasts)."""
    rss = [(round(t, 1), s["rss_mb"]) for t, s in samples]
    heap = [(round(t, 1), s["heap_mb"]) for t, s in samples]
    return {
        "rss_mb": [list(point) for point in rss],
        "heap_mb": [list(point) for point in heap],
        "rss_growth_mb_per_min": slope_per_minute([p for p in rss if p[0] >= WARM_UP]),
        "heap_growth_mb_per_min": slope_per_minute([p for p in heap if p[0] >= WARM_UP]),
        "rss_growth_mb_per_min_when_settled": slope_per_minute([p for p in rss if p[0] >= settled]),
    }


def _departures(people: list[Participant], wall_start: float) -> list[dict[str, Any]]:
    """Each departure: when each remaining member saw it, and each one's key rotation (its
    first new key after it saw the departure, and before it saw another one)."""
    gone = sorted((p for p in people if p.fate_at is not None), key=lambda p: p.fate_at or 0.0)
    out = []
    for departed in gone:
        at = departed.fate_at
        assert at is not None
        # Still in the call at the departure: those who stay, and those who go later.
        remaining = [p for p in people if p.fate_at is None or p.fate_at > at]
        rotations = {p.name: _rotation(p, departed, gone, remaining) for p in remaining}
        out.append(
            {
                "member": departed.name,
                "how": departed.fate,
                "at": round(at - wall_start, 3),
                "vanished_after": {
                    p.name: _after(p.saw_leave(departed.device, at), at) for p in remaining
                },
                "key_rotations": rotations,
            }
        )
    return out


def _rotation(
    sender: Participant,
    departed: Participant,
    gone: list[Participant],
    remaining: list[Participant],
) -> dict[str, Any] | None:
    at = departed.fate_at
    assert at is not None
    seen = sender.saw_leave(departed.device, at)
    if seen is None:
        return None
    later = [sender.saw_leave(p.device, p.fate_at or at) for p in gone if p is not departed]
    until = min((t for t in later if t is not None and t > seen), default=None)
    new = [(t, k) for t, k in sender.keys if t >= seen and (until is None or t < until)]
    if not new:
        return None
    t_use, index = new[0]
    decrypted: dict[str, float | None] = {}
    for receiver in remaining:
        if receiver is not sender:
            first = [t for t, k in receiver.rx_keys.get(sender.device, []) if k == index]
            decrypted[receiver.name] = _after(first[0] if first else None, at)
    return {
        "index": index,
        "in_use_after": round(t_use - at, 3),
        "decrypted_by_others_after": decrypted,
    }


def _after(t: float | None, at: float) -> float | None:
    return None if t is None else round(t - at, 3)


def report_json(report: GroupDemoReport) -> str:
    """The report as JSON."""
    return json.dumps(asdict(report), indent=2)


def _span(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "never"
    low, high = min(known), max(known)
    text = f"{low:.1f} s" if round(low, 1) == round(high, 1) else f"{low:.1f}-{high:.1f} s"
    missing = len(values) - len(known)
    return text + (f" ({missing} never)" if missing else "")


def report_text(report: GroupDemoReport) -> str:
    """The report for people."""
    ends = [e for ended in report.pair_calls_ended.values() for e in ended]
    retried = sum(1 for e in ends if e["retried"])
    lines = [
        f"Group call of {report.participants} through {report.homeserver}"
        f" ({report.seconds:.0f} s, {report.video_size} video)",
        f"  pair setup: median {report.median_pair_setup_seconds} s;"
        f" pair calls that failed and were retried: {retried}",
    ]
    churn = {n: m["rejoins"] for n, m in report.membership.items() if m["rejoins"]}
    late = [g for m in report.membership.values() for g in m["late_delayed_leave_restarts"]]
    if churn or late:
        lines.append(
            f"  membership churn (a stalled machine): rejoins {churn or 'none'};"
            f" delayed leaves restarted too late: {len(late)}"
        )
    for name, peers in report.frames_decoded.items():
        got = ", ".join(f"{peer} {n}" for peer, n in sorted(peers.items())) or "none"
        memory = report.memory.get(name, {})
        rss = memory.get("rss_mb") or [[0, None]]
        lines.append(
            f"  {name}: frames decrypted from {got}; CPU {report.cpu_percent.get(name)} %;"
            f" RSS {rss[0][1]} -> {rss[-1][1]} MB, after the first minute"
            f" {memory.get('rss_growth_mb_per_min')} MB/min"
            f" (heap {memory.get('heap_growth_mb_per_min')}; 30 s after the last departure"
            f" {memory.get('rss_growth_mb_per_min_when_settled')})"
        )
    for d in report.departures:
        rotations = [r for r in d["key_rotations"].values()]
        in_use = [None if r is None else r["in_use_after"] for r in rotations]
        decrypted = [
            t for r in rotations if r is not None for t in r["decrypted_by_others_after"].values()
        ]
        lines.append(
            f"  {d['member']} {d['how']} at {d['at']:.0f} s: gone from the others' view after"
            f" {_span(list(d['vanished_after'].values()))}; their new keys in use after"
            f" {_span(in_use)}, decrypted by the others after {_span(decrypted)}"
        )
    return "\n".join(lines)

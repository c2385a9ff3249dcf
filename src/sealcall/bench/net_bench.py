"""``sealcall net-bench``: one call across the network lab under loss and delay, measured.

Hosts A and B call each other through coturn on S (they cannot reach each other), with host A's
link impaired both ways (so each direction of the call crosses one impaired link): for each loss
level, frames sent and decoded each way per kind, the share decoded, video freezes (the longest
gap between decoded video frames, and the time spent in gaps over 200 ms) and the bitrate each
way; then how long the picture takes to come back after a one-second outage of A's link; and the
call setup time with A and B able to reach each other (direct) versus not (relayed: over
TURN/UDP; with the homeserver's URI list, UDP first; and from a host A without UDP, over
TURN/TCP), side by side. The same measurements serve the network tests (which assert what must
hold, not times).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .impair import PERFECT, Impairment
from .net_call import LabPeer, LabServers, connect_call
from .netlab import NetworkLab

KINDS = ("audio", "video")
# The receiver's loss counters reported per window (sealcall.media.LossCounters).
LOSS_FIGURES = (
    "frames_concealed",
    "frames_lost",
    "nacks_sent",
    "retransmissions_received",
    "plis_sent",
)


def _kind(sample: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = sample["kinds"].get(kind, {})
    return found


def _delta(after: dict[str, Any], before: dict[str, Any], key: str) -> int:
    return int(after.get(key, 0)) - int(before.get(key, 0))


def direction(
    sent: tuple[dict[str, Any], dict[str, Any]],
    received: tuple[dict[str, Any], dict[str, Any]],
    seconds: float,
) -> dict[str, Any]:
    """One direction of the call over a window: the sender's samples (before, after) and the
    receiver's (before, after the window, with ``since`` its start)."""
    report: dict[str, Any] = {}
    total_bytes = 0
    for kind in KINDS:
        before, after = _kind(received[0], kind), _kind(received[1], kind)
        frames_sent = int(sent[1]["sent"].get(kind, 0)) - int(sent[0]["sent"].get(kind, 0))
        decoded = _delta(after, before, "decoded")
        total_bytes += _delta(after, before, "bytes")
        report[kind] = {
            "sent": frames_sent,
            "received": _delta(after, before, "received"),
            "decrypted": _delta(after, before, "decrypted"),
            "decoded": decoded,
            "decoded_share": round(decoded / frames_sent, 3) if frames_sent else None,
            "dropped": after.get("dropped", {}),
            **{
                key: _delta(after.get("loss", {}), before.get("loss", {}), key)
                for key in LOSS_FIGURES
            },
        }
    window = _kind(received[1], "video").get("since", {})
    report["video"]["max_gap_s"] = window.get("max_gap_s")
    report["video"]["frozen_s"] = window.get("frozen_s")
    report["kbit_s"] = round(total_bytes * 8 / seconds / 1000, 1)
    return report


async def measure(a: LabPeer, b: LabPeer, seconds: float) -> dict[str, Any]:
    """Both directions of the call between ``a`` and ``b`` over ``seconds`` from now."""
    start = time.time()
    before = await asyncio.gather(a.sample(), b.sample())
    await asyncio.sleep(seconds)
    after = await asyncio.gather(a.sample(start), b.sample(start))
    elapsed = time.time() - start
    return {
        "a_to_b": direction((before[0], after[0]), (before[1], after[1]), elapsed),
        "b_to_a": direction((before[1], after[1]), (before[0], after[0]), elapsed),
        "totals": {"a": after[0], "b": after[1]},
    }


async def picture_back(
    lab: NetworkLab,
    a: LabPeer,
    b: LabPeer,
    outage_s: float,
    timeout: float = 20.0,
    settle_s: float = 5.0,
) -> dict[str, Any]:
    """Cut A's link for ``outage_s``; the seconds from its return until each side decodes a
    new video frame (None: not within ``timeout``), and how long each side's video was frozen
    (gaps over 200 ms) in the ``settle_s`` seconds after the return."""
    lab.set_outage("a", True)
    await asyncio.sleep(outage_s)
    lab.set_outage("a", False)
    back = time.time()
    result: dict[str, float | None] = {"a": None, "b": None}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and None in result.values():
        for name, peer in (("a", a), ("b", b)):
            if result[name] is None:
                sample = await peer.sample(back)
                result[name] = _kind(sample, "video").get("since", {}).get("first_s")
        await asyncio.sleep(0.1)
    await asyncio.sleep(max(0.0, back + settle_s - time.time()))
    frozen = {}
    for name, peer in (("a", a), ("b", b)):
        sample = await peer.sample(back)
        frozen[f"frozen_at_{name}_s"] = _kind(sample, "video").get("since", {}).get("frozen_s")
    return {
        **{f"to_{name}": value for name, value in result.items()},
        "settle_s": settle_s,
        **frozen,
    }


async def _peers(servers: LabServers, **options: Any) -> tuple[LabPeer, LabPeer]:
    a = LabPeer(servers, "a", await servers.register("bencha"), **options)
    b = LabPeer(servers, "b", await servers.register("benchb"), **options)
    await a.start()
    await b.start()
    return a, b


# Setup-time modes: (A and B reach each other, the TURN URIs given to the peers, A's UDP blocked).
# "relayed" gives only the UDP URI (what aiortc uses first); "relayed_all" the homeserver's list
# as it is (UDP first, then TCP: the client asks first whether UDP reaches the TURN server);
# "no_udp" the same list from a host A whose link drops all UDP (TURN over TCP).
SETUP_MODES: dict[str, tuple[bool, str | None, bool]] = {
    "direct": (True, None, False),
    "relayed": (False, "udp", False),
    "relayed_all": (False, "all", False),
    "no_udp": (False, "all", True),
}
UDP = 17  # IP protocol number


async def setup_time(servers: LabServers, mode: str) -> dict[str, Any]:
    """Place one call in setup mode ``mode`` (:data:`SETUP_MODES`): direct (A and B reach each
    other; no TURN offered: with TURN, aioice's aggressive nomination often settles on a relayed
    pair even then) or relayed (they cannot; TURN): its setup time (from placing the call to
    connected, at the caller) and the candidate pair it used."""
    direct, turn, no_udp = SETUP_MODES[mode]
    servers.lab.set_direct(direct)
    servers.lab.block_protocol("a", UDP, no_udp)
    a, b = await _peers(servers, turn=turn)
    try:
        await connect_call(a, b)
        sample = await a.sample()
    finally:
        await a.stop()
        await b.stop()
        servers.lab.set_direct(False)
        servers.lab.block_protocol("a", UDP, False)
    return {"setup_s": sample["setup_s"], "pair": sample["pair"]}


async def run(
    work_dir: Path,
    *,
    seconds: float = 10.0,
    losses: Sequence[float] = (0.0, 0.05, 0.20),
    delay_ms: float = 100.0,
    jitter_ms: float = 30.0,
    outage_s: float = 1.0,
    fps: float = 15.0,
    setup_calls: int = 2,
    reorder: bool = True,
) -> dict[str, Any]:
    """The whole benchmark in a fresh lab; the report (JSON-ready)."""
    async with LabServers(work_dir) as servers:
        lab = servers.lab
        # Alternated, so that neither mode gets the homeserver's warm-up alone.
        calls: dict[str, list[dict[str, Any]]] = {mode: [] for mode in SETUP_MODES}
        for _ in range(setup_calls):
            for mode in calls:
                calls[mode].append(await setup_time(servers, mode))
        setup = {
            mode: {
                "setup_s": round(statistics.median(c["setup_s"] for c in made), 3),
                "calls_s": [c["setup_s"] for c in made],
                "pair": made[-1]["pair"],
            }
            for mode, made in calls.items()
        }
        a, b = await _peers(servers, fps=fps)
        try:
            await connect_call(a, b)
            await asyncio.sleep(1.0)  # past the first key frame
            runs = []
            for loss in losses:
                impairment = Impairment(
                    loss=loss, delay_ms=delay_ms, jitter_ms=jitter_ms, keep_order=not reorder
                )
                lab.impair("a", impairment)
                measured = await measure(a, b, seconds)
                runs.append(
                    {
                        "loss": loss,
                        "delay_ms": delay_ms,
                        "jitter_ms": jitter_ms,
                        "a_to_b": measured["a_to_b"],
                        "b_to_a": measured["b_to_a"],
                        "pair": measured["totals"]["a"]["pair"],
                    }
                )
            lab.impair("a", PERFECT)
            recovery = await picture_back(lab, a, b, outage_s)
            states = {"a": a.states(), "b": b.states()}
        finally:
            await a.stop()
            await b.stop()
        return {
            "benchmark": "net",
            "seconds_per_run": seconds,
            "impaired": "host A's link, both ways (each direction crosses it once)",
            "reordered": reorder,
            "setup": setup,
            "runs": runs,
            "picture_back_after_outage": {"outage_s": outage_s, **recovery},
            "states": states,
            "router": lab.counters(),
        }


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f} %"


def report_text(report: dict[str, Any]) -> str:
    """The report as a table."""
    lines = [
        "Call A -> B through TURN; host A's link impaired both ways "
        f"({report['seconds_per_run']:.0f} s per loss level; jitter "
        f"{'reorders' if report['reordered'] else 'keeps the order of'} packets)",
        f"{'loss':>5} {'way':<7} {'audio':>7} {'video':>7} {'max gap':>8} {'frozen':>7} "
        f"{'kbit/s':>7} {'conceal':>7} {'NACKs':>6} {'PLIs':>5}",
    ]
    for run_ in report["runs"]:
        for way in ("a_to_b", "b_to_a"):
            d = run_[way]
            lines.append(
                f"{run_['loss'] * 100:>4.0f}% {way.replace('_to_', '->'):<7} "
                f"{_share(d['audio']['decoded_share']):>7} {_share(d['video']['decoded_share']):>7}"
                f" {d['video']['max_gap_s'] or 0:>7.2f}s {d['video']['frozen_s'] or 0:>6.2f}s"
                f" {d['kbit_s']:>7.0f} {d['audio']['frames_concealed']:>7}"
                f" {d['video']['nacks_sent']:>6} {d['video']['plis_sent']:>5}"
            )
    back = report["picture_back_after_outage"]

    def seconds(value: float | None) -> str:
        return "never" if value is None else f"{value:.2f} s"

    lines.append(
        f"Picture back after a {back['outage_s']:.0f} s outage: at A {seconds(back['to_a'])}, "
        f"at B {seconds(back['to_b'])}; frozen in the {back['settle_s']:.0f} s after: "
        f"at A {seconds(back['frozen_at_a_s'])}, at B {seconds(back['frozen_at_b_s'])}"
    )
    for mode in SETUP_MODES:
        setup = report["setup"][mode]
        pair = setup["pair"] or {}
        lines.append(
            f"Setup {mode:<11} {seconds(setup['setup_s'])} (median of {len(setup['calls_s'])}; "
            f"pair {pair.get('local')} -> {pair.get('remote')})"
        )
    return "\n".join(lines)

"""The SFU's Prometheus metrics (``GET /metrics``), read from its state at scrape time.

Nothing is counted on the forwarding path for this: the forwarder already keeps its counters
(``ForwarderStats``), and a scrape sums them over the rooms plus the totals of rooms that have
closed since (so counters never go back). Each server has a registry of its own (tests run
several servers in one process); the process collector adds ``process_cpu_seconds_total`` and
memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

__all__ = ["COUNTERS", "MetricsSnapshot", "SfuMetrics"]

COUNTERS = {
    "forwarded_packets": "RTP packets forwarded to subscribers",
    "forwarded_bytes": "bytes of RTP forwarded to subscribers",
    "layer_switches": "video layer switches of subscribers (at a key frame)",
    "keyframe_requests": "key-frame requests (PLI) sent to publishers",
    "nacks_served": "packets retransmitted in answer to NACKs",
}


@dataclass
class MetricsSnapshot:
    """What a scrape reports: counters (``COUNTERS`` keys), drops by reason, members per room."""

    counters: dict[str, int] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    participants: dict[str, int] = field(default_factory=dict)

    def add(self, counters: dict[str, int], drops: dict[str, int]) -> None:
        """Add another source's counters and drops to these."""
        for key, value in counters.items():
            self.counters[key] = self.counters.get(key, 0) + value
        for key, value in drops.items():
            self.drops[key] = self.drops.get(key, 0) + value


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: Callable[[], MetricsSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        for key, doc in COUNTERS.items():
            yield CounterMetricFamily(f"sfu_{key}", doc, value=snap.counters.get(key, 0))
        drops = CounterMetricFamily(
            "sfu_drops", "inputs dropped and counted, by reason", labels=["reason"]
        )
        for reason, value in sorted(snap.drops.items()):
            drops.add_metric([reason], value)
        yield drops
        members = GaugeMetricFamily(
            "sfu_participants", "participants connected, per room", labels=["room"]
        )
        for room, value in sorted(snap.participants.items()):
            members.add_metric([room], value)
        yield members
        yield GaugeMetricFamily("sfu_rooms", "rooms open", value=len(snap.participants))


class SfuMetrics:
    """One server's metrics: ``snapshot()`` is called at each scrape."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, snapshot: Callable[[], MetricsSnapshot]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SnapshotCollector(snapshot))
        ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        """The exposition text of every metric."""
        return generate_latest(self.registry)

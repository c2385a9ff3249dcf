"""``sealcall app-soak``: a short run over the real stack (Synapse, two CallApps and page
servers, two pages in Debian's Chromium) gives a full report with frames flowing each way in
every sample; the report names a stall; a machine without the browser gets a clear message.
No figure is asserted: the README gives them."""

import dataclasses
import itertools
from typing import Any

import pytest

from sealcall.bench import app_soak
from sealcall.bench.app_soak import FRAME_FIELDS, AppSoakError, Sample, report, run
from sealcall.bench.chromium import missing
from sealcall.cli import main

WARMUP = 8.0


async def test_a_short_soak_reports_every_figure_with_frames_flowing_each_way(
    synapse: Any,
) -> None:
    if (reason := missing()) is not None:
        pytest.fail(reason)
    seen: list[Sample] = []
    result = await run(0.3, interval=3.0, warmup=WARMUP, server=synapse, on_sample=seen.append)

    samples = result["samples"]
    assert isinstance(samples, list)
    assert samples == [dataclasses.asdict(s) for s in seen]
    after = [s for s in seen if s.seconds >= WARMUP]
    assert len(after) >= 3, [s.seconds for s in seen]
    for earlier, later in itertools.pairwise(after):
        for way in FRAME_FIELDS:
            assert getattr(later, way) > getattr(earlier, way), (way, earlier, later)
    assert all(s.call_states == "connected/connected" for s in seen), seen
    assert result["media_flowing_throughout"] is True
    assert result["media_stalls"] == []
    assert result["call_states_at_end"] == "connected/connected"

    # Every figure was measured: memory of this process, of both pages and their workers, and
    # of the Chromium processes, and each has its growth per minute.
    for s in seen:
        assert s.python_rss_mb > 0
        assert s.python_heap_mb > 0
        assert s.alice_js_heap_mb > 0
        assert s.bob_js_heap_mb > 0
        assert s.alice_worker_heap_mb > 0
        assert s.bob_worker_heap_mb > 0
        assert s.chromium_rss_mb > s.chromium_renderer_rss_mb > 0
        assert s.chromium_processes >= 2
    growth = result["growth_per_minute"]
    assert isinstance(growth, dict)
    assert set(growth) == {
        "python_rss_mb",
        "python_heap_mb",
        "python_cpu_seconds",
        "alice_js_heap_mb",
        "bob_js_heap_mb",
        "alice_worker_heap_mb",
        "bob_worker_heap_mb",
        "chromium_rss_mb",
        "chromium_renderer_rss_mb",
        "chromium_cpu_seconds",
    }
    assert all(isinstance(v, float) for v in growth.values()), growth
    rates = result["frames_per_second"]
    assert isinstance(rates, dict)
    assert set(rates) == set(FRAME_FIELDS)
    assert all(v is not None and v > 0 for v in rates.values()), rates


def _sample(seconds: float, video_b_to_a: int, states: str = "connected/connected") -> Sample:
    n = int(seconds * 10)
    return Sample(
        seconds=seconds,
        python_rss_mb=100.0,
        python_heap_mb=2.0,
        python_cpu_seconds=seconds / 10,
        alice_js_heap_mb=2.0,
        bob_js_heap_mb=2.0,
        alice_worker_heap_mb=0.5,
        bob_worker_heap_mb=0.5,
        chromium_rss_mb=1500.0,
        chromium_renderer_rss_mb=500.0,
        chromium_cpu_seconds=seconds,
        chromium_processes=8,
        video_alice_to_bob=n,
        audio_alice_to_bob=n,
        video_bob_to_alice=video_b_to_a,
        audio_bob_to_alice=n,
        call_states=states,
    )


def test_the_report_names_a_stalled_way() -> None:
    samples = [_sample(0, 0), _sample(5, 50), _sample(10, 50), _sample(15, 60)]
    result = report(samples, 0.25, 5.0, 0.0)
    assert result["media_flowing_throughout"] is False
    assert result["media_stalls"] == [{"seconds": 10, "stalled": ["video_bob_to_alice"]}]


def test_without_the_browser_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(app_soak, "missing", lambda: "the playwright package")
    assert main(["app-soak", "--minutes", "0.1"]) == 1
    error = capsys.readouterr().err
    assert "pip install -e '.[dev]'" in error
    assert "apt-get install chromium" in error


async def test_run_refuses_before_starting_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_soak, "missing", lambda: "Debian's chromium")
    with pytest.raises(AppSoakError, match="apt-get install chromium"):
        await run(0.1, server=None)

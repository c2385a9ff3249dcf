"""``sealcall sfu-bench``: the same load through the sealcall SFU and Janus, side by side (short
here: the figures themselves belong to the README, never to a test)."""

import json
import subprocess
import sys

import pytest

from sealcall.bench.sfu_load import parse_loads, rss_trend


def sfu_bench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``sealcall sfu-bench ARGS`` in a child process, its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "sealcall", "sfu-bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_loads_parse_and_bad_ones_are_refused() -> None:
    assert parse_loads("2x4, 4x8") == [(2, 4), (4, 8)]
    for bad in ("2", "0x3", "2x", "axb", "2x-1"):
        with pytest.raises(ValueError, match="load"):
            parse_loads(bad)


def test_both_sfus_forward_the_same_load() -> None:
    result = sfu_bench("--json", "--seconds", "2", "--loads", "2x1", timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    (case,) = report["loads"]
    for name in ("sealcall", "janus"):
        load = case[name]
        assert (load["publishers"], load["subscribers"]) == (2, 1)
        assert load["forwarded_packets"] > 0.5 * load["expected_packets"] > 0, load
        # Both forward the same packets: each publisher also receives the other one (Janus
        # through a second connection), about what the one subscriber receives in all.
        assert load["publisher_packets"] > 0.5 * load["expected_packets"], load
        assert load["cpu_us_per_packet"] > 0
        assert load["cpu_us_per_subscriber_packet"] >= load["cpu_us_per_packet"]
    assert case["cpu_ratio_sealcall_to_janus"] > 0
    bad = sfu_bench("--loads", "nope", timeout=60)
    assert bad.returncode == 2
    assert "--loads" in bad.stderr


def test_rss_trend_tells_flat_from_growing_after_the_first_minute() -> None:
    mb = 1_000_000
    flat = [(0.0, 80 * mb), (30.0, 100 * mb)] + [(60.0 + 30 * i, 100 * mb) for i in range(10)]
    trend = rss_trend(flat, after=60)
    assert trend is not None
    assert trend.flat
    assert trend.samples == 10
    assert trend.spread_bytes == 0
    assert trend.rss_at_after_bytes == 100 * mb
    assert trend.slope_bytes_per_minute == 0
    growing = [(60.0 + 30 * i, (100 + 2 * i) * mb) for i in range(10)]  # 4 MB a minute
    trend = rss_trend(growing, after=60)
    assert trend is not None
    assert not trend.flat
    assert trend.slope_bytes_per_minute == 4 * mb
    assert trend.spread_bytes == 18 * mb
    assert rss_trend([(0.0, mb), (30.0, mb), (61.0, mb)], after=60) is None  # one sample after


def test_soak_samples_the_sfu_rss_during_the_load() -> None:
    result = sfu_bench(
        "--json",
        "--soak-seconds",
        "3",
        "--rss-every",
        "1",
        "--flat-after",
        "1",
        "--loads",
        "1x1",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    load = json.loads(result.stdout)["soak"]
    assert (load["publishers"], load["subscribers"], load["seconds"]) == (1, 1, 3)
    assert load["forwarded_packets"] > 0
    times = [t for t, _ in load["rss_samples"]]
    assert len(times) == 4
    assert times[0] == 0
    assert times == sorted(times)
    assert times[-1] >= 3
    assert all(rss > 0 for _, rss in load["rss_samples"])
    trend = load["rss_trend"]
    assert trend["after_seconds"] == 1
    assert trend["samples"] == 3
    assert trend["rss_last_bytes"] == load["rss_samples"][-1][1]

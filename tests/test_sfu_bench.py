"""``sealcall sfu-bench``: the same load through the sealcall SFU and Janus, side by side (short
here: the figures themselves belong to the README, never to a test)."""

import json
import subprocess
import sys

import pytest

from sealcall.bench.sfu_load import parse_loads


def test_loads_parse_and_bad_ones_are_refused() -> None:
    assert parse_loads("2x4, 4x8") == [(2, 4), (4, 8)]
    for bad in ("2", "0x3", "2x", "axb", "2x-1"):
        with pytest.raises(ValueError, match="load"):
            parse_loads(bad)


def test_both_sfus_forward_the_same_load() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sealcall",
            "sfu-bench",
            "--json",
            "--seconds",
            "2",
            "--loads",
            "1x2",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    (case,) = report["loads"]
    for name in ("sealcall", "janus"):
        load = case[name]
        assert (load["publishers"], load["subscribers"]) == (1, 2)
        assert load["forwarded_packets"] > 0.5 * load["expected_packets"] > 0, load
        assert load["cpu_us_per_packet"] > 0
    assert case["cpu_ratio_sealcall_to_janus"] > 0
    bad = subprocess.run(
        [sys.executable, "-m", "sealcall", "sfu-bench", "--loads", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "--loads" in bad.stderr

"""``sealcall mesh-bench``: one participant's CPU in a 4-party mesh next to a 1:1 call."""

import json
import subprocess
import sys

import pytest

from sealcall.cli import main

SMALL = ("--width", "320", "--height", "240")


def test_mesh_bench_json_measures_a_one_to_one_call_and_four_party_meshes() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sealcall",
            "mesh-bench",
            "--json",
            "--seconds",
            "2",
            "--compare",
            *SMALL,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=180,
    ).stdout
    report = json.loads(out)
    assert report["benchmark"] == "mesh"
    one, mesh = report["one_to_one"], report["mesh_4"]
    per_connection = report["mesh_4_encoder_per_connection"]
    assert one["peers"] == 1
    assert mesh["peers"] == 3
    assert per_connection["peers"] == 3
    assert one["encode_once"]
    assert mesh["encode_once"]
    assert not per_connection["encode_once"]
    for case in (one, mesh, per_connection):
        assert case["cpu_seconds"] > 0
        assert case["video_frames_encoded"] > 10
        # Frames flowed from every peer, and each frame was encoded once for all of them.
        assert len(case["video_frames_decoded"]) == case["peers"]
        assert all(n > 10 for n in case["video_frames_decoded"])
        assert all(n > 20 for n in case["audio_frames_decoded"])
        assert case["frames_decrypted_total"] >= sum(case["video_frames_decoded"])
        assert case["video_fps_sent"] > 0
        assert case["video_fps_received"] > 0
    assert isinstance(report["full_rate"], bool)
    assert report["ratio"] == pytest.approx(
        mesh["cpu_per_second"] / one["cpu_per_second"], rel=0.01
    )
    assert report["ratio_encoder_per_connection"] == pytest.approx(
        per_connection["cpu_per_second"] / one["cpu_per_second"], rel=0.01
    )


def test_mesh_bench_refuses_a_stretch_of_no_time() -> None:
    with pytest.raises(SystemExit):
        main(["mesh-bench", "--seconds", "0"])

"""The ``sealcall`` command line, run as a user would run it."""

import json
import subprocess
import sys

import pytest

from sealcall.cli import main


def test_sframe_bench_json_reports_every_codec_and_size() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sealcall",
            "sframe-bench",
            "--json",
            "--number",
            "20",
            "--rounds",
            "1",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    report = json.loads(out)
    rows = report["rows"]
    assert {(r["codec"], r["frame_bytes"]) for r in rows} == {
        (c, n) for c in ("opus", "vp8", "h264") for n in (100, 20000)
    }
    for r in rows:
        assert r["protect_us"] > 0
        assert r["aesgcm_encrypt_us"] > 0
        assert r["protect_ratio"] == pytest.approx(
            r["protect_us"] / r["aesgcm_encrypt_us"], rel=0.05
        )
        assert r["unprotect_ratio"] == pytest.approx(
            r["unprotect_us"] / r["aesgcm_decrypt_us"], rel=0.05
        )


def test_sframe_bench_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sframe-bench", "--number", "5", "--rounds", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Frame protection")
    assert len(lines) == 2 + 6


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sframe-bench", "--number", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["no-such-command"])


def test_media_bench_json_compares_plain_and_encrypted_calls() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sealcall",
            "media-bench",
            "--json",
            "--seconds",
            "1",
            "--rounds",
            "1",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    report = json.loads(out)
    runs = report["runs"]
    assert [r["encrypted"] for r in runs] == [False, True]
    for r in runs:
        assert r["cpu_seconds"] > 0
        assert r["video_frames_decoded"] > 10
        assert r["audio_frames_decoded"] > 20
    assert report["ratio"] == pytest.approx(
        report["encrypted_cpu_per_media_second"] / report["plain_cpu_per_media_second"], rel=0.01
    )
    assert main(["media-bench", "--seconds", "0"]) == 2

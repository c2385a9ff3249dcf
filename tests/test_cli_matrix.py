"""The Matrix commands of the CLI, run as a user runs them."""

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from sealcall.homeserver import Homeserver, free_port

CLI = [sys.executable, "-m", "sealcall"]


def run(*args: str, timeout: float = 180, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )  # type: ignore[call-overload]


def test_demo_json_reports_setup_time_and_frames(tmp_path: Path) -> None:
    result = run("demo", "--json", "--data-dir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["encrypted_room"] is True
    assert report["media_encrypted"] is True
    assert 0 < report["setup_seconds"] < 10
    for direction in ("alice_to_bob", "bob_to_alice"):
        stats = report[direction]
        assert stats["frames_decrypted"] > 50
        assert stats["frames_dropped"] == 0
        assert stats["frames_sent"] >= stats["frames_decrypted"]
    assert report["steps"][-1] == "alice hangs up"
    assert len(report["history"]) == 1
    assert "video  answered" in report["history"][0]
    # --data-dir keeps the homeserver's folder for inspection.
    assert (tmp_path / "demo" / "homeserver" / "homeserver.db").exists()
    assert (tmp_path / "demo" / "homeserver" / "homeserver.log").exists()


@pytest.mark.usefixtures("synapse")
async def test_call_answer_and_history(synapse: Homeserver, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:6]
    caller = await synapse.register(f"cli-alice{suffix}", "pw-alice")
    callee = await synapse.register(f"cli-bob{suffix}", "pw-bob")
    common = ["--homeserver", synapse.url, "--loopback"]
    env = {**os.environ, "SEALCALL_PASSWORD": "pw-bob"}
    answer = subprocess.Popen(
        [
            *CLI,
            "answer",
            "--auto",
            "--timeout",
            "90",
            "--user",
            callee.user_id,
            "--store",
            str(tmp_path / "bob"),
            *common,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        result = run(
            "call",
            callee.user_id,
            "--video",
            "--duration",
            "2",
            "--user",
            caller.user_id,
            "--password",
            "pw-alice",
            "--store",
            str(tmp_path / "alice"),
            "--record",
            str(tmp_path / "received.mkv"),
            *common,
        )
        out, err = answer.communicate(timeout=60)
    finally:
        answer.kill()
    assert result.returncode == 0, (result.stdout, result.stderr[-2000:], out, err[-3000:])
    assert "connected" in result.stdout
    assert answer.returncode == 0, err[-2000:]
    assert f"incoming video call from {caller.user_id}" in out
    assert (tmp_path / "received.mkv").stat().st_size > 1000

    # History from the room, read by the caller, logged in from its saved store this time.
    room = next(line.split()[-1] for line in result.stdout.splitlines() if line.startswith("room "))
    listing = run("history", room, "--store", str(tmp_path / "alice"), "--homeserver", synapse.url)
    assert listing.returncode == 0, listing.stderr[-2000:]
    assert f"{caller.user_id} -> {callee.user_id}  video  answered" in listing.stdout


def test_homeserver_up_add_user_down(tmp_path: Path) -> None:
    data = tmp_path / "hs"
    port = str(free_port())
    up = run("homeserver", "up", "--data-dir", str(data), "--port", port)
    try:
        assert up.returncode == 0, up.stderr[-2000:]
        assert f"http://127.0.0.1:{port}" in up.stdout
        added = run("homeserver", "add-user", "carol", "--password", "pw", "--data-dir", str(data))
        assert added.returncode == 0, added.stderr
        assert "@carol:localhost" in added.stdout
        taken = run("homeserver", "up", "--data-dir", str(tmp_path / "other"), "--port", port)
        assert taken.returncode == 1
        assert "already in use" in taken.stderr
        # urllib asks the server to close the connection: its side is left in TIME_WAIT.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_matrix/client/versions") as r:
            assert r.status == 200
    finally:
        down = run("homeserver", "down", "--data-dir", str(data))
    assert down.returncode == 0
    assert "stopped" in down.stdout
    # Right after `down`, the same port is free again; the folder is kept and a second start
    # reuses it and its accounts.
    again = run("homeserver", "up", "--data-dir", str(data), "--port", port)
    try:
        assert again.returncode == 0, again.stderr[-2000:]
        re_add = run("homeserver", "add-user", "carol", "--password", "pw", "--data-dir", str(data))
        assert "@carol:localhost" in re_add.stdout
    finally:
        run("homeserver", "down", "--data-dir", str(data))


@pytest.mark.usefixtures("synapse")
async def test_demo_against_a_given_homeserver(synapse: Homeserver) -> None:
    suffix = uuid.uuid4().hex[:6]
    a = await synapse.register(f"demo-a{suffix}", "pw-a")
    b = await synapse.register(f"demo-b{suffix}", "pw-b")
    result = run(
        "demo",
        "--json",
        "--homeserver",
        synapse.url,
        "--alice",
        f"{a.user_id}=pw-a",
        "--bob",
        f"{b.user_id}=pw-b",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["homeserver"] == synapse.url
    assert report["alice_to_bob"]["frames_decrypted"] > 50
    missing = run("demo", "--homeserver", synapse.url)
    assert missing.returncode == 2
    assert "--alice and --bob" in missing.stderr


def test_media_file_feeds_the_call_tracks(tmp_path: Path) -> None:
    import argparse
    import asyncio
    import fractions

    import av
    import numpy as np

    from sealcall.cli.options import local_media

    path = tmp_path / "clip.mkv"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libvpx", rate=30)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        audio = container.add_stream("libopus", rate=48000)
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(
                np.full((120, 160, 3), i * 8, np.uint8), format="rgb24"
            )
            frame.pts, frame.time_base = i, fractions.Fraction(1, 30)
            container.mux(video.encode(frame))
        for i in range(50):
            samples = av.AudioFrame.from_ndarray(
                np.zeros((1, 960 * 2), np.int16), format="s16", layout="stereo"
            )
            samples.sample_rate, samples.pts = 48000, i * 960
            container.mux(audio.encode(samples))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))

    media = local_media(argparse.Namespace(media=str(path)))

    async def first_frames() -> tuple[object, object]:
        mic, camera = media.microphone(), media.camera()
        try:
            return await mic.recv(), await camera.recv()
        finally:
            mic.stop()
            camera.stop()

    sound, picture = asyncio.run(first_frames())
    assert isinstance(sound, av.AudioFrame)
    assert isinstance(picture, av.VideoFrame)
    assert (picture.width, picture.height) == (160, 120)

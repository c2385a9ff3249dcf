"""The README's runnable example runs and reports a working encrypted call."""

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def run_example(name: str) -> str:
    """Run ``examples/<name>`` as a user would; return what it printed."""
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout


def test_encrypted_call_example() -> None:
    out = run_example("encrypted_call.py")
    decoded = dict(re.findall(r"bob decoded\s+(\w+)\s+(\d+) frames", out))
    assert int(decoded["audio"]) > 100
    assert int(decoded["video"]) > 50
    assert re.findall(r"(\d+) dropped", out) == ["0", "0"]


def test_voip_call_example() -> None:
    out = run_example("voip_call.py")
    assert "bob: incoming video call from @alice:example.org" in out
    assert "alice: connecting -> connected" in out
    assert "bob: receiving m.usermedia video" in out
    assert re.search(
        r"alice: history: outgoing video call, answered, [\d.]+ s, encrypted=True", out
    )
    assert re.search(r"bob: history: incoming video call, answered, [\d.]+ s, encrypted=True", out)

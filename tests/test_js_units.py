"""The JavaScript unit tests (``node --test tests/js/``, Node 20), run as part of the pytest suite.

They check the web client's SFrame module against every RFC 9605 vector, as
tests/test_rfc9605_vectors.py does for the Python side.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is not on PATH (.ci/run installs nodejs)")
def test_node_unit_tests_pass() -> None:
    assert NODE is not None
    # The files by name: Node 20 takes a folder, Node 22 reads its arguments as globs.
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "js").glob("*.test.mjs"))
    assert files, "no JavaScript test files in tests/js/"
    result = subprocess.run(
        [NODE, "--test", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # The runner found and ran the tests: an empty folder would also exit 0.
    assert "# fail 0" in result.stdout
    assert "# pass 0" not in result.stdout

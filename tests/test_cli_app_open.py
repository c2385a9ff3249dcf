"""``sealcall app`` opens its page without putting the page's secret on a command line (any
local user reads those, /proc/PID/cmdline): the browser gets a private file that forwards."""

import stat
from pathlib import Path

from sealcall.cli.app import open_page

SECRET = "s3cr3t-Of-This-Launch_0123456789abcdefghijklmnopq"
URL = f"http://127.0.0.1:8123/{SECRET}/"


def test_the_browser_is_given_a_private_file_that_forwards_to_the_page(tmp_path: Path) -> None:
    opened: list[str] = []
    forward = open_page(URL, tmp_path / "store", opened.append)
    assert len(opened) == 1
    assert SECRET not in opened[0]
    assert opened[0] == forward.as_uri()
    assert stat.S_IMODE(forward.stat().st_mode) == 0o600
    assert f'content="0;url={URL}"' in forward.read_text()

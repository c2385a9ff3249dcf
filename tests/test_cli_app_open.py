"""``sealcall app`` opens its page without putting the page's secret on a command line (any
local user reads those, /proc/PID/cmdline): the browser gets a private file that forwards."""

import stat
from pathlib import Path

import pytest

from sealcall.cli import main
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


def test_an_sfu_url_the_page_could_not_open_is_refused_before_login(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad in ("ftp://sfu.example", "http://user:pw@sfu.example", "sfu.example:8443"):
        # No homeserver answers at this address: a refusal comes before any login.
        argv = ["app", "--sfu", bad, "--homeserver", "http://127.0.0.1:9", "--user", "@a:b"]
        assert main([*argv, "--password", "x", "--store", str(tmp_path)]) == 2
        assert "--sfu must be http(s)://host[:port][/path]" in capsys.readouterr().err

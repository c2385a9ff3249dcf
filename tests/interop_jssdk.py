"""A matrix-js-sdk client in headless Chromium, for the interop tests.

The npm packages (``tests/interop/package.json``, pinned by its lock file) are bundled at test
time with esbuild into a temporary folder, next to the harness page and the crypto wasm, and
served from 127.0.0.1. Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright.
"""

import asyncio
import collections
import functools
import http.server
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from sealcall.bench.chromium import CHROMIUM, CHROMIUM_ARGS  # noqa: F401 - tests import it here

INTEROP = Path(__file__).parent / "interop"
MODULES = INTEROP / "node_modules"
WASM = MODULES / "@matrix-org/matrix-sdk-crypto-wasm/pkg/matrix_sdk_crypto_wasm_bg.wasm"


def missing() -> str | None:
    """What the interop harness lacks on this machine (None: all there). The pinned npm
    packages are installed here when npm is present, so the README's test command needs no
    step of its own for them."""
    if not (MODULES / ".bin/esbuild").exists() and shutil.which("npm"):
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=INTEROP, check=False
        )
    if not (MODULES / ".bin/esbuild").exists():
        return f"npm packages: run `npm ci` in {INTEROP}"
    if not CHROMIUM.exists():
        return "Debian's chromium: apt-get install chromium"
    return None


def build(out: Path) -> Path:
    """Bundle js-sdk and copy the harness page and the crypto wasm into ``out``."""
    subprocess.run(
        [
            str(MODULES / ".bin/esbuild"),
            str(INTEROP / "entry.js"),
            "--bundle",
            "--format=esm",
            "--platform=browser",
            "--log-level=warning",
            f"--outfile={out / 'jssdk.js'}",
        ],
        check=True,
    )
    for name in ("index.html", "harness.js"):
        shutil.copy(INTEROP / name, out / name)
    shutil.copy(WASM, out / WASM.name)
    return out


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class StaticServer:
    """A local HTTP server for one folder, on 127.0.0.1, in a thread."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_Quiet, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class JsSdk:
    """One js-sdk client in a browser page: calls ``window.H`` (harness.js) and waits on it."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.user_id = ""
        self.console: collections.deque[str] = collections.deque(maxlen=200)  # the last lines
        page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda err: self.console.append(f"pageerror: {err}"))

    async def call(self, method: str, *args: Any) -> Any:
        return await self.page.evaluate("([m, args]) => window.H[m](...args)", [method, list(args)])

    async def start(self, base_url: str, user_id: str, password: str) -> None:
        await self.page.wait_for_function("() => window.H !== undefined")
        info = await self.call("start", base_url, user_id, password)
        self.user_id = info["userId"]

    async def record(self, call_id: str) -> dict[str, Any]:
        rec = await self.call("record", call_id)
        assert rec is not None, call_id
        return rec  # type: ignore[no-any-return]

    async def until(self, what: str, predicate: Any, timeout: float = 15.0) -> Any:
        """Poll an async ``predicate()`` until it returns a truthy value; return that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = await predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what} (js-sdk)")
            await asyncio.sleep(0.05)

    async def state(self, call_id: str) -> str:
        return str(await self.call("state", call_id))

    async def incoming(self, call_id: str | None = None, timeout: float = 15.0) -> str:
        """The id of a call ringing on the js-sdk side (``call_id`` or any new one)."""

        async def found() -> str | None:
            for rec in await self.call("incoming"):
                if rec["states"][-1] == "ringing" and call_id in (None, rec["callId"]):
                    return str(rec["callId"])
            return None

        return str(await self.until("an incoming call", found, timeout))

"""An embedded Matrix homeserver: Synapse from its PyPI package, SQLite, bound to 127.0.0.1.

(Or to another address, e.g. inside a network namespace; with a TURN server, Synapse hands out
time-limited credentials for it through ``/voip/turnServer``.)

:class:`Homeserver` writes Synapse's configuration from code into a data folder, starts Synapse
as a child process, waits until its client API answers, registers accounts with the shared
registration secret and stops it again. A second start on the same folder reuses the database and
its accounts. Nothing in the configuration contacts another server: no federation, no key servers,
no stats, no URL previews.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from sealcall.turn import TurnServer, TurnSettings

SERVER_NAME = "localhost"
CONFIG_NAME = "homeserver.yaml"
SECRETS_NAME = "secrets.json"
_FAST = {"per_second": 1000, "burst_count": 1000}


class HomeserverError(RuntimeError):
    """The homeserver could not be configured, started, reached or used."""


@dataclass(frozen=True)
class Account:
    """A registered account."""

    user_id: str
    password: str


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if ``port`` can be bound on ``host`` (nothing listens on it).

    With ``SO_REUSEADDR``, as Synapse (Twisted) binds: connections a stopped server left in
    TIME_WAIT do not hold the port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def synapse_installed() -> bool:
    """True if the ``matrix-synapse`` package can be imported."""
    return importlib.util.find_spec("synapse") is not None


class Homeserver:
    """Synapse in ``data_dir``, on ``host`` at ``port`` (a free one if None).

    ``host`` is both the address Synapse binds and the host of its URL. ``turn`` (a started
    :class:`~sealcall.turn.TurnServer`, or the settings of one run elsewhere) makes Synapse hand
    out credentials for it through ``/voip/turnServer``. ``exec_prefix`` is put in front of
    Synapse's command (e.g. ``("ip", "netns", "exec", "NS")``); the caller's network must reach
    ``host`` for the readiness check and :meth:`register`.
    """

    def __init__(
        self,
        data_dir: str | Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        turn: TurnServer | TurnSettings | None = None,
        exec_prefix: Sequence[str] = (),
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._requested_port = port
        self.host = host
        self.turn = turn
        self.exec_prefix = tuple(exec_prefix)
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client API base URL."""
        if self.port is None:
            raise HomeserverError("the homeserver has no port yet: start it first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def config_path(self) -> Path:
        """Synapse's configuration file."""
        return self.data_dir / CONFIG_NAME

    @property
    def log_path(self) -> Path:
        """Synapse's log file."""
        return self.data_dir / "homeserver.log"

    @property
    def pid_path(self) -> Path:
        """Where a running Synapse's process id is written."""
        return self.data_dir / "synapse.pid"

    # -- configuration -----------------------------------------------------------------

    def _secrets(self) -> dict[str, str]:
        path = self.data_dir / SECRETS_NAME
        if path.exists():
            return dict(json.loads(path.read_text()))
        values = {k: secrets.token_urlsafe(32) for k in ("registration", "macaroon", "form")}
        path.write_text(json.dumps(values))
        path.chmod(0o600)
        return values

    def _saved_port(self) -> int | None:
        if not self.config_path.exists():
            return None
        config = json.loads(self.config_path.read_text())
        return int(config["listeners"][0]["port"])

    def load(self) -> None:
        """Take the port of the configuration already in the data folder, without rewriting
        it (a running server's settings, such as its TURN ones, stay as they are)."""
        port = self._saved_port()
        if port is None:
            raise HomeserverError(f"no homeserver in {self.data_dir}: run 'sealcall homeserver up'")
        self.port = port

    def configure(self) -> Path:
        """Write Synapse's configuration (JSON, which YAML reads) into the data folder."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        port = self._requested_port or self._saved_port() or free_port()
        self.port = port
        keys = self._secrets()
        data = str(self.data_dir)
        log_config = self.data_dir / "log.config"
        log_config.write_text(
            json.dumps(
                {
                    "version": 1,
                    "formatters": {
                        "plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}
                    },
                    "handlers": {
                        "file": {
                            "class": "logging.FileHandler",
                            "formatter": "plain",
                            "filename": str(self.log_path),
                        }
                    },
                    "root": {"level": "WARNING", "handlers": ["file"]},
                    "disable_existing_loggers": False,
                }
            )
        )
        config: dict[str, Any] = {
            "server_name": SERVER_NAME,
            "listeners": [
                {
                    "port": port,
                    "bind_addresses": [self.host],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    # "openid": only /_matrix/federation/v1/openid/userinfo, with which an
                    # SFU checks a member's OpenID token; no other federation endpoint.
                    "resources": [{"names": ["client", "openid"], "compress": False}],
                }
            ],
            "database": {"name": "sqlite3", "args": {"database": f"{data}/homeserver.db"}},
            "log_config": str(log_config),
            "media_store_path": f"{data}/media_store",
            "signing_key_path": f"{data}/{SERVER_NAME}.signing.key",
            "registration_shared_secret": keys["registration"],
            "macaroon_secret_key": keys["macaroon"],
            "form_secret": keys["form"],
            "report_stats": False,
            "enable_registration": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "federation_domain_whitelist": [],
            "url_preview_enabled": False,
            "presence": {"enabled": False},
            "enable_metrics": False,
            # Local use: a demo or a test suite sends bursts no public server would allow.
            "rc_message": _FAST,
            "rc_registration": _FAST,
            "rc_login": {"address": _FAST, "account": _FAST, "failed_attempts": _FAST},
            "rc_joins": {"local": _FAST, "remote": _FAST},
            "rc_invites": {"per_room": _FAST, "per_user": _FAST, "per_issuer": _FAST},
            "rc_key_requests": _FAST,
            "rc_admin_redaction": _FAST,
            # MSC4140 delayed events: a group-call member schedules its own leave, restarting
            # the delay every few seconds (so the management endpoints must not be throttled).
            "max_event_delay_duration": "24h",
            "rc_delayed_event_mgmt": _FAST,
            **self._turn_config(),
        }
        self.config_path.write_text(json.dumps(config, indent=2))
        self.config_path.chmod(0o600)
        return self.config_path

    def _turn_config(self) -> dict[str, Any]:
        from sealcall.turn import TurnServer  # turn builds on this module's process helpers

        if self.turn is None:
            return {}
        settings = self.turn.settings() if isinstance(self.turn, TurnServer) else self.turn
        return {
            "turn_uris": list(settings.uris),
            "turn_shared_secret": settings.shared_secret,
            "turn_user_lifetime": settings.user_lifetime_s * 1000,  # a bare number: milliseconds
            "turn_allow_guests": False,
        }

    # -- process -----------------------------------------------------------------------

    def _synapse(self, *args: str) -> list[str]:
        return [
            *self.exec_prefix,
            sys.executable,
            "-m",
            "synapse.app.homeserver",
            "-c",
            str(self.config_path),
            *args,
        ]

    async def start(self, timeout: float = 60.0) -> None:
        """Configure (if needed), start Synapse and wait until its client API answers."""
        if not synapse_installed():
            raise HomeserverError(
                "matrix-synapse is not installed; install it with: pip install 'sealcall[server]'"
            )
        self.configure()
        assert self.port is not None
        if not self.exec_prefix and not port_is_free(self.port, self.host):
            raise HomeserverError(f"port {self.port} on {self.host} is already in use")
        if not (self.data_dir / f"{SERVER_NAME}.signing.key").exists():
            keys = subprocess.run(  # noqa: S603 - our own interpreter and arguments
                self._synapse("--generate-keys"), capture_output=True, text=True, check=False
            )
            if keys.returncode != 0:
                detail = keys.stderr.strip()[-500:]
                raise HomeserverError(f"Synapse could not generate its keys: {detail}")
        log = (self.data_dir / "synapse-stdout.log").open("ab")
        self._process = subprocess.Popen(  # noqa: S603
            self._synapse(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.pid_path.write_text(str(self._process.pid))
        await self._wait_ready(timeout)

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self._process is not None and self._process.poll() is not None:
                    raise HomeserverError(
                        f"Synapse exited with code {self._process.returncode}; see {self.log_path}"
                    )
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"{self.url}/_matrix/client/versions") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        await self.stop()
        raise HomeserverError(f"Synapse did not answer within {timeout:.0f} s; see {self.log_path}")

    async def stop(self, timeout: float = 15.0) -> None:
        """Stop Synapse: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        process, self._process = self._process, None
        await stop_server_process(process, self.pid_path, timeout)

    async def __aenter__(self) -> Homeserver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- accounts ----------------------------------------------------------------------

    async def register(
        self, username: str, password: str | None = None, *, admin: bool = False
    ) -> Account:
        """Create an account with the shared registration secret (reused if it exists)."""
        password = password or secrets.token_urlsafe(16)
        secret = self._secrets()["registration"].encode()
        endpoint = f"{self.url}/_synapse/admin/v1/register"
        async with aiohttp.ClientSession() as http:
            async with http.get(endpoint) as response:
                nonce = (await response.json())["nonce"]
            body = {
                "nonce": nonce,
                "username": username,
                "password": password,
                "admin": admin,
                "mac": hmac.new(
                    secret,
                    "\x00".join(
                        (nonce, username, password, "admin" if admin else "notadmin")
                    ).encode(),
                    hashlib.sha1,
                ).hexdigest(),
            }
            async with http.post(endpoint, json=body) as response:
                result = await response.json()
                if response.status == 400 and result.get("errcode") == "M_USER_IN_USE":
                    return Account(f"@{username}:{SERVER_NAME}", password)
                if response.status != 200:
                    raise HomeserverError(
                        f"registering {username} failed: {result.get('error', result)}"
                    )
        return Account(result["user_id"], password)


async def stop_server_process(
    process: subprocess.Popen[bytes] | None, pid_path: Path, timeout: float
) -> None:
    """Stop a server we started (``process``) or, if this process did not start it, the one
    whose pid is in ``pid_path``: SIGTERM, SIGKILL after ``timeout`` seconds; then wait for it
    and remove the pid file."""
    if process is None:
        await asyncio.to_thread(stop_pid_file, pid_path, timeout)
        return
    if process.poll() is None:
        process.terminate()
        try:
            await asyncio.wait_for(asyncio.to_thread(process.wait), timeout)
        except TimeoutError:
            process.kill()
            await asyncio.to_thread(process.wait)
    pid_path.unlink(missing_ok=True)


def stop_pid_file(pid_path: Path, timeout: float = 15.0) -> bool:
    """Stop the Synapse whose pid is in ``pid_path``; False if none was running."""
    if not pid_path.exists():
        return False
    pid = int(pid_path.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_path.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    pid_path.unlink(missing_ok=True)
    return True

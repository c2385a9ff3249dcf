"""Logging in: the nio client, its store folder, and the saved credentials."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from nio import AsyncClient, AsyncClientConfig

# nio retries a request that cannot reach the homeserver (refused, reset, timed out) forever,
# waiting 0.1 s * 2^n between tries, up to 60 s by default: after an outage of half a minute a
# client would come back up to a minute after its homeserver. Capped, every sync and every call
# event sent meanwhile (its transaction id kept, so never twice) goes through within
# RETRY_WAIT_CAP seconds of the homeserver's return, at the cost of one refused connection
# every RETRY_WAIT_CAP seconds while it is away.
RETRY_WAIT_CAP = 2.0


@dataclass(frozen=True)
class Credentials:
    """What a restarted client needs to log in again without a password."""

    homeserver: str
    user_id: str
    device_id: str
    access_token: str = field(repr=False)


def new_client(
    homeserver: str, user_id: str, store_dir: Path, device_id: str | None
) -> AsyncClient:
    """A nio client with E2EE whose crypto store and sync token live in ``store_dir``."""
    store_dir.mkdir(parents=True, exist_ok=True)
    store_dir.chmod(0o700)
    config = AsyncClientConfig(
        store_sync_tokens=True,
        encryption_enabled=True,
        max_timeout_retry_wait_time=RETRY_WAIT_CAP,
    )
    return AsyncClient(
        homeserver, user_id, device_id=device_id, store_path=str(store_dir), config=config
    )


def use_write_ahead_log(client: AsyncClient) -> None:
    """Put nio's crypto store into SQLite's write-ahead-log mode (kept in the file).

    nio commits to its store on the event loop after every sync response and Megolm send; in
    SQLite's default rollback-journal mode each commit costs several fsyncs, which held up every
    call of the device for tens of milliseconds at each step of a call setup. A write-ahead log
    needs one fsync per commit and is just as durable.
    """
    database = getattr(client.store, "database", None)
    if database is not None:
        database.execute_sql("PRAGMA journal_mode=wal")


def saved_credentials(store_dir: str | Path) -> Credentials | None:
    """The credentials saved in ``store_dir``, if any."""
    path = Path(store_dir) / "credentials.json"
    if not path.exists():
        return None
    return Credentials(**json.loads(path.read_text()))


def save_credentials(store_dir: Path, credentials: Credentials) -> None:
    """Save ``credentials`` in ``store_dir``, readable by us only."""
    path = store_dir / "credentials.json"
    path.write_text(json.dumps(credentials.__dict__))
    path.chmod(0o600)

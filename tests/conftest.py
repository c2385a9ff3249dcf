"""Shared fixtures: the RFC 9605 vectors and real encoded media frames (made once per session)."""

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from encoded_media import encode_opus, encode_video

DATA = Path(__file__).parent / "data"


def load_vectors() -> dict[str, list[dict[str, Any]]]:
    """The RFC 9605 test-vector file, parsed."""
    with (DATA / "rfc9605-test-vectors.json").open() as f:
        return json.load(f)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def vp8_frames() -> list[bytes]:
    return encode_video("libvpx")


@pytest.fixture(scope="session")
def h264_frames() -> list[bytes]:
    return encode_video("libx264")


@pytest.fixture(scope="session")
def opus_frames() -> list[bytes]:
    return encode_opus()


TURN_RELAY_IP = "127.0.0.2"
LOOPBACK = ("127.0.0.0/8",)  # peers a TURN server of the tests may relay to (all on one machine)


# Synapse hashes every password it registers or logs in with bcrypt, 12 rounds by default:
# 0.8 s of CPU per test device on this machine, minutes over the suite. The suite's accounts
# are throwaway, so its Synapse hashes with bcrypt's minimum cost (everything else as shipped).
TEST_BCRYPT_ROUNDS = 4


def _cheap_password_hashes(config_path: Path) -> None:
    config = json.loads(config_path.read_text())
    config["bcrypt_rounds"] = TEST_BCRYPT_ROUNDS
    config_path.write_text(json.dumps(config, indent=2))


def _test_homeserver() -> Any:
    """``Homeserver`` whose Synapse hashes passwords with :data:`TEST_BCRYPT_ROUNDS`."""
    from sealcall.homeserver import Homeserver

    class TestHomeserver(Homeserver):
        def configure(self) -> Path:
            path = super().configure()
            _cheap_password_hashes(path)
            return path

    return TestHomeserver


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One real Synapse (SQLite, 127.0.0.1) for the whole test session."""
    import asyncio

    server = _test_homeserver()(tmp_path_factory.mktemp("synapse"))
    asyncio.run(server.start())
    yield server
    asyncio.run(server.stop())


@pytest.fixture(scope="session")
def turn_synapse(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A second real Synapse that hands out credentials for its own coturn (``server.turn``).

    Separate from ``synapse`` so that the many tests without TURN gather no relay candidates.
    coturn listens on 127.0.0.1 and relays from 127.0.0.2: a relay candidate is told apart from
    a host candidate (127.0.0.1) by its address.
    """
    import asyncio

    from sealcall.turn import TurnServer

    base = tmp_path_factory.mktemp("turn-synapse")
    turn = TurnServer(base / "turn", relay_ips=[TURN_RELAY_IP], allowed_peer_networks=LOOPBACK)
    asyncio.run(turn.start())
    server = _test_homeserver()(base / "synapse", turn=turn)
    try:
        asyncio.run(server.start())
    except BaseException:
        asyncio.run(turn.stop())
        raise
    yield server
    asyncio.run(server.stop())
    asyncio.run(turn.stop())


@pytest.fixture
async def call_devices(synapse: Any, tmp_path: Path) -> AsyncIterator[Any]:
    """Devices for group call tests (see tests/group_call_helpers.py)."""
    import group_call_helpers

    async for made in group_call_helpers.call_devices(synapse, tmp_path):
        yield made


@pytest.fixture
async def devices(synapse: Any, tmp_path: Path) -> AsyncIterator[Any]:
    """Matrix devices (tests/test_group_membership_session.py's ``Devices``), their transports
    stopped after the test; modules with devices of another kind define their own ``devices``."""
    import test_group_membership_session as gm

    made = gm.Devices(synapse, tmp_path)
    yield made
    for d in made.started:
        await d.transport.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium with fake media devices, one per test module (tests/browser.py)."""
    from browser import Browser, missing

    reason = missing()
    if reason is not None:
        pytest.fail(f"the browser tests need {reason}")
    async with Browser.launched() as launched:
        yield launched

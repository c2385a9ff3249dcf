"""coturn as a child process (sealcall.turn) and Synapse handing out credentials for it."""

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aioice.stun
import aioice.turn
import pytest
import pytest_asyncio
from aiortc import RTCIceGatherer, RTCIceServer

from sealcall.homeserver import Homeserver
from sealcall.transport.matrix import MatrixTransport
from sealcall.turn import TurnError, TurnServer, TurnSettings, turn_credentials

from conftest import LOOPBACK, TURN_RELAY_IP


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def turn(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TurnServer]:
    server = TurnServer(
        tmp_path_factory.mktemp("turn"), relay_ips=[TURN_RELAY_IP], allowed_peer_networks=LOOPBACK
    )
    await server.start()
    yield server
    await server.stop()


async def relay_candidates(server: RTCIceServer) -> list[tuple[str, int]]:
    """The relay candidates aiortc gathers with ``server`` (host candidates are ignored)."""
    gatherer = RTCIceGatherer(iceServers=[server])
    await gatherer.gather()
    found = [(c.ip, c.port) for c in gatherer.getLocalCandidates() if c.type == "relay"]
    await gatherer._connection.close()
    return found


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sealcall", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_credentials_name_their_expiry_and_sign_the_name_with_the_secret() -> None:
    made = turn_credentials("s3cret", "@alice:localhost", 3600, 1_000_000.7)
    assert made.username == "1003600:@alice:localhost"
    mac = hmac.new(b"s3cret", made.username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(made.password) == mac
    assert turn_credentials("other", "@alice:localhost", 3600, 1_000_000).password != made.password


def test_config_denies_private_peers_and_allows_only_what_the_caller_names(
    tmp_path: Path,
) -> None:
    loop = TurnServer(
        tmp_path / "a", relay_ips=["127.0.0.2"], allowed_peer_networks=LOOPBACK, port=3478,
        secret="x",
    )  # fmt: skip
    lines = loop.configure().read_text().splitlines()
    assert {"use-auth-secret", "static-auth-secret=x", "no-tls", "no-cli"} <= set(lines)
    assert "listening-ip=127.0.0.1" in lines
    assert "relay-ip=127.0.0.2" in lines
    assert "allow-loopback-peers" in lines
    assert "allowed-peer-ip=127.0.0.0-127.255.255.255" in lines
    outside = TurnServer(tmp_path / "b", listening_ips=["10.9.0.1"], port=3478)
    lines = outside.configure().read_text().splitlines()
    assert "allow-loopback-peers" not in lines
    assert not [line for line in lines if line.startswith("allowed-peer-ip")]
    for denied in (
        "10.0.0.0-10.255.255.255", "172.16.0.0-172.31.255.255", "192.168.0.0-192.168.255.255",
        "127.0.0.0-127.255.255.255", "169.254.0.0-169.254.255.255", "100.64.0.0-100.127.255.255",
        "::1-::1", "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ):  # fmt: skip
        assert f"denied-peer-ip={denied}" in lines
    assert "relay-ip=10.9.0.1" in lines
    assert outside.uris == (
        "turn:10.9.0.1:3478?transport=udp",
        "turn:10.9.0.1:3478?transport=tcp",
    )
    behind_nat = TurnServer(
        tmp_path / "c", listening_ips=["10.9.0.1"], external_ip="203.0.113.7", port=3478
    )
    assert "external-ip=203.0.113.7/10.9.0.1" in behind_nat.configure().read_text().splitlines()
    assert behind_nat.uris[0] == "turn:203.0.113.7:3478?transport=udp"


async def permission(server: TurnServer, peer: tuple[str, int]) -> bool:
    """True if coturn lets an allocation of ``server`` send to ``peer`` (a channel bind: the
    permission check happens there, whether or not the peer exists)."""
    ice = server.ice_server("@alice:localhost")
    assert ice.username is not None
    assert isinstance(ice.credential, str)
    transport, _ = await aioice.turn.create_turn_endpoint(
        asyncio.DatagramProtocol, ("127.0.0.1", server.port or 0), ice.username, ice.credential
    )
    try:
        await transport._TurnTransport__inner_protocol.channel_bind(0x4000, peer)  # type: ignore[attr-defined]
    except aioice.stun.TransactionFailed:
        return False
    finally:
        transport.close()
    return True


@pytest.mark.asyncio(loop_scope="module")
async def test_coturn_refuses_to_relay_to_private_peers_unless_allowed(
    turn: TurnServer, tmp_path: Path
) -> None:
    for peer in ("10.9.9.9", "192.168.1.1", "172.16.0.1", "169.254.1.1"):
        assert not await permission(turn, (peer, 9)), peer
    assert await permission(turn, ("127.0.0.1", 9))  # loopback: allowed for these tests
    lab = TurnServer(
        tmp_path, relay_ips=[TURN_RELAY_IP], allowed_peer_networks=["10.9.9.0/24", *LOOPBACK]
    )
    await lab.start()
    try:
        assert await permission(lab, ("10.9.9.9", 9))
        assert not await permission(lab, ("10.9.8.9", 9))
    finally:
        await lab.stop()


def test_bad_addresses_and_unstarted_uris_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        TurnServer(tmp_path, listening_ips=["localhost; rm -rf /"])
    with pytest.raises(ValueError, match="at least one listening address"):
        TurnServer(tmp_path, listening_ips=[])
    with pytest.raises(TurnError):
        _ = TurnServer(tmp_path).uris


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_coturn_relays_with_our_credentials(turn: TurnServer, transport: str) -> None:
    found = await relay_candidates(turn.ice_server("@alice:localhost", transport=transport))
    assert [ip for ip, _ in found] == [TURN_RELAY_IP]


@pytest.mark.asyncio(loop_scope="module")
async def test_coturn_refuses_a_wrong_secret_and_expired_credentials(turn: TurnServer) -> None:
    [uri] = [u for u in turn.uris if u.endswith("udp")]
    forged = turn_credentials("not-the-secret", "@mallory:localhost", 3600, time.time())
    server = RTCIceServer(urls=[uri], username=forged.username, credential=forged.password)
    assert await relay_candidates(server) == []
    expired = turn.ice_server("@alice:localhost", lifetime=60, now=time.time() - 3600)
    assert await relay_candidates(expired) == []


async def test_a_command_prefix_runs_server_and_probe_and_stop_ends_it(tmp_path: Path) -> None:
    server = TurnServer(tmp_path, exec_prefix=("env", "SEALCALL_TURN_TEST=1"))
    await server.start()
    pid = int(server.pid_path.read_text())
    assert (Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")).count(
        b"SEALCALL_TURN_TEST=1"
    ) == 1
    assert await relay_candidates(server.ice_server(transport="udp")) != []
    await server.stop()
    assert not pid_alive(pid)
    assert not server.pid_path.exists()


async def test_a_server_that_exits_fails_start_clearly(tmp_path: Path) -> None:
    server = TurnServer(tmp_path, exec_prefix=("false",))
    with pytest.raises(TurnError):
        await server.start()
    assert not server.pid_path.exists()


def test_homeserver_config_binds_host_and_hands_out_turn(tmp_path: Path) -> None:
    settings = TurnSettings(("turn:10.9.0.1:3478?transport=udp",), "s3cret", 600)
    server = Homeserver(tmp_path, port=8448, host="10.9.0.2", turn=settings)
    config = json.loads(server.configure().read_text())
    assert config["listeners"][0]["bind_addresses"] == ["10.9.0.2"]
    assert server.url == "http://10.9.0.2:8448"
    assert config["turn_uris"] == ["turn:10.9.0.1:3478?transport=udp"]
    assert config["turn_shared_secret"] == "s3cret"
    assert config["turn_user_lifetime"] == 600_000
    assert config["turn_allow_guests"] is False
    plain = json.loads(Homeserver(tmp_path / "plain").configure().read_text())
    assert not any(key.startswith("turn_") for key in plain)


async def test_synapse_hands_out_credentials_coturn_accepts(
    turn_synapse: Homeserver, tmp_path: Path
) -> None:
    account = await turn_synapse.register(f"turnuser{os.getpid()}")
    transport = await MatrixTransport.login(
        turn_synapse.url, account.user_id, account.password, tmp_path / "store"
    )
    try:
        [offered] = await transport.ice_servers()
    finally:
        await transport.stop()
    assert isinstance(turn_synapse.turn, TurnServer)
    assert sorted(offered.urls) == sorted(turn_synapse.turn.uris)
    # Synapse's answer is what turn_credentials makes from the shared secret.
    assert offered.username is not None
    expiry, name = offered.username.split(":", 1)
    assert name == account.user_id
    made = turn_credentials(turn_synapse.turn.secret, name, int(expiry), 0)
    assert (made.username, made.password) == (offered.username, offered.credential)
    # Each URI the client is given relays: UDP and TCP.
    for uri in offered.urls:
        server: Any = RTCIceServer(
            urls=[uri], username=offered.username, credential=offered.credential
        )
        assert [ip for ip, _ in await relay_candidates(server)] == [TURN_RELAY_IP], uri


def test_homeserver_up_turn_starts_coturn_beside_synapse_and_down_stops_both(
    tmp_path: Path,
) -> None:
    data = tmp_path / "hs"
    up = cli("homeserver", "up", "--turn", "--data-dir", str(data))
    try:
        assert up.returncode == 0, up.stderr[-2000:]
        config = json.loads((data / "homeserver.yaml").read_text())
        turn_pid = int((data / "turn" / "turnserver.pid").read_text())
        synapse_pid = int((data / "synapse.pid").read_text())
        assert pid_alive(turn_pid)
        [udp_uri] = [u for u in config["turn_uris"] if u.endswith("transport=udp")]
        assert udp_uri in up.stdout
        # add-user leaves the running server's TURN settings in its configuration.
        added = cli("homeserver", "add-user", "dave", "--data-dir", str(data))
        assert added.returncode == 0, added.stderr
        assert json.loads((data / "homeserver.yaml").read_text()) == config
        # coturn checks credentials made with the secret Synapse was given.
        secret = config["turn_shared_secret"]
        made = turn_credentials(secret, "@dave:localhost", 600, time.time())
        server = RTCIceServer(urls=[udp_uri], username=made.username, credential=made.password)
        assert [ip for ip, _ in asyncio.run(relay_candidates(server))] == ["127.0.0.1"]
    finally:
        down = cli("homeserver", "down", "--data-dir", str(data))
    assert down.returncode == 0, down.stderr
    assert "TURN server stopped" in down.stdout
    assert not pid_alive(turn_pid)
    assert not pid_alive(synapse_pid)


def test_homeserver_turn_options_choose_address_and_peers(tmp_path: Path) -> None:
    from sealcall.cli import main
    from sealcall.cli.server import turn_server

    def made(*options: str) -> TurnServer:
        args = argparse.Namespace(turn_ip="127.0.0.1", turn_external_ip=None, turn_port=3478)
        for option, value in zip(options[::2], options[1::2], strict=True):
            setattr(args, option, value)
        return turn_server(tmp_path, args)

    local = made()
    assert (local.listening_ips, local.relay_ips) == (("127.0.0.1",), ("127.0.0.1",))
    assert [str(n) for n in local.allowed_peer_networks] == ["127.0.0.0/8"]
    public = made("turn_ip", "10.9.0.1", "turn_external_ip", "203.0.113.7")
    assert (public.listening_ips, public.relay_ips) == (("10.9.0.1",), ("10.9.0.1",))
    assert public.allowed_peer_networks == ()
    assert public.external_ip == "203.0.113.7"
    for bad in (["--turn-ip", "example.org"], ["--turn-external-ip", "x; y"]):
        assert main(["homeserver", "up", "--turn", "--data-dir", str(tmp_path), *bad]) == 2

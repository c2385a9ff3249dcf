"""The network namespace (with a veth pair) the benchmarks run an SFU in: made, used, removed."""

import ipaddress
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sealcall.bench.netlab import NetworkLab
from sealcall.bench.netns import LabError, NetnsUnavailableError, NetworkNamespace, run_ip


def namespaces() -> list[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in listing.stdout.splitlines() if line]


def links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def test_a_namespace_is_reachable_over_its_veth_and_removed_with_it() -> None:
    with NetworkNamespace() as namespace:
        assert namespace.name in namespaces()
        assert namespace.outer_interface in links()
        subnet = ipaddress.ip_network(f"{namespace.outer_address}/30", strict=False)
        assert ipaddress.ip_address(namespace.inner_address) in subnet
        assert subnet.subnet_of(ipaddress.ip_network("10.77.0.0/16"))
        # A TCP listener inside the namespace answers on its address from here.
        server = subprocess.Popen(
            [
                *namespace.exec_prefix(),
                sys.executable,
                "-c",
                "import socket; s = socket.create_server((ADDRESS, 0)); print(s.getsockname()[1],"
                " flush=True); c, _ = s.accept(); c.sendall(b'inside')".replace(
                    "ADDRESS", repr(namespace.inner_address)
                ),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        port = int(server.stdout.readline())
        with socket.create_connection((namespace.inner_address, port), timeout=10) as client:
            assert client.recv(6) == b"inside"
        assert server.wait(timeout=10) == 0
    assert namespace.name not in namespaces()
    assert namespace.outer_interface not in links()


def test_two_namespaces_get_different_names_and_subnets() -> None:
    with NetworkNamespace() as first, NetworkNamespace() as second:
        assert first.name != second.name
        assert first.outer_interface != second.outer_interface
        assert first.outer_address != second.outer_address
    assert first.name not in namespaces()
    assert second.name not in namespaces()


def test_a_failure_inside_still_deletes_the_namespace() -> None:
    namespace = NetworkNamespace()
    seen = []

    def use() -> None:
        with namespace:
            seen.extend(namespaces())
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        use()
    assert namespace.name in seen
    assert namespace.name not in namespaces()


def test_namespaces_of_dead_processes_are_removed_when_a_new_one_is_made() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"sealcall-janus-{dead.pid}-0"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        with NetworkNamespace() as namespace:
            assert stale not in namespaces()
            assert namespace.name in namespaces()  # our own, live process's: kept
    finally:
        subprocess.run(["ip", "netns", "delete", stale], capture_output=True)


def test_no_permission_for_namespaces_is_a_clear_error(tmp_path: Path) -> None:
    ip = tmp_path / "ip"
    ip.write_text(
        '#!/bin/sh\n[ "$2" = list ] && exit 0\n'
        "echo 'mount --make-shared /run/netns failed: Operation not permitted' >&2; exit 1\n"
    )
    ip.chmod(0o755)
    namespace = NetworkNamespace(ip=str(ip))
    with pytest.raises(NetnsUnavailableError, match=r"not permitted here.*run as root"):
        namespace.create()


def test_missing_iproute2_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NetnsUnavailableError, match="iproute2"):
        NetworkNamespace(ip=str(tmp_path / "no-ip-here")).create()


def fake_ip(tmp_path: Path, body: str) -> str:
    """An ``ip`` that runs the shell ``body`` (``$*``: its arguments)."""
    ip = tmp_path / "ip"
    ip.write_text(f"#!/bin/sh\n{body}\n")
    ip.chmod(0o755)
    return str(ip)


def test_only_a_refused_netns_add_means_namespaces_are_unavailable(tmp_path: Path) -> None:
    refusing = fake_ip(tmp_path, "echo 'RTNETLINK answers: Operation not permitted' >&2; exit 2")
    with pytest.raises(NetnsUnavailableError, match="not permitted here"):
        run_ip(refusing, "netns", "add", "x")
    for args in (("rule", "add", "blackhole"), ("-n", "x", "qdisc", "add", "tbf")):
        with pytest.raises(LabError) as refused:
            run_ip(refusing, *args)
        assert not isinstance(refused.value, NetnsUnavailableError)
    broken = fake_ip(tmp_path, "echo 'RTNETLINK answers: File exists' >&2; exit 2")
    for args in (("netns", "add", "x"), ("rule", "add", "blackhole")):
        with pytest.raises(LabError, match="File exists") as failed:
            run_ip(broken, *args)
        assert not isinstance(failed.value, NetnsUnavailableError)


def test_a_lab_that_cannot_be_built_is_a_lab_error_not_a_skip(tmp_path: Path) -> None:
    # Namespaces are allowed, but a later command (the veth to the router) fails.
    ip = fake_ip(
        tmp_path,
        'case "$*" in\n'
        "  *'link add'*) echo 'RTNETLINK answers: Operation not supported' >&2; exit 2;;\n"
        "  *'addr show'*) echo '1: lo    inet 127.0.0.1/8 scope host lo';;\n"
        "esac\nexit 0",
    )
    with pytest.raises(LabError, match="not supported") as failed:
        NetworkLab(ip=ip).create()
    assert not isinstance(failed.value, NetnsUnavailableError)


def test_no_free_subnet_for_a_lab_is_a_lab_error_not_a_skip(tmp_path: Path) -> None:
    ip = fake_ip(tmp_path, "case \"$*\" in *'addr show'*) echo '2: x    inet 10.0.0.1/8';; esac")
    for made in (NetworkLab(ip=ip), NetworkNamespace(ip=ip)):  # one scan serves both
        with pytest.raises(LabError, match="no free") as failed:
            made.create()
        assert not isinstance(failed.value, NetnsUnavailableError)

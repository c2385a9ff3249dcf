"""``sealcall setup-bench``: the call-setup benchmark runs real calls and reports every step."""

import json
import subprocess
import sys
import uuid
from typing import Any

from sealcall.bench.setup_bench import STEPS
from sealcall.cli import main


def test_setup_bench_json_times_every_step_of_connected_calls(synapse: Any) -> None:
    import asyncio

    suffix = uuid.uuid4().hex[:8]
    accounts = [asyncio.run(synapse.register(f"{name}{suffix}")) for name in ("caller", "callee")]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sealcall",
            "setup-bench",
            "--json",
            "--calls",
            "2",
            "--homeserver",
            synapse.url,
            "--alice",
            f"{accounts[0].user_id}={accounts[0].password}",
            "--bob",
            f"{accounts[1].user_id}={accounts[1].password}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["benchmark"] == "setup"
    assert report["calls"] == report["connected_calls"] == report["decrypted_both_ways"] == 2
    assert len(report["runs"]) == 2
    for run in report["runs"]:
        assert set(STEPS) <= set(run)
        # Steps that cause one another come in that order (no timing is asserted).
        causal = ["offer_created", "invite_delivered", "answer_created", "answer_received"]
        assert [run[step] for step in causal] == sorted(run[step] for step in causal)
        assert run["answer_received"] <= run["connected"]
    headline = report["summary"][report["headline"]]
    assert headline["calls"] == 2
    assert headline["min_ms"] <= headline["median_ms"] <= headline["p90_ms"]


def test_setup_bench_refuses_bad_arguments() -> None:
    assert main(["setup-bench", "--calls", "0"]) == 2
    assert main(["setup-bench", "--homeserver", "http://127.0.0.1:1"]) == 2


async def test_the_crypto_store_commits_through_a_write_ahead_log(
    synapse: Any, tmp_path: Any
) -> None:
    # In SQLite's default journal mode each of nio's commits (one or more per sync and per
    # send, on the event loop) took several fsyncs and held up every call of the device.
    from matrix_helpers import device

    alice = await device(synapse, tmp_path, "wal")
    try:
        database: Any = alice.transport.client.store.database
        assert database.execute_sql("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        await alice.stop()

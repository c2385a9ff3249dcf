"""``sealcall net-bench --json``, very short: every figure is there and comes from a real call
(direct calls use host candidates only, relayed ones go through TURN)."""

import json

import pytest

from sealcall.bench.netns import NetnsUnavailableError, NetworkNamespace
from sealcall.cli import main


def test_net_bench_reports_both_directions_per_loss_level_and_setup_times(
    capsys: pytest.CaptureFixture[str],
) -> None:
    try:
        with NetworkNamespace():
            pass
    except NetnsUnavailableError as error:
        pytest.skip(f"the network tests need network namespaces: {error}")
    assert (
        main(["net-bench", "--json", "--seconds", "1.5", "--loss", "0", "20", "--setup-calls", "1"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert [run["loss"] for run in report["runs"]] == [0.0, 0.2]
    for run in report["runs"]:
        for way in ("a_to_b", "b_to_a"):
            for kind in ("audio", "video"):
                assert run[way][kind]["sent"] > 0
                assert run[way][kind]["decoded"] > 0
            assert run[way]["kbit_s"] > 0
            assert run[way]["video"]["max_gap_s"] is not None
        assert "relay" in (run["pair"]["local"], run["pair"]["remote"])
    assert report["router"]["a"]["up"]["dropped"] > 0  # the 20 % run lost packets
    assert report["setup"]["direct"]["pair"]["local"] == "host"
    assert report["setup"]["direct"]["pair"]["remote"] == "host"
    assert "relay" in report["setup"]["relayed"]["pair"].values()
    assert "relay" in report["setup"]["no_udp"]["pair"].values()  # over TURN/TCP from A
    modes = ("direct", "relayed", "relayed_all", "no_udp")
    assert all(s > 0 for m in modes for s in report["setup"][m]["calls_s"])
    back = report["picture_back_after_outage"]
    assert back["to_a"] is not None
    assert back["to_b"] is not None


@pytest.mark.parametrize(
    ("option", "value"), [("--loss", "100"), ("--loss", "-5"), ("--setup-calls", "0")]
)
def test_net_bench_refuses_impossible_settings_before_making_a_lab(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["net-bench", option, value])
    assert exited.value.code == 2
    assert option in capsys.readouterr().err

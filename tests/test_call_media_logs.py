"""A failed media action is logged by its error's type only: aiortc's messages may quote the SDP,
whose ICE credentials must never reach a log."""

import logging
from typing import Any

import pytest

from sealcall.calls import Call, Direction
from sealcall.calls import actions as act
from sealcall.session import CallMedia

SECRET = "ice-pwd:0123456789abcdefSECRET"


class _RefusingPc:
    connectionState = "new"  # noqa: N815 - aiortc's name

    def on(self, *_: Any) -> None:
        pass

    async def setRemoteDescription(self, description: Any) -> None:  # noqa: N802 - aiortc's
        raise ValueError(f"cannot parse a={SECRET} in {description.sdp!r}")


class _Media(CallMedia[Any]):
    def __init__(self) -> None:
        call = Call(call_id="c1", party_id="P", peer="@b:hs", direction=Direction.OUTGOING, now=0)
        super().__init__(call)
        self.fed: list[Any] = []

    def _feed(self, command: Any) -> None:
        self.fed.append(command)

    def _new_pc(self) -> Any:
        return _RefusingPc()


async def test_a_failed_action_logs_no_sdp(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    media = _Media()
    await media.perform(act.ApplyAnswer(f"v=0\r\na={SECRET}\r\n"))
    assert media.fed  # the engine is told the media failed
    assert "ValueError" in caplog.text
    assert "SECRET" not in caplog.text

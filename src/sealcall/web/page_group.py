"""A group call whose media runs in the page: the mesh decides, the page's peer connections act.

:class:`~sealcall.session.GroupCallSession` runs membership, keys and the mesh here; with
:class:`PagePairSession` as each pair's media and :class:`PageGroupSending` as our outgoing
media, every media action of a pair becomes a ``media`` command addressed by ``pair_id`` and
our group keys go to the page's SFrame worker (``group_keys``), as docs/web-protocol.md fixes
them. No aiortc connection, encoder or capture is made here.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sealcall.calls import Call
from sealcall.calls import actions as act
from sealcall.e2ee import GroupKey
from sealcall.group import MemberDevice
from sealcall.media import SharedEncoder
from sealcall.session import GroupSending, MeshPairSession
from sealcall.session.local_media import LocalMedia
from sealcall.sframe import CipherSuite

from .media_commands import media_command

if TYPE_CHECKING:
    from sealcall.session import GroupCallSession

ToPage = Callable[[dict[str, Any]], None]
"""Sends one message to the page that drives the group call's media."""

KeyOf = Callable[[str, str, int], "bytes | None"]
"""A member device's key by (user id, device id, index): :meth:`GroupKeys.receive_key`."""


def sender_id(device: MemberDevice) -> str:
    """A member device as the page names it: ``"<user_id> <device_id>"``."""
    return f"{device.user_id} {device.device_id}"


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def send_key_message(room_id: str, suite: int, key: GroupKey) -> dict[str, Any]:
    """The ``group_keys`` message that hands the page our key to send with from now on."""
    return {
        "type": "group_keys",
        "room_id": room_id,
        "suite": suite,
        "send": {"kid": key.index, "key": _b64(key.key)},
        "receive": [],
    }


def receive_key_message(
    room_id: str, suite: int, key_of: KeyOf, user_id: str, device_id: str, index: int
) -> dict[str, Any] | None:
    """The ``group_keys`` message for a member device's key just accepted, read back from the
    key ring: None if the ring holds no such key for a member (a non-member's key never
    reaches the page)."""
    key = key_of(user_id, device_id, index)
    if key is None:
        return None
    return {
        "type": "group_keys",
        "room_id": room_id,
        "suite": suite,
        "send": None,
        "receive": [{"sender": f"{user_id} {device_id}", "kid": index, "key": _b64(key)}],
    }


class PagePairSession(MeshPairSession):
    """One pair of the mesh whose connection is in the page: each media action of its call goes
    to the page as a ``media`` command with ``pair_id``, ``room_id`` and ``sender``; the page's
    results come back through :meth:`GroupCallSession.feed`."""

    def __init__(
        self, group: GroupCallSession, peer: MemberDevice, call: Call, to_page: ToPage
    ) -> None:
        super().__init__(group, peer, call)
        self._to_page = to_page
        self._closed = False

    def __repr__(self) -> str:
        return f"PagePairSession({sender_id(self.peer)}, {self.call!r})"

    @classmethod
    def factory(
        cls, to_page: ToPage
    ) -> Callable[[GroupCallSession, MemberDevice, Call], MeshPairSession]:
        """A ``pair_factory`` for :class:`GroupCallSession` whose pairs send to ``to_page``."""
        return lambda group, peer, call: cls(group, peer, call, to_page)

    def _send(self, fields: dict[str, Any]) -> None:
        self._to_page(
            {
                "type": "media",
                "pair_id": self.call_id,
                "room_id": self.group.room_id,
                "sender": sender_id(self.peer),
                **fields,
            }
        )

    async def perform(self, action: act.Action) -> None:
        """Hand one media action of the pair's call to the page."""
        if isinstance(action, act.ClosePeerConnection):
            await self.close()
            return
        if isinstance(action, (act.UseMediaKeys, act.AllowUnencryptedMedia)):
            return  # group media is always encrypted, with the group keys (group_keys)
        fields = media_command(action, self.group.ice_servers, relay_only=self.group.relay_only)
        if fields is not None and not self._closed:
            self._send(fields)

    async def close(self) -> None:
        """Tell the page to close the pair's connection (once)."""
        if not self._closed:
            self._closed = True
            self._send({"op": "close"})
        await super().close()


class PageGroupSending(GroupSending):
    """Our outgoing media when the page captures and encrypts it: no encoder here; our key
    goes to the page (``group_keys``) when :class:`GroupKeys` says to use it, and nothing of
    it is kept. Mute and screen-share state are kept as :class:`GroupSending` keeps them."""

    def __init__(
        self,
        room_id: str,
        to_page: ToPage,
        *,
        video: bool,
        suite: int = CipherSuite.AES_128_GCM_SHA256_128,
    ) -> None:
        super().__init__(LocalMedia(), video=video)
        self.room_id = room_id
        self.suite = suite
        self._to_page = to_page
        self.keys_sent = 0

    def use_key(self, key: GroupKey) -> None:
        """Send the page our key to protect with from its next frame on."""
        self.keys_sent += 1
        self._to_page(send_key_message(self.room_id, self.suite, key))

    def start(self) -> None:
        """Nothing to start: the page captures the microphone and camera."""

    def screen_encoder(self, on: bool) -> SharedEncoder | None:
        """None: the page shares the screen itself."""
        return None

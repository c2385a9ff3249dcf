"""Group media key messages (to-device content) <-> typed, validated objects.

``org.matrix.msc4143.rtc.encryption_key`` carries one sender's key. We write the MSC4143 form::

    {"room_id": "!r:s", "member_id": "<sender's membershipID>",
     "media_key": {"index": 3, "key": "<unpadded base64, 32 bytes>"},
     "version": "0", "org.sealcall.format": "sframe-rfc9605"}

and read it as well as the form matrix-js-sdk sends today (``keys`` for ``media_key``,
``member: {id, claimed_device_id}`` for ``member_id``, ``roomId`` in older releases).

``org.sealcall.encryption_key_request`` is ours: a member that lacks a sender's key asks that
sender for it::

    {"room_id": "!r:s", "member_id": "<requester's membershipID>",
     "key_owner": {"user_id": "@a:s", "device_id": "DEV"}}

Both travel only as Olm-encrypted to-device messages; whether one did is the transport's word,
not the content's (see :mod:`sealcall.e2ee.group_key_ring`). Malformed content raises an
:class:`~sealcall.signaling.errors.InvalidEventError` naming the field.
"""

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from sealcall.e2ee.group_keys import GROUP_KEY_LENGTH, KEY_INDEX_COUNT, GroupKey

from .errors import FieldTypeError, InvalidEventError, MissingFieldError
from .fields import JsonObject, as_object, integer, string, valid_text

ENCRYPTION_KEY_EVENT = "org.matrix.msc4143.rtc.encryption_key"
JSSDK_ENCRYPTION_KEY_EVENT = "io.element.call.encryption_keys"  # matrix-js-sdk's current type
ENCRYPTION_KEY_REQUEST_EVENT = "org.sealcall.encryption_key_request"
FORMAT_KEY = "org.sealcall.format"
SFRAME_FORMAT = "sframe-rfc9605"
MSC_VERSION = "0"
MAX_ID_LENGTH = 255  # room, user and device ids and membership ids
_MAX_KEY_TEXT = 4 * -(-GROUP_KEY_LENGTH // 3)  # padded base64 of a key


class UnsupportedKeyFormatError(InvalidEventError):
    """The key is for a frame format other than RFC 9605 SFrame: useless to us."""


def _id(obj: JsonObject, key: str, path: str, *, optional: bool = False) -> str | None:
    value = string(obj, key, path, optional=optional)
    if value is not None and not 0 < len(value) <= MAX_ID_LENGTH:
        raise FieldTypeError(f"{path}{key}", f"must be 1 to {MAX_ID_LENGTH} characters")
    return value


def _req_id(obj: JsonObject, key: str, path: str) -> str:
    value = _id(obj, key, path)
    assert value is not None
    return value


def _check_id(value: object, name: str) -> None:
    if not valid_text(value) or not 0 < len(str(value)) <= MAX_ID_LENGTH:
        raise FieldTypeError(name, f"must be a string of 1 to {MAX_ID_LENGTH} characters")


def decode_key(text: str, path: str) -> bytes:
    """Standard base64 (padding optional, canonical only) of exactly 32 bytes."""
    stripped = text.rstrip("=")
    padded = len(text) != len(stripped)
    if len(text) > _MAX_KEY_TEXT or len(stripped) % 4 == 1 or (padded and len(text) % 4):
        raise FieldTypeError(path, "must be base64")
    try:
        raw = base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise FieldTypeError(path, "must be base64") from None
    if encode_key(raw) != stripped:
        raise FieldTypeError(path, "must be canonical base64")
    if len(raw) != GROUP_KEY_LENGTH:
        raise FieldTypeError(path, f"must encode {GROUP_KEY_LENGTH} bytes")
    return raw


def encode_key(raw: bytes) -> str:
    """Unpadded standard base64, as Matrix writes keys."""
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _media_key(content: JsonObject) -> GroupKey:
    name = "media_key" if "media_key" in content else "keys"
    if name not in content:
        raise MissingFieldError("content.media_key")
    path = f"content.{name}."
    obj = as_object(content[name], f"content.{name}")
    index = integer(obj, "index", path)
    assert index is not None
    if index >= KEY_INDEX_COUNT:
        raise FieldTypeError(f"{path}index", f"must be in 0 .. {KEY_INDEX_COUNT - 1}")
    text = string(obj, "key", path)
    assert text is not None
    return GroupKey(index, decode_key(text, f"{path}key"))


@dataclass(frozen=True, repr=False)
class EncryptionKeyContent:
    """One sender's media key as sent to one member device.

    ``member_id`` is the sender's membership (its member event's ``membershipID``);
    ``claimed_device_id`` is read from matrix-js-sdk's form only. Both are claims: the receiver
    checks them against the Olm-authenticated sender.
    """

    room_id: str
    member_id: str | None
    key: GroupKey
    claimed_device_id: str | None = None
    format: str | None = SFRAME_FORMAT

    def __post_init__(self) -> None:
        _check_id(self.room_id, "content.room_id")
        if self.member_id is None and self.claimed_device_id is None:
            raise MissingFieldError("content.member_id")
        if self.member_id is not None:
            _check_id(self.member_id, "content.member_id")
        if self.claimed_device_id is not None:
            _check_id(self.claimed_device_id, "content.member.claimed_device_id")
        if self.format is not None and self.format != SFRAME_FORMAT:
            raise UnsupportedKeyFormatError(f"content.{FORMAT_KEY}", "must be sframe-rfc9605")

    def __repr__(self) -> str:
        return f"EncryptionKeyContent(index={self.key.index}, key=<secret>)"

    @classmethod
    def parse(cls, content: object) -> "EncryptionKeyContent":
        """Read either form; raise :class:`InvalidEventError` for anything malformed."""
        obj = as_object(content, "content")
        room_key = "room_id" if "room_id" in obj or "roomId" not in obj else "roomId"
        room_id = _req_id(obj, room_key, "content.")
        member_id = _id(obj, "member_id", "content.", optional=True)
        claimed = None
        if "member" in obj:
            member = as_object(obj["member"], "content.member")
            if member_id is None:
                member_id = _id(member, "id", "content.member.", optional=True)
            claimed = _id(member, "claimed_device_id", "content.member.", optional=True)
        fmt = string(obj, FORMAT_KEY, "content.", optional=True)
        return cls(room_id, member_id, _media_key(obj), claimed, fmt)

    def to_dict(self) -> dict[str, Any]:
        """The MSC4143 form, with our format marker."""
        if self.member_id is None:
            raise InvalidEventError("content.member_id", "required to write the MSC4143 form")
        return {
            "room_id": self.room_id,
            "member_id": self.member_id,
            "media_key": {"index": self.key.index, "key": encode_key(self.key.key)},
            "version": MSC_VERSION,
            FORMAT_KEY: SFRAME_FORMAT,
        }


@dataclass(frozen=True)
class EncryptionKeyRequest:
    """A member asks ``key_owner`` (user id, device id) for its current media key."""

    room_id: str
    member_id: str
    key_owner: tuple[str, str]

    def __post_init__(self) -> None:
        _check_id(self.room_id, "content.room_id")
        _check_id(self.member_id, "content.member_id")
        if not isinstance(self.key_owner, tuple) or len(self.key_owner) != 2:
            raise FieldTypeError("content.key_owner", "must be (user_id, device_id)")
        _check_id(self.key_owner[0], "content.key_owner.user_id")
        _check_id(self.key_owner[1], "content.key_owner.device_id")

    @classmethod
    def parse(cls, content: object) -> "EncryptionKeyRequest":
        """Read a request; raise :class:`InvalidEventError` for anything malformed."""
        obj = as_object(content, "content")
        if "key_owner" not in obj:
            raise MissingFieldError("content.key_owner")
        owner = as_object(obj["key_owner"], "content.key_owner")
        return cls(
            _req_id(obj, "room_id", "content."),
            _req_id(obj, "member_id", "content."),
            (
                _req_id(owner, "user_id", "content.key_owner."),
                _req_id(owner, "device_id", "content.key_owner."),
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        """The content to send."""
        return {
            "room_id": self.room_id,
            "member_id": self.member_id,
            "key_owner": {"user_id": self.key_owner[0], "device_id": self.key_owner[1]},
        }

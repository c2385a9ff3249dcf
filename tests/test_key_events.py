"""Group key messages: the MSC4143 form we write, the js-sdk form we also read, hostile input."""

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealcall.e2ee import GroupKey
from sealcall.signaling import (
    EncryptionKeyContent,
    EncryptionKeyRequest,
    FieldTypeError,
    InvalidEventError,
    MissingFieldError,
    SignalingError,
    UnsupportedKeyFormatError,
)

from fuzz_helpers import json_values

KEY = bytes(range(32))
KEY_B64 = base64.b64encode(KEY).decode().rstrip("=")
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def msc_content(**changes: Any) -> dict[str, Any]:
    content: dict[str, Any] = {
        "room_id": "!room:example.org",
        "member_id": "membership-1",
        "media_key": {"index": 7, "key": KEY_B64},
        "version": "0",
        "org.sealcall.format": "sframe-rfc9605",
    }
    content.update(changes)
    return {k: v for k, v in content.items() if v is not None}


def test_we_write_the_msc4143_form_and_read_it_back() -> None:
    content = EncryptionKeyContent("!room:example.org", "membership-1", GroupKey(7, KEY))
    written = content.to_dict()
    assert written == msc_content()
    assert "=" not in written["media_key"]["key"]  # unpadded
    again = EncryptionKeyContent.parse(json.loads(json.dumps(written)))
    assert again == content
    assert again.key.key == KEY
    assert again.key.index == 7


def test_we_read_matrix_js_sdk_form() -> None:
    jssdk = {
        "keys": {"index": 3, "key": base64.b64encode(KEY).decode()},  # padded, as js-sdk writes
        "member": {"id": "membership-2", "claimed_device_id": "ADEV"},
        "room_id": "!room:example.org",
        "session": {"application": "m.call", "call_id": "", "scope": "m.room"},
        "sent_ts": 1_700_000_000_000,
    }
    content = EncryptionKeyContent.parse(jssdk)
    assert content.member_id == "membership-2"
    assert content.claimed_device_id == "ADEV"
    assert content.key == GroupKey(3, KEY)
    assert content.format is None
    older = {**jssdk, "roomId": jssdk["room_id"], "member": {"claimed_device_id": "ADEV"}}
    del older["room_id"]
    content = EncryptionKeyContent.parse(older)
    assert content.member_id is None
    assert content.room_id == "!room:example.org"
    with pytest.raises(InvalidEventError):
        content.to_dict()  # we never write a key without the sender's membership


def test_repr_never_shows_the_key() -> None:
    content = EncryptionKeyContent.parse(msc_content())
    assert KEY_B64 not in repr(content)
    assert KEY.hex() not in repr(content)


@pytest.mark.parametrize(
    ("changes", "error", "field"),
    [
        ({"room_id": None}, MissingFieldError, "content.room_id"),
        ({"room_id": ""}, FieldTypeError, "content.room_id"),
        ({"room_id": 5}, FieldTypeError, "content.room_id"),
        ({"member_id": None}, MissingFieldError, "content.member_id"),
        ({"member_id": "x" * 256}, FieldTypeError, "content.member_id"),
        ({"media_key": None}, MissingFieldError, "content.media_key"),
        ({"media_key": []}, FieldTypeError, "content.media_key"),
        ({"media_key": {"key": KEY_B64}}, MissingFieldError, "content.media_key.index"),
        ({"media_key": {"index": 256, "key": KEY_B64}}, FieldTypeError, "content.media_key.index"),
        ({"media_key": {"index": -1, "key": KEY_B64}}, FieldTypeError, "content.media_key.index"),
        ({"media_key": {"index": True, "key": KEY_B64}}, FieldTypeError, "content.media_key.index"),
        ({"media_key": {"index": 1.0, "key": KEY_B64}}, FieldTypeError, "content.media_key.index"),
        ({"media_key": {"index": 1}}, MissingFieldError, "content.media_key.key"),
        ({"media_key": {"index": 1, "key": KEY_B64[:22]}}, FieldTypeError, "content.media_key.key"),
        (
            {"media_key": {"index": 1, "key": KEY_B64 + "AAAA"}},
            FieldTypeError,
            "content.media_key.key",
        ),
        ({"media_key": {"index": 1, "key": "!" * 43}}, FieldTypeError, "content.media_key.key"),
        (
            {"media_key": {"index": 1, "key": KEY_B64[:-1] + "_"}},
            FieldTypeError,
            "content.media_key.key",
        ),
        (
            {"media_key": {"index": 1, "key": KEY_B64 + "=="}},
            FieldTypeError,
            "content.media_key.key",
        ),
        (
            {"org.sealcall.format": "livekit"},
            UnsupportedKeyFormatError,
            "content.org.sealcall.format",
        ),
        ({"org.sealcall.format": 1}, FieldTypeError, "content.org.sealcall.format"),
    ],
)
def test_malformed_key_content_is_a_typed_error_naming_the_field(
    changes: dict[str, Any], error: type[InvalidEventError], field: str
) -> None:
    with pytest.raises(error) as raised:
        EncryptionKeyContent.parse(msc_content(**changes))
    assert raised.value.field == field


def test_non_canonical_base64_is_refused() -> None:
    # the last character carries unused bits: 'B' and 'A' decode alike, only one is canonical
    canonical = base64.b64encode(bytes(31) + b"\x00").decode().rstrip("=")
    assert canonical.endswith("A")
    with pytest.raises(FieldTypeError):
        EncryptionKeyContent.parse(msc_content(media_key={"index": 0, "key": canonical[:-1] + "B"}))


def test_request_round_trip_and_errors() -> None:
    request = EncryptionKeyRequest("!room:example.org", "membership-3", ("@a:example.org", "ADEV"))
    written = request.to_dict()
    assert written == {
        "room_id": "!room:example.org",
        "member_id": "membership-3",
        "key_owner": {"user_id": "@a:example.org", "device_id": "ADEV"},
    }
    assert EncryptionKeyRequest.parse(json.loads(json.dumps(written))) == request
    for broken in (
        {**written, "key_owner": None},
        {**written, "key_owner": {"user_id": "@a:example.org"}},
        {k: v for k, v in written.items() if k != "member_id"},
        {**written, "room_id": ["!room:example.org"]},
        "not an object",
    ):
        with pytest.raises(InvalidEventError):
            EncryptionKeyRequest.parse(broken)


JSON = json_values(text_size=50, key_size=12, size=4, allow_nan=True)
FIELDS = ["room_id", "roomId", "member_id", "member", "media_key", "keys", "org.sealcall.format"]


def near_valid() -> st.SearchStrategy[dict[str, Any]]:
    """A valid content with some fields replaced by arbitrary JSON."""
    return st.builds(
        lambda repl: {**msc_content(), **repl},
        st.dictionaries(st.sampled_from([*FIELDS, "index", "key", "id"]), JSON, max_size=3),
    )


@SETTINGS
@given(st.one_of(JSON, near_valid()))
def test_fuzzed_key_content_raises_only_signaling_errors(content: Any) -> None:
    try:
        parsed = EncryptionKeyContent.parse(content)
    except SignalingError:
        return
    assert len(parsed.key.key) == 32
    assert 0 <= parsed.key.index <= 255
    if parsed.member_id is not None:
        assert EncryptionKeyContent.parse(parsed.to_dict()).key == parsed.key


@SETTINGS
@given(
    st.one_of(
        JSON,
        st.builds(
            lambda repl: {
                "room_id": "!r:s",
                "member_id": "m",
                "key_owner": {"user_id": "@a:s", "device_id": "D"},
                **repl,
            },
            st.dictionaries(
                st.sampled_from(["room_id", "member_id", "key_owner"]), JSON, max_size=2
            ),
        ),
    )
)
def test_fuzzed_key_request_raises_only_signaling_errors(content: Any) -> None:
    try:
        parsed = EncryptionKeyRequest.parse(content)
    except SignalingError:
        return
    assert EncryptionKeyRequest.parse(parsed.to_dict()) == parsed


@SETTINGS
@given(st.text(max_size=60))
def test_fuzzed_key_text_decodes_to_32_bytes_or_errors(text: str) -> None:
    try:
        parsed = EncryptionKeyContent.parse(msc_content(media_key={"index": 0, "key": text}))
    except SignalingError:
        return
    assert len(parsed.key.key) == 32
    assert base64.b64encode(parsed.key.key).decode().rstrip("=") == text.rstrip("=")

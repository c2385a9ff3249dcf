"""1:1 call key agreement: ephemeral X25519 + HKDF with the call id."""

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealcall.e2ee import CallKeys, KeyAgreementError, KeyShare, Role, derive_call_keys
from sealcall.sframe import SFrameError


def agree(call_id: str = "c1") -> tuple[CallKeys, CallKeys]:
    caller, callee = KeyShare(), KeyShare()
    return (
        caller.derive(callee.public_bytes, call_id, Role.CALLER),
        callee.derive(caller.public_bytes, call_id, Role.CALLEE),
    )


def test_both_sides_derive_matching_keys() -> None:
    caller, callee = agree()
    assert caller.send == callee.receive
    assert caller.receive == callee.send
    assert len(caller.send) == 32


def test_the_two_directions_differ() -> None:
    caller, _ = agree()
    assert caller.send != caller.receive


def test_call_id_and_keys_change_the_result() -> None:
    a_private, b_private = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    b_public = b_private.public_key().public_bytes_raw()
    one = derive_call_keys(a_private, b_public, "call-1", Role.CALLER)
    assert one == derive_call_keys(a_private, b_public, "call-1", Role.CALLER)
    assert one.send != derive_call_keys(a_private, b_public, "call-2", Role.CALLER).send
    other = X25519PrivateKey.generate().public_key().public_bytes_raw()
    assert one.send != derive_call_keys(a_private, other, "call-1", Role.CALLER).send
    # Each call makes fresh shares, so two calls with the same id still get unrelated keys.
    assert agree("same")[0].send != agree("same")[0].send


@pytest.mark.parametrize("bad", [b"", b"\x01" * 31, b"\x01" * 33, "not bytes"])
def test_malformed_peer_key_is_refused(bad: object) -> None:
    with pytest.raises(KeyAgreementError):
        KeyShare().derive(bad, "c1", Role.CALLER)  # type: ignore[arg-type]


def test_low_order_peer_key_is_refused() -> None:
    with pytest.raises(KeyAgreementError):
        KeyShare().derive(bytes(32), "c1", Role.CALLEE)


def test_empty_call_id_is_refused() -> None:
    with pytest.raises(KeyAgreementError):
        KeyShare().derive(KeyShare().public_bytes, "", Role.CALLER)


def test_errors_are_sframe_errors_and_secrets_are_not_printed() -> None:
    assert issubclass(KeyAgreementError, SFrameError)
    caller, _ = agree()
    assert caller.send.hex() not in repr(caller)
    assert "secret" in repr(caller)


def test_call_id_that_is_not_valid_unicode_is_refused() -> None:
    with pytest.raises(KeyAgreementError):
        KeyShare().derive(KeyShare().public_bytes, "\ud800", Role.CALLER)

"""End-to-end media encryption above SFrame: codec-aware frame protection and call key agreement."""

from .codecs import (
    Codec,
    is_key_frame,
    protect_frame,
    unprotect_frame,
    vp8_dimensions,
    vp8_is_key_frame,
    vp8_prefix_length,
)
from .key_agreement import (
    CallKeys,
    KeyAgreementError,
    KeyShare,
    Role,
    derive_call_keys,
)

__all__ = [
    "CallKeys",
    "Codec",
    "KeyAgreementError",
    "KeyShare",
    "Role",
    "derive_call_keys",
    "is_key_frame",
    "protect_frame",
    "unprotect_frame",
    "vp8_dimensions",
    "vp8_is_key_frame",
    "vp8_prefix_length",
]

"""End-to-end media encryption above SFrame: codec-aware frame protection, 1:1 call key agreement,
group media keys (sender side and per-sender key rings)."""

from .codecs import (
    Codec,
    is_key_frame,
    protect_frame,
    unprotect_frame,
    vp8_dimensions,
    vp8_is_key_frame,
    vp8_prefix_length,
)
from .group_key_ring import GroupKeyRing, KeyVerdict
from .group_keys import (
    GroupKey,
    GroupKeySender,
    MemberDevice,
    RequestKey,
    SendKey,
    ToDeviceSender,
    UseKey,
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
    "GroupKey",
    "GroupKeyRing",
    "GroupKeySender",
    "KeyAgreementError",
    "KeyShare",
    "KeyVerdict",
    "MemberDevice",
    "RequestKey",
    "Role",
    "SendKey",
    "ToDeviceSender",
    "UseKey",
    "derive_call_keys",
    "is_key_frame",
    "protect_frame",
    "unprotect_frame",
    "vp8_dimensions",
    "vp8_is_key_frame",
    "vp8_prefix_length",
]

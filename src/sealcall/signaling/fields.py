"""Readers for JSON fields that raise errors naming the field, and key-order-preserving output.

Every reader takes the containing object, the key and the dotted path used in error messages.
Unknown keys are collected so that an event read and written again is the same JSON, byte for byte.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import FieldTypeError, MissingFieldError

JsonObject = Mapping[str, Any]


def as_object(value: object, path: str) -> JsonObject:
    """``value`` as a JSON object, or :class:`FieldTypeError`."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise FieldTypeError(path, "must be a JSON object")
    return value


def required(obj: JsonObject, key: str, path: str) -> Any:
    """The value of a required key."""
    if key not in obj:
        raise MissingFieldError(f"{path}{key}")
    return obj[key]


MAX_INTEGER = 2**53 - 1  # the largest integer every JSON implementation reads exactly


def valid_text(value: object) -> bool:
    """True for a string that can be encoded as UTF-8 (no lone surrogates)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def string(obj: JsonObject, key: str, path: str, *, optional: bool = False) -> str | None:
    """A string field (valid Unicode); None if optional and absent."""
    if optional and key not in obj:
        return None
    value = required(obj, key, path)
    if not valid_text(value):
        raise FieldTypeError(f"{path}{key}", "must be a string")
    return str(value)


def req_string(obj: JsonObject, key: str, path: str) -> str:
    """A required string field."""
    value = string(obj, key, path)
    assert value is not None
    return value


def integer(obj: JsonObject, key: str, path: str, *, optional: bool = False) -> int | None:
    """A non-negative integer field (booleans are not integers here)."""
    if optional and key not in obj:
        return None
    value = required(obj, key, path)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INTEGER:
        raise FieldTypeError(f"{path}{key}", f"must be an integer from 0 to {MAX_INTEGER}")
    return value


def boolean(obj: JsonObject, key: str, path: str, default: bool) -> bool:
    """An optional boolean field."""
    if key not in obj:
        return default
    value = obj[key]
    if not isinstance(value, bool):
        raise FieldTypeError(f"{path}{key}", "must be a boolean")
    return value


def extras(obj: JsonObject, known: Iterable[str]) -> dict[str, Any]:
    """The keys of ``obj`` this library does not interpret, in their original order."""
    skip = set(known)
    return {k: v for k, v in obj.items() if k not in skip}


def ordered(values: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    """``values`` with the keys listed in ``order`` first, in that order, then the rest."""
    if not order:
        return values
    out = {k: values[k] for k in order if k in values}
    out.update((k, v) for k, v in values.items() if k not in out)
    return out

"""OpenID tokens: a short-lived proof of who we are, for a third party such as an SFU.

``POST /_matrix/client/v3/user/{userId}/openid/request_token`` answers a token that the third
party checks with our homeserver (``/_matrix/federation/v1/openid/userinfo``); it proves the
user only, and grants no access to our account.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nio import AsyncClient

from .errors import MatrixTransportError
from .http import V3, path, request

MAX_TOKEN_LENGTH = 1024  # Synapse's are 24 characters; anything far longer is not a token
MAX_SERVER_NAME_LENGTH = 255
BEARER = "Bearer"
MAX_EXPIRES_IN = 7 * 24 * 3600  # seconds; Synapse gives one hour


class OpenIdTokenError(MatrixTransportError, ValueError):
    """An OpenID token (from the homeserver or from a client) is malformed."""


def _text(obj: dict[str, Any], key: str, limit: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= limit or not value.isprintable():
        raise OpenIdTokenError(f"openid token: {key} must be a string of 1..{limit} characters")
    return value


@dataclass(frozen=True)
class OpenIdToken:
    """An OpenID token as the homeserver issued it (the secret part is kept out of ``repr``)."""

    access_token: str = field(repr=False)
    token_type: str
    matrix_server_name: str
    expires_in: int  # seconds, from when it was issued

    @classmethod
    def parse(cls, obj: object) -> OpenIdToken:
        """Read a token object; :class:`OpenIdTokenError` if it is not one."""
        if not isinstance(obj, dict):
            raise OpenIdTokenError("openid token: must be a JSON object")
        expires = obj.get("expires_in")
        if isinstance(expires, bool) or not isinstance(expires, int):
            raise OpenIdTokenError("openid token: expires_in must be an integer")
        if not 0 <= expires <= MAX_EXPIRES_IN:
            raise OpenIdTokenError("openid token: expires_in is out of range")
        token_type = _text(obj, "token_type", 64)
        if token_type != BEARER:
            raise OpenIdTokenError("openid token: token_type must be Bearer")
        return cls(
            access_token=_text(obj, "access_token", MAX_TOKEN_LENGTH),
            token_type=token_type,
            matrix_server_name=_text(obj, "matrix_server_name", MAX_SERVER_NAME_LENGTH),
            expires_in=expires,
        )

    def to_json(self) -> dict[str, Any]:
        """The token object, as the homeserver wrote it."""
        return {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "matrix_server_name": self.matrix_server_name,
            "expires_in": self.expires_in,
        }


class OpenIdMixin:
    """OpenID tokens for :class:`~sealcall.transport.matrix.MatrixTransport`."""

    client: AsyncClient

    async def request_openid_token(self) -> OpenIdToken:
        """A fresh OpenID token for our user; :class:`OpenIdTokenError` if the answer is not
        one, :class:`~.http.MatrixRequestError` if the homeserver refuses."""
        url = path(V3, "user", str(self.client.user_id), "openid", "request_token")
        answer = await request(self.client, "POST", url, {}, "requesting an OpenID token")
        return OpenIdToken.parse(answer)

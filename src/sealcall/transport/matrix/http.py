"""Client-server requests that nio has no method for (raw JSON, our access token).

nio's own methods cover most of the API; delayed events (MSC4140), batched to-device sends and
the server's unstable features are not among them.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from nio import AsyncClient

from .errors import MatrixTransportError

V3 = "/_matrix/client/v3"
MSC4140 = "/_matrix/client/unstable/org.matrix.msc4140"


class MatrixRequestError(MatrixTransportError):
    """The homeserver answered a request with an error."""

    def __init__(self, what: str, status: int, errcode: str, message: str) -> None:
        super().__init__(f"{what} failed: HTTP {status} {errcode} {message}".rstrip())
        self.status = status
        self.errcode = errcode


def path(base: str, *parts: str, query: dict[str, str] | None = None) -> str:
    """``base`` followed by the percent-encoded ``parts`` (a slash in a part stays inside it)."""
    built = base + "".join("/" + quote(part, safe="") for part in parts)
    return built + ("?" + urlencode(query) if query else "")


async def request(
    client: AsyncClient, method: str, url_path: str, body: dict[str, Any] | None, what: str
) -> dict[str, Any]:
    """Send one request; the JSON object answered, or :class:`MatrixRequestError`."""
    headers = {"Authorization": f"Bearer {client.access_token}"}
    data = json.dumps(body) if body is not None else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        response = await client.send(method, url_path, data, headers=headers)
        status = response.status
        try:
            answer = await response.json(content_type=None)
        except ValueError:
            answer = None
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        raise MatrixTransportError(f"{what} failed: {type(error).__name__}") from None
    if not isinstance(answer, dict):
        answer = {}
    if status != 200:
        raise MatrixRequestError(
            what, status, str(answer.get("errcode", ""))[:64], str(answer.get("error", ""))[:160]
        )
    return answer

"""TURN servers from a fake homeserver: checked answers, kept for their ttl and through failed
fetches, a timeout, counted drops."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from sealcall.homeserver import free_port
from sealcall.transport.matrix.turn_servers import MAX_BODY, MAX_TTL, TurnServers, parse_turn_answer

GOOD = {"uris": ["turn:127.0.0.1:3478?transport=udp"], "username": "u", "password": "p", "ttl": 100}


class FakeHomeserver:
    """Answers ``/voip/turnServer`` with ``status`` and ``body`` (or hangs), counting requests."""

    def __init__(self) -> None:
        self.status = 200
        self.body: Any = GOOD
        self.hang = False
        self.release = asyncio.Event()  # ends a hanging answer when the test is done
        self.requests = 0
        self.url = ""

    async def turn(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.hang:
            await self.release.wait()
        if isinstance(self.body, bytes):
            return web.Response(body=self.body, status=self.status)
        return web.json_response(self.body, status=self.status)


@pytest.fixture
async def homeserver() -> AsyncIterator[FakeHomeserver]:
    fake = FakeHomeserver()
    app = web.Application()
    app.router.add_get("/_matrix/client/v3/voip/turnServer", fake.turn)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    fake.release.set()
    await runner.cleanup()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def urls(servers: list[Any]) -> list[Any]:
    return [(s.urls, s.username, s.credential) for s in servers]


GOOD_URLS = [(GOOD["uris"], "u", "p")]


@pytest.mark.parametrize(
    ("status", "body", "expected", "dropped", "failures"),
    [
        (200, {"uris": "turn:127.0.0.1", "username": "u", "password": "p"}, [], 0, 1),
        (200, {**GOOD, "uris": [{"url": "turn:x"}, 7, *GOOD["uris"]]}, GOOD_URLS, 2, 0),
        (
            200,
            {**GOOD, "uris": ["turn:h:1 2", "http://x", "stun:127.0.0.1:3478"]},
            [(["stun:127.0.0.1:3478"], "u", "p")],
            2,
            0,
        ),
        (
            200,
            {"uris": [*GOOD["uris"], "stun:127.0.0.1"], "username": "u"},
            [(["stun:127.0.0.1"], "u", None)],
            1,
            0,
        ),
        (200, {**GOOD, "password": {"x": 1}, "ttl": "soon"}, [], 3, 0),
        (200, {**GOOD, "uris": GOOD["uris"] * 40}, [(GOOD["uris"] * 16, "u", "p")], 24, 0),
        (500, {"errcode": "M_UNKNOWN"}, [], 0, 1),
        (200, b"[" * 5000, [], 0, 1),
        (200, b" " * (MAX_BODY + 10), [], 0, 1),
    ],
)
async def test_odd_answers_give_only_usable_servers_and_count_drops(
    homeserver: FakeHomeserver,
    status: int,
    body: Any,
    expected: list[Any],
    dropped: int,
    failures: int,
) -> None:
    homeserver.status, homeserver.body = status, body
    turn = TurnServers()
    assert urls(await turn.get(homeserver.url, "token")) == expected
    assert (turn.dropped, turn.fetch_failures) == (dropped, failures)


async def test_ttl_is_honoured_and_a_huge_one_capped(homeserver: FakeHomeserver) -> None:
    clock = Clock()
    turn = TurnServers(clock)
    for _ in range(3):
        assert urls(await turn.get(homeserver.url, "token")) == GOOD_URLS
    assert homeserver.requests == 1
    clock.now += 85  # less than a fifth of the ttl left: fetched again
    await turn.get(homeserver.url, "token")
    assert homeserver.requests == 2
    homeserver.body = {**GOOD, "ttl": 10**30}
    clock.now += 100
    await turn.get(homeserver.url, "token")
    clock.now += MAX_TTL * 0.79
    await turn.get(homeserver.url, "token")
    assert homeserver.requests == 3
    clock.now += MAX_TTL * 0.02
    await turn.get(homeserver.url, "token")
    assert homeserver.requests == 4


@pytest.mark.parametrize("failure", ["500", "hang", "not an answer"])
async def test_a_failed_fetch_keeps_the_last_good_servers_until_they_expire(
    homeserver: FakeHomeserver, failure: str
) -> None:
    clock = Clock()
    turn = TurnServers(clock)
    turn.timeout = 0.3
    assert urls(await turn.get(homeserver.url, "token")) == GOOD_URLS
    if failure == "500":
        homeserver.status = 500
    elif failure == "hang":
        homeserver.hang = True
    else:
        homeserver.body = ["not", "an", "object"]
    clock.now += 90  # due for a refetch, not yet expired
    assert urls(await turn.get(homeserver.url, "token")) == GOOD_URLS
    assert turn.fetch_failures == 1
    clock.now += 20  # expired: expired credentials are no use
    assert await turn.get(homeserver.url, "token") == []
    assert turn.fetch_failures == 2


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "uris": st.lists(st.sampled_from(GOOD["uris"] + ["stun:h", "turns:h:5349"]) | JSON),
        "username": JSON,
        "password": JSON,
        "ttl": JSON,
    },
)


@given(FIELDS | JSON)
def test_parse_turn_answer_never_raises_and_keeps_only_string_ice_uris(body: Any) -> None:
    answer = parse_turn_answer(body)
    if answer is None:
        return
    assert 0 < answer.ttl <= MAX_TTL
    for server in answer.servers:
        assert all(
            isinstance(u, str) and u.startswith(("turn:", "turns:", "stun:")) for u in server.urls
        )
        assert server.username is None or isinstance(server.username, str)
        assert server.credential is None or isinstance(server.credential, str)

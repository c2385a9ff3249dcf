"""The group-call parts of the Matrix transport without a server: to-device intake (verified
sender, order, bounds), state-event and delayed-event-support parsing, fuzzed."""

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealcall.transport.matrix import (
    DelayedEventGoneError,
    DelayedEventsUnsupportedError,
    DeviceMessage,
    MatrixRequestError,
)
from sealcall.transport.matrix.delayed import (
    DelayedEventsMixin,
    DelayedEventSupport,
    ScheduledEvent,
    parse_scheduled,
    parse_support,
)
from sealcall.transport.matrix.state import StateEvent, StateMixin, parse_state_event
from sealcall.transport.matrix.to_device import (
    MAX_WAITING,
    MAX_WAITING_BYTES,
    MAX_WAITING_SYNCS,
    ToDeviceMessages,
    ToDeviceMixin,
)

from fuzz_helpers import json_values

JSON = json_values(size=4)


class FakeDevices:
    def __init__(self) -> None:
        self.devices: dict[tuple[str, str], Any] = {}

    def add(self, user: str, device_id: str, curve: str, ed: str) -> None:
        self.devices[(user, curve)] = SimpleNamespace(id=device_id, curve25519=curve, ed25519=ed)

    def device_from_sender_key(self, user: str, key: str) -> Any:
        return self.devices.get((user, key))


def intake() -> tuple[ToDeviceMessages, Any, list[DeviceMessage], list[Any]]:
    """A :class:`ToDeviceMessages` on a fake client; what nio itself got to handle."""
    nio_got: list[Any] = []
    olm = SimpleNamespace(
        users_for_key_query=set(),
        _handle_olm_event=lambda sender, key, payload: nio_got.append(payload),
    )
    client = SimpleNamespace(
        olm=olm, device_store=FakeDevices(), add_to_device_callback=lambda *args: None
    )
    messages = ToDeviceMessages(client)  # type: ignore[arg-type]
    messages.install(olm)
    seen: list[DeviceMessage] = []
    messages.listeners.append(seen.append)
    return messages, client, seen, nio_got


def payload(kind: str, content: Any, ed: str = "ED-A", claimed: str = "OTHER") -> dict[str, Any]:
    return {
        "type": kind,
        "sender": "@a:x",
        "sender_device": claimed,
        "keys": {"ed25519": ed},
        "content": content,
    }


def test_messages_go_out_as_from_the_device_whose_keys_match() -> None:
    messages, client, seen, nio_got = intake()
    client.device_store.add("@a:x", "REAL", "CURVE-A", "ED-A")
    client.olm._handle_olm_event("@a:x", "CURVE-A", payload("org.sealcall.x", {"n": 1}))
    client.olm._handle_olm_event("@a:x", "CURVE-A", payload("m.dummy", {}))
    messages.flush()
    assert seen == [DeviceMessage("@a:x", "REAL", "org.sealcall.x", {"n": 1})]
    assert [p["type"] for p in nio_got] == ["m.dummy"]  # nio keeps its own types


def test_a_payload_signed_by_another_key_than_the_devices_is_dropped() -> None:
    messages, client, seen, _ = intake()
    client.device_store.add("@a:x", "REAL", "CURVE-A", "ED-A")
    client.olm._handle_olm_event("@a:x", "CURVE-A", payload("m.call.invite", {}, ed="ED-B"))
    messages.flush()
    assert seen == []
    assert messages.dropped_unverified == 1


def test_an_unknown_device_is_queried_and_its_messages_wait_in_order() -> None:
    messages, client, seen, _ = intake()
    for n in range(3):
        client.olm._handle_olm_event("@a:x", "CURVE-A", payload("m.call.invite", {"n": n}))
    assert client.olm.users_for_key_query == {"@a:x"}
    messages.flush()
    assert seen == []
    client.device_store.add("@a:x", "REAL", "CURVE-A", "ED-A")
    messages.flush()
    assert [m.content["n"] for m in seen] == [0, 1, 2]


def test_messages_from_a_device_that_never_appears_are_dropped_and_counted() -> None:
    messages, client, seen, _ = intake()
    client.olm._handle_olm_event("@a:x", "CURVE-A", payload("m.call.invite", {}))
    for _ in range(MAX_WAITING_SYNCS):
        messages.flush()
    assert len(messages.waiting) == 1  # still waiting for the sender's keys
    messages.flush()
    assert not messages.waiting
    assert seen == []
    assert messages.dropped_unverified == 1


def test_waiting_messages_are_bounded() -> None:
    messages, client, _, _ = intake()
    for n in range(MAX_WAITING + 10):
        client.olm._handle_olm_event("@a:x", "CURVE-A", payload("m.call.invite", {"n": n}))
    assert len(messages.waiting) == MAX_WAITING
    assert messages.dropped_overflow == 10
    assert messages.waiting[0].content == {"n": 10}  # oldest dropped first


def test_waiting_messages_are_bounded_in_bytes_too() -> None:
    messages, client, _, _ = intake()
    big = {"blob": "x" * (MAX_WAITING_BYTES // 8)}
    for _ in range(12):
        client.olm._handle_olm_event("@a:x", "CURVE-A", payload("m.call.invite", big))
    assert len(messages.waiting) < 8
    assert messages.dropped_overflow == 12 - len(messages.waiting)
    assert sum(item.size for item in messages.waiting) <= MAX_WAITING_BYTES


def test_plaintext_messages_of_group_types_are_counted() -> None:
    messages, _, _, _ = intake()
    messages._on_plaintext(SimpleNamespace(type="org.matrix.msc4143.rtc.encryption_key"))  # type: ignore[arg-type]
    messages._on_plaintext(SimpleNamespace(type="m.secret.send"))  # type: ignore[arg-type]
    assert messages.dropped_plaintext == 1


@settings(max_examples=200, deadline=None)
@given(
    kind=st.text(max_size=12) | st.sampled_from(["m.call.invite", "org.sealcall.k"]),
    keys=JSON,
    content=JSON,
)
def test_fuzzed_olm_payloads_never_escape(kind: str, keys: Any, content: Any) -> None:
    messages, client, seen, _ = intake()
    client.device_store.add("@a:x", "REAL", "CURVE-A", "ED-A")
    body = {"type": kind, "sender": "@a:x", "keys": keys, "content": content}
    client.olm._handle_olm_event("@a:x", "CURVE-A", body)
    messages.flush()
    for message in seen:
        assert message.sender_device == "REAL"
        assert isinstance(message.content, dict)


# -- state events ------------------------------------------------------------------------------


def test_a_state_event_parses() -> None:
    source = {
        "type": "org.matrix.msc3401.call.member",
        "state_key": "_@a:x_D_m.call",
        "sender": "@a:x",
        "content": {"device_id": "D"},
        "origin_server_ts": 5,
        "event_id": "$e",
    }
    assert parse_state_event("!r", source) == StateEvent(
        "!r", "@a:x", source["type"], source["state_key"], {"device_id": "D"}, 5, "$e"
    )
    assert parse_state_event("!r", {**source, "origin_server_ts": True}) is None
    assert parse_state_event("!r", {k: v for k, v in source.items() if k != "state_key"}) is None


@settings(max_examples=300, deadline=None)
@given(
    source=JSON
    | st.dictionaries(
        st.sampled_from(["type", "state_key", "sender", "content", "origin_server_ts", "event_id"]),
        JSON,
    )
)
def test_fuzzed_state_events_parse_or_are_refused(source: Any) -> None:
    event = parse_state_event("!r", source)
    if event is not None:
        assert isinstance(event.content, dict)
        assert isinstance(event.origin_server_ts, int)


# -- delayed events ----------------------------------------------------------------------------


def test_delayed_event_support_is_read_from_versions_and_capabilities() -> None:
    versions = {"unstable_features": {"org.matrix.msc4140": True}}
    caps = {"capabilities": {"org.matrix.msc4140.delayed_events": {"max_delay_ms": 60000}}}
    assert parse_support(versions, caps) == DelayedEventSupport(True, 60000)
    assert parse_support(versions, {}) == DelayedEventSupport(True, None)
    assert (
        parse_support({"unstable_features": {"org.matrix.msc4140": False}}, caps).supported is False
    )
    assert parse_support({}, caps).supported is False
    assert not DelayedEventSupport(True, 60000).allows(60001)
    assert DelayedEventSupport(True, None).allows(10**9)


@given(versions=JSON, caps=JSON)
def test_fuzzed_support_answers_never_escape(versions: Any, caps: Any) -> None:
    support = parse_support(versions, caps)
    assert support.max_delay_ms is None or support.max_delay_ms > 0


def test_a_removed_state_listener_is_not_kept() -> None:
    class Listening(StateMixin):
        def __init__(self) -> None:
            self._state_listeners = []

    transport = Listening()
    heard: list[StateEvent] = []
    other: list[StateEvent] = []
    kept, dropped = heard.append, other.append
    transport.add_state_listener(kept, ["a"])
    transport.add_state_listener(dropped, ["a", "b"])
    transport.remove_state_listener(dropped)
    assert transport._state_listeners == [(frozenset({"a"}), kept)]
    transport.remove_state_listener(dropped)  # not there any more: nothing happens


def test_a_removed_to_device_listener_is_not_kept() -> None:
    class Listening(ToDeviceMixin):
        def __init__(self) -> None:
            self.to_device = SimpleNamespace(listeners=[])  # type: ignore[assignment]

    transport = Listening()
    heard: list[DeviceMessage] = []
    other: list[DeviceMessage] = []
    kept, dropped = heard.append, other.append
    transport.add_to_device_listener(kept)
    transport.add_to_device_listener(dropped)
    transport.remove_to_device_listener(dropped)
    assert transport.to_device.listeners == [kept]
    transport.remove_to_device_listener(dropped)  # not there any more: nothing happens


def test_scheduled_delayed_events_are_read_and_malformed_entries_skipped() -> None:
    answer = {
        "delayed_events": [
            {"delay_id": "d1", "room_id": "!r", "type": "t", "state_key": "k", "delay": 8000},
            {"delay_id": "d2", "room_id": "!r", "type": "m.room.message", "content": {}},
            {"delay_id": 3, "room_id": "!r", "type": "t"},
            "not an object",
        ]
    }
    assert parse_scheduled(answer) == [
        ScheduledEvent("d1", "!r", "t", "k"),
        ScheduledEvent("d2", "!r", "m.room.message", None),
    ]


@given(answer=JSON)
def test_fuzzed_scheduled_lists_never_escape(answer: Any) -> None:
    for item in parse_scheduled({"delayed_events": answer}) + parse_scheduled(answer):
        assert all(isinstance(v, str) for v in (item.delay_id, item.room_id, item.type))


async def test_nothing_is_sent_when_the_server_cannot_delay() -> None:
    class NoServer(DelayedEventsMixin):
        client = SimpleNamespace(send=None)  # any request would fail the test

    transport = NoServer()
    transport._delayed_support = DelayedEventSupport(False)
    with pytest.raises(DelayedEventsUnsupportedError):
        await transport._schedule_state("!r", "t", "k", {}, 5000)
    transport._delayed_support = DelayedEventSupport(True, 1000)
    with pytest.raises(DelayedEventsUnsupportedError):
        await transport._schedule_state("!r", "t", "k", {}, 5000)


class Answer:
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status, self.body = status, body

    async def json(self, content_type: Any = None) -> dict[str, Any]:
        return self.body


class Scripted(DelayedEventsMixin):
    """A transport whose homeserver answers from a script; the requests it got."""

    def __init__(self, *answers: Answer) -> None:
        self.requests: list[tuple[str, str]] = []
        script = list(answers)

        async def send(method: str, url: str, data: Any, headers: Any = None) -> Answer:
            self.requests.append((method, url))
            return script.pop(0)

        self.client = SimpleNamespace(send=send, access_token="t")  # type: ignore[assignment]


UNRECOGNIZED = Answer(404, {"errcode": "M_UNRECOGNIZED"})


async def test_delayed_event_updates_fall_back_to_the_action_in_the_path() -> None:
    transport = Scripted(UNRECOGNIZED, Answer(200, {}))
    await transport.restart_delayed_event("abc")
    assert [url.rsplit("/", 2)[-2:] for _, url in transport.requests] == [
        ["delayed_events", "abc"],
        ["abc", "restart"],
    ]


async def test_delayed_event_updates_say_what_went_wrong() -> None:
    with pytest.raises(DelayedEventsUnsupportedError):
        await Scripted(UNRECOGNIZED, UNRECOGNIZED).cancel_delayed_event("abc")
    with pytest.raises(DelayedEventGoneError):
        await Scripted(Answer(404, {"errcode": "M_NOT_FOUND"})).send_delayed_event("abc")
    with pytest.raises(MatrixRequestError):
        await Scripted(Answer(429, {"errcode": "M_LIMIT_EXCEEDED"})).send_delayed_event("abc")

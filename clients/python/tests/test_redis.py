"""RedisHub with a real redis-server, and a cluster-mode hub following the stream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from ssehub import Hub, PublishError, RedisHub

from .hubtest import HubProcess, RedisProcess, subscribe

STREAM = "ssehub"


@pytest.fixture
def stream(redis_server: RedisProcess) -> Iterator[redis.Redis]:
    redis_server.client.delete(STREAM)
    yield redis_server.client
    redis_server.client.delete(STREAM)


def fields(client: redis.Redis, entry_id: str) -> list[tuple[str, str]]:
    """An entry's fields in order (the raw reply: ``topic`` may repeat)."""
    conn = redis.Connection(port=client.connection_pool.connection_kwargs["port"])
    try:
        conn.send_command("XRANGE", STREAM, entry_id, entry_id)  # no response callback: a flat list
        flat = conn.read_response()[0][1]
    finally:
        conn.disconnect()
    return [(flat[i].decode(), flat[i + 1].decode()) for i in range(0, len(flat), 2)]


def test_entries_follow_the_readme_schema(stream: redis.Redis) -> None:
    hub = RedisHub(stream)
    entry_id = hub.publish(["a", "b", "a"], {"n": 1}, event="update", retry=500)
    assert fields(stream, entry_id) == [
        ("topic", "a"),
        ("topic", "b"),
        ("data", '{"n":1}'),
        ("event", "update"),
        ("retry", "500"),
    ]
    assert fields(stream, hub.publish("c", "plain")) == [("topic", "c"), ("data", "plain")]


def test_a_cluster_hub_delivers_what_redishub_appends(redis_server: RedisProcess, stream: redis.Redis) -> None:
    with HubProcess("--redis", redis_server.url, "--redis-stream", STREAM) as node, subscribe(node, ["a", "b"]) as sub:
        hub = RedisHub(stream)
        one = hub.publish("a", "one", event="named")
        batch = hub.publish_many([{"topic": "b", "data": "two"}, {"topic": ["a", "b"], "data": {"three": 3}}])
        got = [sub.next() for _ in range(3)]
        assert [(e.id, e.event, e.data) for e in got] == [
            (one, "named", "one"),
            (batch[0], "message", "two"),
            (batch[1], "message", '{"three":3}'),
        ]
        # And an HTTP publish on that node lands in the same stream, after them.
        with Hub(node.url) as http:
            last = http.publish("a", "over http")
        assert sub.next().id == last
        assert stream.xlen(STREAM) == 4
        assert node.metric("ssehub_backplane_invalid_entries_total") == 0


# Each case: the publish object, and the hub's message for it (None: accepted).
CASES: list[tuple[dict[str, object], str | None]] = [
    ({"topic": "a", "data": "x"}, None),
    ({"topic": ["a", "a", "b"], "data": "x", "event": "", "retry": "0"}, None),
    ({"topic": "a", "data": "x", "retry": 2**64 - 1}, None),
    ({"topic": "a", "data": "x", "retry": str(2**64 - 1)}, None),
    ({"topic": "a", "data": "", "event": "e"}, None),
    ({"topic": "é" * 128, "data": "x"}, None),
    ({"topic": "a", "data": "x", "ignored": object.__name__}, None),
    ({"data": "x"}, "at least one topic is required"),
    ({"topic": [], "data": "x"}, "at least one topic is required"),
    ({"topic": "a"}, "data is required"),
    ({"topic": "a", "data": None}, "data is required"),
    ({"topic": "", "data": "x"}, "topics are 1-256 bytes of UTF-8 without control characters"),
    ({"topic": "a" * 257, "data": "x"}, "topics are 1-256 bytes of UTF-8 without control characters"),
    ({"topic": "a\x85", "data": "x"}, "topics are 1-256 bytes of UTF-8 without control characters"),
    ({"topic": [f"t{n}" for n in range(65)], "data": "x"}, "at most 64 topics"),
    ({"topic": "orders/*", "data": "x"}, "a published topic may not have a segment that is exactly * or ** (that is a pattern)"),
    ({"topic": ["a", "x/**"], "data": "x"}, "a published topic may not have a segment that is exactly * or ** (that is a pattern)"),
    ({"topic": 7, "data": "x"}, "topic must be a string or an array of strings"),
    ({"topic": ["a", 7], "data": "x"}, "topics must be strings"),
    ({"topic": "a", "data": "x", "event": "a\rb"}, "event must be a string without CR, LF or NUL"),
    ({"topic": "a", "data": "x", "event": "a\0"}, "event must be a string without CR, LF or NUL"),
    ({"topic": "a", "data": "x", "event": 5}, "event must be a string without CR, LF or NUL"),
    ({"topic": "a", "data": "x", "retry": -1}, "retry must be a non-negative integer (milliseconds)"),
    ({"topic": "a", "data": "x", "retry": 1.0}, "retry must be a non-negative integer (milliseconds)"),
    ({"topic": "a", "data": "x", "retry": True}, "retry must be a non-negative integer (milliseconds)"),
    ({"topic": "a", "data": "x", "retry": "soon"}, "retry must be a non-negative integer (milliseconds)"),
    ({"topic": "a", "data": "x", "retry": "١٢"}, "retry must be a non-negative integer (milliseconds)"),  # non-ASCII digits
    ({"topic": "a", "data": "x", "retry": 2**64}, "retry must be a non-negative integer (milliseconds)"),
    ({"topic": "a", "data": "x", "retry": str(2**64)}, "retry must be a non-negative integer (milliseconds)"),
    # The first error in the hub's order is the one named.
    ({"topic": "orders/*", "event": "a\n"}, "a published topic may not have a segment that is exactly * or ** (that is a pattern)"),
    ({"topic": "a", "event": "a\n", "retry": "x"}, "retry must be a non-negative integer (milliseconds)"),
    ({"event": "a\n", "retry": 1}, "at least one topic is required"),
]  # fmt: skip


def outcome(publish: object, item: dict[str, object]) -> str | None:
    try:
        publish([item])  # type: ignore[operator]
    except PublishError as e:
        assert e.status == 400
        return e.message
    return None


def test_redishub_checks_exactly_what_the_hub_checks(hub: HubProcess, stream: redis.Redis) -> None:
    redis_hub = RedisHub(stream)
    with Hub(hub.url) as http:
        for item, message in CASES:
            before = stream.xlen(STREAM) if stream.exists(STREAM) else 0
            assert outcome(http.publish_many, item) == message, item
            assert outcome(redis_hub.publish_many, item) == message, item
            after = stream.xlen(STREAM) if stream.exists(STREAM) else 0
            assert after == before + (message is None), item
    accepted = sum(message is None for _, message in CASES)
    assert hub.metric("ssehub_events_published_total") == accepted


def test_a_batch_with_one_bad_item_appends_nothing(stream: redis.Redis) -> None:
    hub = RedisHub(stream)
    with pytest.raises(PublishError) as refused:
        hub.publish_many([{"topic": "a", "data": "fine"}, {"topic": "a", "data": "x", "retry": "soon"}])
    assert refused.value.message == "retry must be a non-negative integer (milliseconds)"
    with pytest.raises(PublishError, match="empty batch"):
        hub.publish_many([])
    with pytest.raises(PublishError, match="batch items must be objects"):
        hub.publish_many(["not an object"])  # type: ignore[list-item]
    assert not stream.exists(STREAM)


def test_maxlen_trims_the_stream(stream: redis.Redis) -> None:
    exact = RedisHub(stream, maxlen=3, approximate=False)
    ids = [exact.publish("a", str(n)) for n in range(5)]
    assert [entry[0].decode() for entry in stream.xrange(STREAM)] == ids[2:]
    RedisHub(stream, maxlen=None).publish_many([{"topic": "a", "data": str(n)} for n in range(4)])
    assert stream.xlen(STREAM) == 7


def test_a_decoding_client_works_too(redis_server: RedisProcess, stream: redis.Redis) -> None:
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    entry_id = RedisHub(client).publish("a", "x")
    assert isinstance(entry_id, str) and stream.xlen(STREAM) == 1
    client.close()

"""Hub against the real binary: publish, batches, errors, retries, tokens, URLs."""

from __future__ import annotations

import json
import signal
import socket
import threading
from pathlib import Path

import jwt
import pytest

import ssehub
from ssehub import Hub, HubUnreachable, PublishError

from .conftest import PUBLISH_TOKEN, SECRET
from .hubtest import REPO, HubProcess, Subscriber, subscribe, wait_for


def ids_increase(ids: list[str]) -> bool:
    keys = [tuple(int(part) for part in i.split("-")) for i in ids]
    return keys == sorted(keys) and len(set(keys)) == len(keys)


def test_publish_returns_the_id_the_subscriber_sees(hub: HubProcess) -> None:
    with Hub(hub.url) as client, subscribe(hub, ["a"]) as sub:
        first = client.publish("a", "plain text")
        got = sub.next()
        assert (got.id, got.event, got.data) == (first, "message", "plain text")
        second = client.publish("a", "line one\nline two", event="update", retry=1500)
        got = sub.next()
        assert (got.id, got.event, got.data, got.retry) == (second, "update", "line one\nline two", 1500)
        assert ids_increase([first, second])


def test_non_string_data_is_sent_as_json_text(hub: HubProcess) -> None:
    document = {"text": "héllo ✓", "n": 42, "nested": {"list": [1, 2.5, None], "ok": True}}
    with Hub(hub.url) as client, subscribe(hub, ["a"]) as sub:
        client.publish("a", document)
        got = sub.next()
        assert json.loads(got.data) == document
        assert got.data == json.dumps(document, separators=(",", ":"), ensure_ascii=False)
        client.publish("a", 7)
        assert sub.next().data == "7"


def test_one_event_to_several_topics_arrives_once(hub: HubProcess) -> None:
    with Hub(hub.url) as client, subscribe(hub, ["a", "b"]) as both, subscribe(hub, ["b"]) as only_b:
        event_id = client.publish(["a", "b"], "to both")
        marker = client.publish(("b",), "marker")
        assert [both.next().id, both.next().id] == [event_id, marker]
        assert [only_b.next().id, only_b.next().id] == [event_id, marker]


def test_publish_many_is_one_batch_in_order(hub: HubProcess) -> None:
    with Hub(hub.url) as client, subscribe(hub, ["a", "b"]) as sub:
        ids = client.publish_many(
            [
                {"topic": "a", "data": "one"},
                {"topic": ["a", "b"], "data": {"two": 2}, "event": "named"},
                {"topic": "b", "data": "three", "retry": "250"},
            ]
        )
        assert len(ids) == 3 and ids_increase(ids)
        got = [sub.next() for _ in ids]
        assert [(e.id, e.event, e.data) for e in got] == [
            (ids[0], "message", "one"),
            (ids[1], "named", '{"two":2}'),
            (ids[2], "message", "three"),
        ]
        assert got[2].retry == 250


def test_a_batch_with_one_bad_item_publishes_nothing(hub: HubProcess) -> None:
    with Hub(hub.url) as client, subscribe(hub, ["a"]) as sub:
        with pytest.raises(PublishError) as refused:
            client.publish_many([{"topic": "a", "data": "fine"}, {"topic": "a"}])
        assert (refused.value.status, refused.value.message) == (400, "data is required")
        assert hub.metric("ssehub_events_published_total") == 0
        marker = client.publish("a", "marker")
        assert sub.next().id == marker  # nothing of the batch came first


@pytest.mark.parametrize(
    ("topic", "kwargs", "message"),
    [
        ("orders/*", {}, "a published topic may not have a segment that is exactly * or ** (that is a pattern)"),
        ("", {}, "topics are 1-256 bytes of UTF-8 without control characters"),
        ("a", {"event": "two\nlines"}, "event must be a string without CR, LF or NUL"),
        ("a", {"retry": -1}, "retry must be a non-negative integer (milliseconds)"),
    ],
)
def test_refusals_are_typed_with_the_hubs_message(hub: HubProcess, topic: str, kwargs: dict, message: str) -> None:
    with Hub(hub.url) as client, pytest.raises(PublishError) as refused:
        client.publish(topic, "x", **kwargs)
    assert (refused.value.status, refused.value.message) == (400, message)
    assert str(refused.value) == f"400 {message}"


def test_publish_token() -> None:
    with HubProcess("--publish-token", PUBLISH_TOKEN) as hub:
        for token in (None, "wrong"):
            with Hub(hub.url, publish_token=token) as client, pytest.raises(PublishError) as refused:
                client.publish("a", "x")
            assert refused.value.status == 401
            assert refused.value.message == "publishing needs Authorization: Bearer <token>"
        with Hub(hub.url, publish_token=PUBLISH_TOKEN) as client:
            assert client.publish("a", "x")
        assert hub.metric("ssehub_events_published_total") == 1


def test_a_body_over_max_body_is_413() -> None:
    with HubProcess("--max-body", "1024") as hub, Hub(hub.url) as client:
        with pytest.raises(PublishError) as refused:
            client.publish("a", "x" * 2000)
        assert refused.value.status == 413


def hold_connections(hub: HubProcess, count: int) -> list[socket.socket]:
    """Subscribers that never read: they hold ``count`` of ``--max-connections``."""
    held = []
    for _ in range(count):
        host, port = hub.addr.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"GET /events?topic=hold HTTP/1.1\r\nHost: t\r\n\r\n")
        assert sock.recv(12) == b"HTTP/1.1 200"
        held.append(sock)
    return held


REJECTED_503 = 'ssehub_requests_rejected_total{status="503"}'


def test_503_is_retried_after_retry_after_then_succeeds() -> None:
    with HubProcess("--workers", "1", "--max-connections", "1") as hub, Hub(hub.url, retries=3) as client:
        held = hold_connections(hub, 1)
        result: dict[str, object] = {}
        publisher = threading.Thread(target=lambda: result.setdefault("id", client.publish("a", "x")))
        publisher.start()
        hub.wait_metric(REJECTED_503, lambda n: n >= 1)  # the first try was turned away
        held[0].close()  # a slot frees up before the retry (Retry-After: 1)
        publisher.join(10)
        assert isinstance(result.get("id"), str)
        assert hub.metric(REJECTED_503) == 1
        assert hub.metric("ssehub_events_published_total") == 1


def test_503_retries_are_bounded() -> None:
    with HubProcess("--workers", "1", "--max-connections", "1") as hub, Hub(hub.url, retries=2) as client:
        held = hold_connections(hub, 1)
        with pytest.raises(PublishError) as refused:
            client.publish("a", "x")
        assert (refused.value.status, refused.value.message, refused.value.retry_after) == (503, "too many connections", 1)
        assert hub.metric(REJECTED_503) == 3  # one try and two retries
        assert hub.metric("ssehub_events_published_total") == 0
        for sock in held:
            sock.close()


def test_no_answer_is_not_retried_because_the_hub_may_have_applied_it(hub: HubProcess) -> None:
    with subscribe(hub, ["a"]) as sub, Hub(hub.url, timeout=0.5) as client:
        hub.signal(signal.SIGSTOP)  # the kernel still accepts; nobody answers
        try:
            with pytest.raises(HubUnreachable) as failed:
                client.publish("a", "sent once")
            assert failed.value.maybe_applied
        finally:
            hub.signal(signal.SIGCONT)
        # It was applied: exactly once, so a retry would have published it twice.
        assert sub.next().data == "sent once"
        with Hub(hub.url) as other:
            marker = other.publish("a", "marker")
        assert sub.next().id == marker


def test_a_refused_connection_was_certainly_not_applied() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with Hub(f"http://127.0.0.1:{port}") as client, pytest.raises(HubUnreachable) as failed:
            client.publish("a", "x")
    assert not failed.value.maybe_applied


def test_subscribe_tokens_are_accepted_for_their_grants_only(jwt_hub: HubProcess) -> None:
    with Hub(jwt_hub.url, jwt_secret=SECRET) as client:
        token = client.subscribe_token(["user/42/**"], subject="42")
        claims = jwt.decode(token, SECRET, algorithms=["HS256"])
        assert claims["sub"] == "42" and claims["ssehub"] == {"subscribe": ["user/42/**"]}
        assert claims["exp"] - claims["iat"] == 3600
        with Subscriber(client.events_url(["user/42/inbox", "news"], token=token)) as sub:
            assert sub.status == 200
            # Publishing with the secret mints a publish token.
            private = client.publish("user/42/inbox", "for 42")
            public = client.publish("news", "for all")
            assert [sub.next().id, sub.next().id] == [private, public]
        other = Subscriber(client.events_url(["user/43/inbox"], token=token))
        assert other.status == 403
        assert "do not cover" in other.body
        anonymous = Subscriber(client.events_url(["user/42/inbox"]))
        assert anonymous.status == 401


def test_an_expired_token_is_refused(jwt_hub: HubProcess) -> None:
    with Hub(jwt_hub.url, jwt_secret=SECRET) as client:
        expired = client.subscribe_token("user/42/**", expires_in=-5)
        sub = Subscriber(client.events_url("user/42/inbox", token=expired))
        assert sub.status == 401
        assert "expired" in sub.body
        assert jwt_hub.metric('ssehub_auth_failures_total{reason="expired"}') == 1
    with Hub(jwt_hub.url, jwt_secret="another-secret-of-32-bytes-length") as stranger:
        assert Subscriber(stranger.events_url("user/42/inbox", token=stranger.subscribe_token("**"))).status == 401
        with pytest.raises(PublishError) as refused:
            stranger.publish("user/42/inbox", "x")
        assert refused.value.status == 401


def test_publish_grants_limit_a_token_publisher(jwt_hub: HubProcess) -> None:
    with Hub(jwt_hub.url, jwt_secret=SECRET) as minter:
        token = minter.mint_token(publish=["user/42/**"])[0]
    with Hub(jwt_hub.url, publish_token=token) as client:
        assert client.publish("user/42/inbox", "ok")
        with pytest.raises(PublishError) as refused:
            client.publish_many([{"topic": "user/42/inbox", "data": "x"}, {"topic": "user/43/inbox", "data": "y"}])
        assert refused.value.status == 403
    assert jwt_hub.metric("ssehub_events_published_total") == 1


def test_disconnect_ends_a_subjects_streams(jwt_hub: HubProcess) -> None:
    with Hub(jwt_hub.url, jwt_secret=SECRET) as client:
        token = client.subscribe_token("user/7/**", subject="7")
        with Subscriber(client.events_url("user/7/inbox", token=token)) as sub:
            jwt_hub.wait_metric('ssehub_connections{kind="subscriber"}', lambda n: n == 1)
            assert client.disconnect("7") == 1
            got = sub.next()
            assert (got.event, json.loads(got.data)) == ("ssehub-expired", {"reason": "revoked"})
            assert sub.ended()
        assert client.disconnect("nobody") == 0


def test_es256_tokens_from_a_private_key() -> None:
    keys = REPO / "tests" / "keys"
    with HubProcess("--jwt-public-key", str(keys / "es256.pub.pem")) as hub:
        with Hub(hub.url, jwt_private_key=(keys / "es256.key.pem").read_text()) as client:
            token = client.subscribe_token("t")
            assert jwt.get_unverified_header(token)["alg"] == "ES256"
            with Subscriber(client.events_url("t", token=token)) as sub:
                assert sub.status == 200
                event_id = client.publish("t", "signed")
                assert sub.next().id == event_id


def test_events_url_encodes_what_the_hub_decodes(hub: HubProcess) -> None:
    topics = ["a b+c&d=e", "é/ü/✓", "orders/*", "percent%2F"]
    with Hub(hub.url, public_url="https://hub.example/") as client:
        url = client.events_url(topics, token="t.k+n", last_event_id="1-2")
        assert url == (
            "https://hub.example/events?topic=a%20b%2Bc%26d%3De&topic=%C3%A9/%C3%BC/%E2%9C%93"
            "&topic=orders/*&topic=percent%252F&token=t.k%2Bn&lastEventId=1-2"
        )
    with Hub(hub.url) as client:
        with Subscriber(client.events_url(topics)) as sub:
            assert sub.status == 200
            ids = [client.publish(topic, topic) for topic in ["a b+c&d=e", "é/ü/✓", "orders/7", "percent%2F"]]
            got = [sub.next() for _ in ids]
            assert [(e.id, e.data) for e in got] == list(zip(ids, ["a b+c&d=e", "é/ü/✓", "orders/7", "percent%2F"]))


def test_token_arguments_are_checked_before_minting() -> None:
    with Hub("http://127.0.0.1:1", jwt_secret=SECRET) as client:
        with pytest.raises(ValueError, match="last segment"):
            client.subscribe_token("a/**/b")
        with pytest.raises(TypeError):
            client.subscribe_token("a", subject=42)  # type: ignore[arg-type]
    with Hub("http://127.0.0.1:1") as client, pytest.raises(ssehub.HubError):
        client.subscribe_token("a")


def test_the_package_is_typed_and_imports_no_django() -> None:
    import subprocess
    import sys

    import ssehub as package

    assert (Path(package.__file__).parent / "py.typed").is_file()
    code = "import sys, ssehub; assert 'django' not in sys.modules and 'redis' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)

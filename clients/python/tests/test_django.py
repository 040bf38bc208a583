"""ssehub.django against the real binary: settings, publish after commit,
the token view, the template tag, manage.py ssehub, apublish."""

from __future__ import annotations

import datetime
import decimal
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.db import transaction
from django.test import Client

import ssehub.django
from ssehub import Hub
from ssehub.django.conf import hub_settings

from .conftest import SECRET
from .hubtest import HubProcess, Subscriber, binary, clean_env, read_line, subscribe

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def django_hub() -> Iterator[HubProcess]:
    with HubProcess("--jwt-secret", SECRET, "--jwt-leeway", "0", "--public-topic", "news") as process:
        yield process


@pytest.fixture
def configured(settings: Any, django_hub: HubProcess) -> HubProcess:
    settings.SSEHUB = {
        "URL": django_hub.url,
        "PUBLIC_URL": django_hub.url,
        "JWT_SECRET": SECRET,
        "GRANTS": "tests.django_urls.grants",
        "PUBLIC_TOPICS": ["news"],
        "TOKEN_TTL": 120,
    }
    return django_hub


def published(hub: HubProcess) -> int:
    return hub.metric("ssehub_events_published_total")


def test_settings_are_checked(settings: Any) -> None:
    settings.SSEHUB = {"URL": "http://127.0.0.1:8080/", "PUBLISH_TOKNE": "typo"}
    with pytest.raises(ImproperlyConfigured, match="PUBLISH_TOKNE"):
        hub_settings()
    settings.SSEHUB = {"PUBLISH_TOKEN": "x"}
    with pytest.raises(ImproperlyConfigured, match="URL"):
        hub_settings()
    settings.SSEHUB = {"URL": "http://hub.internal:8080/", "PUBLIC_TOPICS": ["a/**/b"]}
    with pytest.raises(ImproperlyConfigured, match="last segment"):
        hub_settings()
    settings.SSEHUB = {"URL": "http://hub.internal:8080/"}
    conf = hub_settings()
    assert (conf.url, conf.public_url, conf.listen, conf.token_ttl) == (
        "http://hub.internal:8080",
        "http://hub.internal:8080",
        "hub.internal:8080",
        3600,
    )
    assert ssehub.django.get_hub().url == "http://hub.internal:8080"
    settings.SSEHUB = {"URL": "http://[::1]:9000", "PUBLIC_URL": "https://hub.example"}
    assert hub_settings().listen == "[::1]:9000"
    assert ssehub.django.get_hub().public_url == "https://hub.example"  # a changed setting, a new Hub


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_publish_is_immediate(configured: HubProcess) -> None:
    with subscribe(configured, ["news"]) as sub:
        event_id = ssehub.django.publish("news", {"at": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc), "price": decimal.Decimal("1.50")})
        got = sub.next()
        assert got.id == event_id
        assert json.loads(got.data) == {"at": "2026-01-02T03:04:05Z", "price": "1.50"}  # DjangoJSONEncoder


@pytest.mark.django_db(transaction=True)
def test_inside_atomic_the_publish_waits_for_the_commit(configured: HubProcess) -> None:
    before = published(configured)
    with subscribe(configured, ["news"]) as sub:
        with transaction.atomic():
            User.objects.create(username="committed")
            assert ssehub.django.publish("news", "after commit") is None
            assert ssehub.django.publish_many([{"topic": "news", "data": "batch"}]) is None
            assert published(configured) == before  # nothing sent yet
        assert [sub.next().data, sub.next().data] == ["after commit", "batch"]
        assert published(configured) == before + 2


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_publish_is_never_sent(configured: HubProcess) -> None:
    before = published(configured)
    with subscribe(configured, ["news"]) as sub:
        with pytest.raises(RuntimeError), transaction.atomic():
            ssehub.django.publish("news", "rolled back")
            raise RuntimeError("roll back")
        with transaction.atomic():
            ssehub.django.publish("news", "kept")
            try:
                with transaction.atomic():  # a savepoint, rolled back alone
                    ssehub.django.publish("news", "savepoint rolled back")
                    raise RuntimeError
            except RuntimeError:
                pass
        marker = ssehub.django.publish("news", "marker")
        assert [sub.next().data, sub.next().id] == ["kept", marker]
        assert published(configured) == before + 2


@pytest.mark.django_db(transaction=True)
def test_on_commit_false_sends_inside_the_transaction(configured: HubProcess) -> None:
    with transaction.atomic():
        event_id = ssehub.django.publish("news", "now", on_commit=False)
        assert event_id is not None
        assert published(configured) >= 1


@pytest.mark.django_db(transaction=True)
def test_a_failed_publish_after_commit_is_logged_not_raised(settings: Any, caplog: pytest.LogCaptureFixture) -> None:
    settings.SSEHUB = {"URL": "http://127.0.0.1:9", "RETRIES": 0}
    with caplog.at_level(logging.ERROR, logger="ssehub"), transaction.atomic():
        User.objects.create(username="kept")
        ssehub.django.publish("news", "lost")
    assert User.objects.filter(username="kept").exists()
    assert any("after commit failed" in record.getMessage() for record in caplog.records)
    with pytest.raises(ssehub.HubUnreachable):
        ssehub.django.publish("news", "raised")  # outside a transaction the caller hears


def token(client: Client, query: str = "") -> Any:
    return client.get("/sse/token" + query)


@pytest.mark.django_db
def test_the_token_view(configured: HubProcess) -> None:
    client = Client()
    assert token(client).status_code == 403  # anonymous
    alice = User.objects.create_user("alice")
    client.force_login(alice)
    response = token(client)
    assert response.status_code == 200
    assert "no-cache" in response["Cache-Control"] and "no-store" in response["Cache-Control"]
    body = response.json()
    assert body["topics"] == [f"user/{alice.pk}/**"]
    with Hub(configured.url, jwt_secret=SECRET) as hub:
        with Subscriber(body["url"]) as sub:
            assert sub.status == 200
            event_id = hub.publish(f"user/{alice.pk}/inbox", "for alice")
            assert sub.next().id == event_id
        bob_topic = f"user/{alice.pk + 1}/inbox"
        assert Subscriber(hub.events_url(bob_topic, token=body["token"])).status == 403
    # The token carries the grants' publish topics, and alice as its subject.
    claims = jwt.decode(body["token"], SECRET, algorithms=["HS256"])
    assert claims["sub"] == str(alice.pk)
    assert claims["ssehub"]["publish"] == [f"user/{alice.pk}/outbox"]
    assert claims["exp"] == body["expires"] and claims["exp"] - claims["iat"] == 120
    # A subset, with a public topic (it needs no grant).
    body = token(client, f"?topic=user/{alice.pk}/inbox&topic=news").json()
    assert body["topics"] == [f"user/{alice.pk}/inbox", "news"]
    assert jwt.decode(body["token"], SECRET, algorithms=["HS256"])["ssehub"]["subscribe"] == [f"user/{alice.pk}/inbox"]
    assert Subscriber(body["url"]).status == 200
    # Only public topics: the token carries the publish grants alone.
    claims = jwt.decode(token(client, "?topic=news").json()["token"], SECRET, algorithms=["HS256"])
    assert claims["ssehub"] == {"publish": [f"user/{alice.pk}/outbox"]}
    # Nothing GRANTS did not allow.
    for query in (f"?topic=user/{alice.pk + 1}/inbox", "?topic=**", f"?topic=user/{alice.pk}/**&topic=user/*/inbox"):
        response = token(client, query)
        assert response.status_code == 403, query
        assert "not granted" in response.json()["error"]
    assert client.post("/sse/token").status_code == 405
    client.force_login(User.objects.create_user("mute"))
    assert token(client).status_code == 403  # GRANTS returned None


@pytest.mark.django_db
def test_grants_may_allow_anonymous_users(settings: Any, configured: HubProcess) -> None:
    settings.SSEHUB = {**settings.SSEHUB, "GRANTS": "tests.django_urls.public_grants", "PUBLIC_TOPICS": []}
    body = token(Client()).json()
    assert body["topics"] == ["news"]
    claims = jwt.decode(body["token"], SECRET, algorithms=["HS256"])
    assert "sub" not in claims and claims["ssehub"] == {"subscribe": ["news"]}
    # With news public, nothing needs a token.
    settings.SSEHUB = {**settings.SSEHUB, "PUBLIC_TOPICS": ["news"]}
    body = token(Client()).json()
    assert body["token"] is None and body["url"] == f"{configured.url}/events?topic=news"


@pytest.mark.django_db
def test_the_template_tag(configured: HubProcess) -> None:
    client = Client()
    alice = User.objects.create_user("alice")
    client.force_login(alice)
    html = client.get("/page", {"template": '{% ssehub_events_url "news" user_topic as url %}[{{ url }}]'})
    url = html.content.decode().strip("[]").replace("&amp;", "&")
    assert url.startswith(f"{configured.url}/events?topic=news&topic=user/{alice.pk}/inbox&token=")
    with Subscriber(url) as sub, Hub(configured.url, jwt_secret=SECRET) as hub:
        assert sub.status == 200
        event_id = hub.publish(f"user/{alice.pk}/inbox", "x")
        assert sub.next().id == event_id
    # A template cannot grant what GRANTS does not.
    response = client.get("/page", {"template": '{% ssehub_events_url "user/999/inbox" %}'})
    assert response.status_code == 403
    anonymous = Client().get("/page", {"template": '{% ssehub_events_url "news" %}'})
    assert anonymous.status_code == 403


def test_the_template_tag_needs_the_request(rf: Any, configured: HubProcess) -> None:
    from django.template import Context, Template

    with pytest.raises(ImproperlyConfigured, match="context_processors.request"):
        Template('{% load ssehub %}{% ssehub_events_url "news" %}').render(Context({}))
    with pytest.raises(PermissionDenied):
        request = rf.get("/")
        from django.contrib.auth.models import AnonymousUser

        request.user = AnonymousUser()
        ssehub.django.grant(request, ["news"])


def manage(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "django", "ssehub", *args],
        cwd=HERE.parent,
        env=clean_env({"DJANGO_SETTINGS_MODULE": "tests.manage_settings", **env}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_manage_py_ssehub_runs_the_hub_with_the_settings() -> None:
    env = {"TEST_SSEHUB_BINARY": binary(), "TEST_SSEHUB_SECRET": SECRET}
    printed = manage("--print-command", "--heartbeat", "5", env=env)
    out, _ = printed.communicate(timeout=30)
    assert printed.returncode == 0
    line = out.decode().strip()
    assert line == f"SSEHUB_JWT_SECRET=... {binary()} --listen 127.0.0.1:0 --public-topic news --cors-origin http://127.0.0.1:8000 --workers 1 --heartbeat 5"
    assert SECRET not in line
    process = manage("--heartbeat", "5", env=env)
    try:
        address = read_line(process.stdout).removeprefix("listening on ")
        with open(f"/proc/{process.pid}/cmdline", "rb") as cmdline:
            argv = cmdline.read().split(b"\0")
        assert argv[0] == binary().encode()  # exec: the pid is the hub's own
        assert SECRET.encode() not in b" ".join(argv)
        with Hub(f"http://{address}", jwt_secret=SECRET) as hub:
            assert Subscriber(hub.events_url("private")).status == 401  # the secret reached the hub
            with Subscriber(hub.events_url("news")) as sub:
                assert sub.status == 200
                event_id = hub.publish("news", "via manage.py")
                assert sub.next().id == event_id
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        process.stderr.close()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_apublish(configured: HubProcess, anyio_backend: str) -> None:
    with subscribe(configured, ["news"]) as sub:
        event_id = await ssehub.django.apublish("news", {"async": True})
        got = sub.next()
        assert (got.id, got.data) == (event_id, '{"async":true}')

"""AsyncHub against the real binary: the same behaviour as Hub, awaited."""

from __future__ import annotations

import asyncio

import pytest

from ssehub import AsyncHub, HubUnreachable, PublishError

from .conftest import SECRET
from .hubtest import HubProcess, Subscriber, subscribe
from .test_hub import REJECTED_503, hold_connections, ids_increase

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_publish_and_batches(hub: HubProcess) -> None:
    async with AsyncHub(hub.url) as client:
        with subscribe(hub, ["a", "b"]) as sub:
            one = await client.publish(["a", "b"], {"k": "v"}, event="e", retry=900)
            batch = await client.publish_many([{"topic": "a", "data": "x"}, {"topic": "b", "data": "y"}])
            got = [sub.next() for _ in range(3)]
            assert [(e.id, e.event, e.data) for e in got] == [
                (one, "e", '{"k":"v"}'),
                (batch[0], "message", "x"),
                (batch[1], "message", "y"),
            ]
            assert ids_increase([one, *batch])


async def test_concurrent_publishes_share_one_client(hub: HubProcess) -> None:
    async with AsyncHub(hub.url) as client:
        ids = await asyncio.gather(*(client.publish("a", str(n)) for n in range(20)))
        assert len(set(ids)) == 20
    assert hub.metric("ssehub_events_published_total") == 20


async def test_errors(hub: HubProcess) -> None:
    async with AsyncHub(hub.url) as client:
        with pytest.raises(PublishError) as refused:
            await client.publish_many([])
        assert (refused.value.status, refused.value.message) == (400, "empty batch")
    async with AsyncHub("http://127.0.0.1:9") as nowhere:
        with pytest.raises(HubUnreachable) as failed:
            await nowhere.publish("a", "x")
        assert not failed.value.maybe_applied


async def test_503_retries_are_bounded() -> None:
    with HubProcess("--workers", "1", "--max-connections", "1") as hub:
        held = hold_connections(hub, 1)
        async with AsyncHub(hub.url, retries=1) as client:
            with pytest.raises(PublishError) as refused:
                await client.publish("a", "x")
        assert refused.value.status == 503
        assert hub.metric(REJECTED_503) == 2
        for sock in held:
            sock.close()


async def test_tokens(jwt_hub: HubProcess) -> None:
    async with AsyncHub(jwt_hub.url, jwt_secret=SECRET) as client:
        token, expires = client.mint_token(subscribe=["user/1/*"], subject="1", expires_in=60)
        with Subscriber(client.events_url("user/1/inbox", token=token)) as sub:
            assert sub.status == 200
            event_id = await client.publish("user/1/inbox", "hi")
            assert sub.next().id == event_id
        assert Subscriber(client.events_url("user/2/inbox", token=token)).status == 403

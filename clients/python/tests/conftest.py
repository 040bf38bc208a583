"""Fixtures: hubs and a redis-server, each started for the tests that use them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .hubtest import HubProcess, RedisProcess

SECRET = "test-secret-0123456789-abcdefghij"  # HS256 key of the JWT hubs
PUBLISH_TOKEN = "test-publish-token"


@pytest.fixture
def hub() -> Iterator[HubProcess]:
    """An open hub: loopback may publish, anyone may subscribe."""
    with HubProcess("--workers", "2") as process:
        yield process


@pytest.fixture
def jwt_hub() -> Iterator[HubProcess]:
    """A hub with private topics (HS256, no leeway) and the public topic ``news``."""
    with HubProcess("--jwt-secret", SECRET, "--jwt-leeway", "0", "--public-topic", "news") as process:
        yield process


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(Path(tmp_path_factory.mktemp("redis")))
    yield server
    server.stop()

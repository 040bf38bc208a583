"""The ``SSEHUB`` setting, read once per change (``override_settings`` included)."""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from .._hub import AsyncHub, Hub
from .._rules import Pattern

_KEYS = {
    "URL",  # where Django reaches the hub
    "PUBLIC_URL",  # where browsers reach it (default URL)
    "PUBLISH_TOKEN",
    "JWT_SECRET",
    "JWT_PRIVATE_KEY",
    "JWT_ALGORITHM",
    "JWT_AUDIENCE",
    "JWT_ISSUER",
    "GRANTS",  # dotted path of grants(request) -> {"subscribe": [...], "publish": [...]}
    "TOKEN_TTL",  # seconds
    "PUBLIC_TOPICS",  # topics and patterns anyone may subscribe to (--public-topic)
    "TIMEOUT",  # seconds per request to the hub
    "RETRIES",  # retries after a 503
    # manage.py ssehub only:
    "LISTEN",  # --listen (default: URL's host and port)
    "CORS_ORIGINS",  # --cors-origin, each
    "REDIS",  # --redis
    "BINARY",  # the ssehub executable (default: this environment's, then PATH)
    "ARGS",  # more flags
}

Grants = Callable[..., Any]


def _json_dumps(value: object) -> str:
    # Django's encoder: datetimes, dates, Decimal, UUID and lazy strings too.
    return json.dumps(value, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class HubSettings:
    """``settings.SSEHUB``, checked."""

    url: str
    public_url: str
    publish_token: str | None
    jwt_secret: str | None
    jwt_private_key: str | None
    jwt_algorithm: str | None
    jwt_audience: str | None
    jwt_issuer: str | None
    grants: str | None
    token_ttl: int
    public_topics: tuple[str, ...]
    timeout: float
    retries: int
    listen: str
    cors_origins: tuple[str, ...]
    redis: str | None
    binary: str | None
    args: tuple[str, ...]
    public_patterns: tuple[Pattern, ...] = field(default=(), compare=False)

    def hub_arguments(self) -> dict[str, Any]:
        return {
            "public_url": self.public_url,
            "publish_token": self.publish_token,
            "jwt_secret": self.jwt_secret,
            "jwt_private_key": self.jwt_private_key,
            "jwt_algorithm": self.jwt_algorithm,
            "jwt_audience": self.jwt_audience,
            "jwt_issuer": self.jwt_issuer,
            "timeout": self.timeout,
            "retries": self.retries,
            "json_dumps": _json_dumps,
        }

    def grants_callable(self) -> Grants:
        if not self.grants:
            raise ImproperlyConfigured('SSEHUB["GRANTS"] must name a callable: grants(request) -> {"subscribe": [...]}')
        grants: Grants = import_string(self.grants)
        return grants


def _strings(raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = raw.get(key, ())
    if isinstance(value, str):
        return (value,)
    if not all(isinstance(item, str) for item in value):
        raise ImproperlyConfigured(f'SSEHUB["{key}"] must be a list of strings')
    return tuple(value)


def _listen_of(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ImproperlyConfigured(f'SSEHUB["URL"] must be http://host:port, got {url!r}')
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port or 80}"


@lru_cache(maxsize=1)
def hub_settings() -> HubSettings:
    """The checked ``SSEHUB`` setting (unknown keys are errors: a typo must not pass silently)."""
    raw = getattr(settings, "SSEHUB", None)
    if not isinstance(raw, Mapping) or "URL" not in raw:
        raise ImproperlyConfigured('settings.SSEHUB must be a dict with at least "URL"')
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ImproperlyConfigured(f"unknown SSEHUB keys: {', '.join(unknown)}")
    url = str(raw["URL"]).rstrip("/")
    if raw.get("JWT_SECRET") and raw.get("JWT_PRIVATE_KEY"):
        raise ImproperlyConfigured('SSEHUB: give JWT_SECRET or JWT_PRIVATE_KEY, not both')
    public_topics = _strings(raw, "PUBLIC_TOPICS")
    try:
        patterns = tuple(Pattern(topic) for topic in public_topics)
    except ValueError as e:
        raise ImproperlyConfigured(f'SSEHUB["PUBLIC_TOPICS"]: {e}') from e
    return HubSettings(
        url=url,
        public_url=str(raw.get("PUBLIC_URL") or url).rstrip("/"),
        publish_token=raw.get("PUBLISH_TOKEN") or None,
        jwt_secret=raw.get("JWT_SECRET") or None,
        jwt_private_key=raw.get("JWT_PRIVATE_KEY") or None,
        jwt_algorithm=raw.get("JWT_ALGORITHM") or None,
        jwt_audience=raw.get("JWT_AUDIENCE") or None,
        jwt_issuer=raw.get("JWT_ISSUER") or None,
        grants=raw.get("GRANTS") or None,
        token_ttl=int(raw.get("TOKEN_TTL", 3600)),
        public_topics=public_topics,
        timeout=float(raw.get("TIMEOUT", 10)),
        retries=int(raw.get("RETRIES", 3)),
        listen=str(raw.get("LISTEN") or _listen_of(url)),
        cors_origins=_strings(raw, "CORS_ORIGINS"),
        redis=raw.get("REDIS") or None,
        binary=raw.get("BINARY") or None,
        args=_strings(raw, "ARGS"),
        public_patterns=patterns,
    )


_hub: Hub | None = None
_async_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncHub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The process's :class:`ssehub.Hub` for ``SSEHUB`` (one connection pool, thread-safe)."""
    global _hub
    if _hub is None:
        conf = hub_settings()
        _hub = Hub(conf.url, **conf.hub_arguments())
    return _hub


def get_async_hub() -> AsyncHub:
    """The :class:`ssehub.AsyncHub` of the running event loop (its connections belong to that loop)."""
    loop = asyncio.get_running_loop()
    hub = _async_hubs.get(loop)
    if hub is None:
        conf = hub_settings()
        hub = _async_hubs[loop] = AsyncHub(conf.url, **conf.hub_arguments())
    return hub


def _reset(*, setting: str, **kwargs: object) -> None:
    global _hub
    if setting == "SSEHUB":
        hub_settings.cache_clear()
        if _hub is not None:
            _hub.close()
        _hub = None
        _async_hubs.clear()


setting_changed.connect(_reset)

__all__ = ["HubSettings", "get_async_hub", "get_hub", "hub_settings"]

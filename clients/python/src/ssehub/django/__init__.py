"""Django integration: ``ssehub.django.publish`` and friends, configured by
``settings.SSEHUB`` (see ``clients/python/README.md``).

Inside ``transaction.atomic()`` a publish waits for the commit (``on_commit=True``,
the default), so a browser never hears of a row that was rolled back; it is
dropped with the transaction. The event is checked and encoded at the call,
sent after the commit; since the commit cannot be undone, a publish that then
fails is logged (logger ``ssehub``), not raised. Outside a transaction it is
sent at once and its id returned.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import transaction

from .._errors import HubError
from .._hub import Hub, Topics, _Request
from .conf import get_async_hub, get_hub, hub_settings
from .grants import Grant, allow_anonymous, grant

logger = logging.getLogger("ssehub")


def _after_commit(hub: Hub, request: _Request, what: str, using: str | None) -> None:
    """Sends ``request`` (checked and encoded already) once the transaction commits."""

    def run() -> None:
        try:
            hub._send(request)
        except HubError:
            logger.exception("ssehub: %s after commit failed", what)

    transaction.on_commit(run, using=using, robust=True)


def _deferred(on_commit: bool, using: str | None) -> bool:
    return on_commit and transaction.get_connection(using).in_atomic_block


def publish(
    topic: Topics,
    data: object,
    *,
    event: str | None = None,
    retry: int | None = None,
    on_commit: bool = True,
    using: str | None = None,
) -> str | None:
    """:meth:`ssehub.Hub.publish` after the current transaction commits
    (returns None then), or now outside one (returns the id)."""
    hub = get_hub()
    request = hub._core.publish_request(topic, data, event, retry)
    if _deferred(on_commit, using):
        _after_commit(hub, request, f"publish to {topic!r}", using)
        return None
    return hub._send(request)[0]


def publish_many(
    events: Iterable[Mapping[str, Any]], *, on_commit: bool = True, using: str | None = None
) -> list[str] | None:
    """:meth:`ssehub.Hub.publish_many`, after the commit like :func:`publish`."""
    hub = get_hub()
    request = hub._core.batch_request(events)
    if _deferred(on_commit, using):
        _after_commit(hub, request, "a batch publish", using)
        return None
    return hub._send(request)


async def apublish(
    topic: Topics,
    data: object,
    *,
    event: str | None = None,
    retry: int | None = None,
    on_commit: bool = True,
    using: str | None = None,
) -> str | None:
    """:func:`publish` for async views, through :class:`ssehub.AsyncHub`. In
    an atomic block (code run by ``sync_to_async``) it waits for the commit too."""
    if _deferred(on_commit, using):
        return publish(topic, data, event=event, retry=retry, on_commit=True, using=using)
    return await get_async_hub().publish(topic, data, event=event, retry=retry)


__all__ = [
    "Grant",
    "allow_anonymous",
    "apublish",
    "get_async_hub",
    "get_hub",
    "grant",
    "hub_settings",
    "publish",
    "publish_many",
]

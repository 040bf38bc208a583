"""The one way this integration mints subscriber tokens: through ``GRANTS``.

The token view and the template tag both ask :func:`grant`, which calls the
``SSEHUB["GRANTS"]`` callable for the request and refuses any topic it does
not cover (or ``PUBLIC_TOPICS``), with the hub's own coverage rule, before a
token exists. Anonymous users are refused unless the callable is marked with
:func:`allow_anonymous`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from .._rules import Pattern, covered
from .._tokens import topic_list
from .conf import get_hub, hub_settings

F = TypeVar("F")


def allow_anonymous(grants: F) -> F:
    """Marks a ``GRANTS`` callable as willing to grant users who are not logged in."""
    grants.ssehub_allow_anonymous = True  # type: ignore[attr-defined]
    return grants


@dataclass(frozen=True)
class Grant:
    """What a page needs to subscribe."""

    url: str  # the /events URL for the topics, with the token when one is needed
    token: str | None  # None when every topic is public
    expires: int | None  # the token's exp (Unix seconds)
    topics: tuple[str, ...]


def _patterns(granted: Mapping[str, Any], key: str) -> list[str]:
    value = granted.get(key) or ()
    return topic_list(value)


def grant(request: HttpRequest, topics: Iterable[str] | None = None, *, include_publish: bool = False) -> Grant:
    """The URL and token for ``topics`` (default: everything ``GRANTS`` allows
    this request), or :class:`PermissionDenied`."""
    conf = hub_settings()
    grants = conf.grants_callable()
    user = getattr(request, "user", None)
    authenticated = bool(user is not None and user.is_authenticated)
    if not authenticated and not getattr(grants, "ssehub_allow_anonymous", False):
        raise PermissionDenied("log in to subscribe")
    granted = grants(request)
    if granted is None:
        raise PermissionDenied("no topics granted")
    subscribe = _patterns(granted, "subscribe")
    publish = _patterns(granted, "publish") if include_publish else []
    allowed = [Pattern(pattern) for pattern in subscribe]
    wanted: Sequence[str] = list(topics) if topics else subscribe
    if not wanted:
        raise PermissionDenied("no topics granted")
    private = []
    for topic in wanted:
        if covered(conf.public_patterns, topic):
            continue
        if not covered(allowed, topic):
            raise PermissionDenied(f"topic not granted: {topic}")
        private.append(topic)
    hub = get_hub()
    token: str | None = None
    expires: int | None = None
    if private or publish:
        subject = str(user.pk) if authenticated and user is not None else None
        token, expires = hub.mint_token(subscribe=private, publish=publish, subject=subject, expires_in=conf.token_ttl)
    return Grant(hub.events_url(wanted, token=token), token, expires, tuple(wanted))

"""``{% load ssehub %}`` then ``{% ssehub_events_url "news" "user/42/**" %}``
(or ``... as url``): the ``/events`` URL for those topics, with a token from
``GRANTS`` when one is needed. Needs ``django.template.context_processors.request``.
A topic ``GRANTS`` does not cover raises :class:`PermissionDenied` (a 403)."""

from __future__ import annotations

from typing import Any

from django import template
from django.core.exceptions import ImproperlyConfigured

from ..grants import grant

register = template.Library()


@register.simple_tag(takes_context=True)
def ssehub_events_url(context: Any, *topics: str) -> str:
    """The URL; no topics means every topic ``GRANTS`` allows."""
    request = context.get("request")
    if request is None:
        raise ImproperlyConfigured("ssehub_events_url needs django.template.context_processors.request")
    return grant(request, topics or None).url

"""The token view: ``path("sse/token", ssehub.django.views.token)``.

``GET`` answers ``{"url", "token", "expires", "topics"}`` for the logged-in
user, from ``GRANTS``; ``?topic=`` (repeatable) asks for a subset. ``403``
(JSON ``{"error": ...}``) for anonymous users unless ``GRANTS`` allows them,
and for any topic ``GRANTS`` does not cover. Never cached.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .grants import grant


@never_cache
@require_GET
def token(request: HttpRequest) -> JsonResponse:
    """A subscriber token and the ``/events`` URL that uses it."""
    try:
        granted = grant(request, request.GET.getlist("topic") or None, include_publish=True)
    except PermissionDenied as denied:
        return JsonResponse({"error": str(denied)}, status=403)
    return JsonResponse(
        {"url": granted.url, "token": granted.token, "expires": granted.expires, "topics": list(granted.topics)}
    )

"""URLs and GRANTS callables for the Django tests."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.urls import path

import ssehub.django.views
from ssehub.django import allow_anonymous


def grants(request: HttpRequest) -> dict[str, list[str]]:
    """Each user their own topics; user 'mute' nothing."""
    if request.user.get_username() == "mute":
        return None  # type: ignore[return-value]
    return {"subscribe": [f"user/{request.user.pk}/**"], "publish": [f"user/{request.user.pk}/outbox"]}


@allow_anonymous
def public_grants(request: HttpRequest) -> dict[str, list[str]]:
    return {"subscribe": ["news"]}


def page(request: HttpRequest) -> HttpResponse:
    """Renders ``?template=`` with the request (as server-rendered pages do)."""
    template = engines["django"].from_string("{% load ssehub %}" + request.GET["template"])
    return HttpResponse(template.render({"user_topic": f"user/{request.user.pk}/inbox"}, request))


urlpatterns = [
    path("sse/token", ssehub.django.views.token),
    path("page", page),
]

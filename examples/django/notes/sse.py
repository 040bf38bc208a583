"""GRANTS: what each user may subscribe to. `news` is public (PUBLIC_TOPICS)."""

from django.http import HttpRequest


def grants(request: HttpRequest) -> dict[str, list[str]]:
    return {"subscribe": [f"user/{request.user.pk}/**"]}

"""The Django app: ``INSTALLED_APPS = [..., "ssehub.django"]`` for the
template tag library ``{% load ssehub %}`` and ``manage.py ssehub``."""

from django.apps import AppConfig


class SsehubConfig(AppConfig):
    """Labelled ``ssehub``: the module's last name, ``django``, would be confusing."""

    name = "ssehub.django"
    label = "ssehub"
    verbose_name = "ssehub"

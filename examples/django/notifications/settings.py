"""Settings of the notifications example: a plain sync Django site that
publishes through ssehub. Everything that differs between a laptop and the
browser test comes from the environment (HUB_*, NOTES_DB)."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "ssehub.django",  # {% load ssehub %} and manage.py ssehub
    "notes",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "notifications.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
WSGI_APPLICATION = "notifications.wsgi.application"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("NOTES_DB", BASE_DIR / "db.sqlite3"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
STATIC_URL = "static/"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# The hub. Django publishes to URL; browsers subscribe at PUBLIC_URL (here the
# same, on another port: another origin, hence CORS_ORIGINS). The JWT secret
# is shared with the hub, which `manage.py ssehub` starts with these settings.
HUB_URL = os.environ.get("HUB_URL", "http://127.0.0.1:8080")
SSEHUB = {
    "URL": HUB_URL,
    "PUBLIC_URL": os.environ.get("HUB_PUBLIC_URL", HUB_URL),
    "LISTEN": os.environ.get("HUB_LISTEN", ""),
    "JWT_SECRET": os.environ.get("HUB_JWT_SECRET", "example-only-jwt-secret-change-me-0123456789"),
    "GRANTS": "notes.sse.grants",
    "BINARY": os.environ.get("HUB_BINARY", ""),  # default: the ssehub-server wheel's, then PATH
    "TOKEN_TTL": 3600,
    "PUBLIC_TOPICS": ["news"],
    "CORS_ORIGINS": os.environ.get("HUB_CORS_ORIGIN", "http://127.0.0.1:8000,http://localhost:8000").split(","),
    "ARGS": os.environ.get("HUB_ARGS", "").split(),  # more flags for manage.py ssehub
}

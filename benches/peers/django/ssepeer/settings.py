"""Settings for the Django benchmark peer (WSGI / gunicorn).

No database, no apps: just the middleware a stock `startproject` keeps when sessions,
auth and messages are not used. DEBUG is off as in production.
"""
import os

SECRET_KEY = "ssehub-benchmark-peer-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = []
DATABASES = {}

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "ssepeer.urls"
WSGI_APPLICATION = "ssepeer.wsgi.application"

USE_TZ = True

# Where the publish view and the stream views meet.
REDIS_URL = os.environ.get("SSEPEER_REDIS_URL", "redis://127.0.0.1:6379/0")
# Per-process pool size: one connection per open stream plus publishers.
REDIS_MAX_CONNECTIONS = 20000
# Seconds between SSE comment lines on an idle stream; this is also how soon a
# worker notices that its subscriber went away.
SSE_HEARTBEAT = 15.0

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django": {"handlers": ["console"], "level": "WARNING"}},
}

"""Settings for the manage.py ssehub test: the binary and secret from the environment."""

import os

from .django_settings import *  # noqa: F403

SSEHUB = {
    "URL": "http://127.0.0.1:8080",
    "LISTEN": "127.0.0.1:0",
    "JWT_SECRET": os.environ.get("TEST_SSEHUB_SECRET", ""),
    "PUBLIC_TOPICS": ["news"],
    "CORS_ORIGINS": ["http://127.0.0.1:8000"],
    "BINARY": os.environ.get("TEST_SSEHUB_BINARY", ""),
    "ARGS": ["--workers", "1"],
}

"""Settings for the ASGI (uvicorn) variant: the same project, async views."""
from .settings import *  # noqa: F401,F403

ROOT_URLCONF = "ssepeer.urls_asgi"

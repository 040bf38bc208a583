"""ssehub: publish Server-Sent Events through an ssehub hub.

- :class:`Hub` and :class:`AsyncHub` publish over HTTP and mint subscriber tokens;
- :class:`RedisHub` appends to a cluster's Redis stream;
- :mod:`ssehub.django` is the Django integration (settings, publish after
  commit, a token view, a template tag, ``manage.py ssehub``).
"""

from ._errors import HubError, HubUnreachable, PublishError
from ._hub import AsyncHub, Hub
from ._redis import RedisHub
from ._rules import Pattern

__version__ = "0.1.0"

__all__ = ["AsyncHub", "Hub", "HubError", "HubUnreachable", "Pattern", "PublishError", "RedisHub", "__version__"]

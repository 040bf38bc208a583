"""The errors the clients raise: the hub's answer, or no answer at all."""

from __future__ import annotations


class HubError(Exception):
    """Anything that went wrong talking to the hub."""


class PublishError(HubError):
    """The hub (or, for :class:`ssehub.RedisHub`, the hub's rules checked
    before the ``XADD``) refused a request.

    ``status`` is the HTTP status (400 for an invalid event, 401/403 for
    credentials, 413 for a body over ``--max-body``, 503 when the hub is
    overloaded or its Redis is down), ``message`` the hub's one-line reason.
    Nothing of a refused request was published.
    """

    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after  # seconds the hub asked to wait (503)


class HubUnreachable(HubError):
    """No answer from the hub: it could not be reached, or the connection
    failed or timed out before the answer arrived.

    ``maybe_applied`` is False only when the request was certainly never sent
    (the connection was refused or never made). When it is True the hub may
    have published the event, so the client did not retry: decide yourself
    whether a duplicate is worse than a miss.
    """

    def __init__(self, message: str, *, maybe_applied: bool) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied
